"""Console output shared by the commands: the console, tables of rows, progress bars."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def console() -> Console:
    out = Console()
    if not out.is_terminal:  # piped: do not squeeze tables into 80 columns
        out = Console(width=160)
    return out


def fmt(value, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def print_tables(tables: dict[str, list[dict]], layout: dict, hints: dict[str, str] | None = None) -> None:
    """One table per ``layout`` entry, name -> (title, [(column, field, format)]); a table without rows is one
    line saying how to get it (``hints``), or nothing."""
    out = console()
    for name, (title, columns) in layout.items():
        rows = tables.get(name)
        if name == "selection" and rows and not any(r.get("measured") for r in rows):
            rows = None  # decisions without a measured true outcome: nothing to show but the hint
        if not rows:
            if hints and name in hints:
                out.print(escape(f"{title}: no data in this run; {hints[name]}"), style="dim")
            continue
        keys = [k for k in ("policy", "mode", "setting", "perturbation", "severity") if k in rows[0]]
        table = Table(title=title)
        for column in keys + [c[0] for c in columns]:
            table.add_column(column, justify="left" if column in keys else "right")
        for r in rows:
            table.add_row(*[str(r[k]) for k in keys], *[fmt(r.get(field), spec) for _, field, spec in columns])
        out.print(table)


def episode_progress(store, specs, runner, measurement) -> None:
    """Run ``specs`` into ``store`` with a progress bar on stderr counting successes, failures and errors."""
    err = Console(stderr=True)
    counts = {"success": 0, "failure": 0, "error": 0}
    with Progress(
        TextColumn("[bold]episodes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[counts]}"), console=err, disable=not err.is_terminal,
    ) as progress:
        bar = progress.add_task("episodes", total=len(specs), counts="")

        def on_result(result):
            counts["error" if result.error else "success" if result.success else "failure"] += 1
            progress.update(bar, advance=1, counts=" ".join(f"{k} {v}" for k, v in counts.items()))

        runner.run(specs, store, on_result, measurement)


def stage_progress():
    """A rich progress bar per pipeline stage; returns (callback, progress context)."""
    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
    tasks = {}

    def update(stage, done, total):
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    return update, bars
