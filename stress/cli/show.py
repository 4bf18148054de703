"""``stress show RUN``: a stored run's tables: summary, degradation, and its search, map or protocol report if any."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from stress.cli.common import console
from stress.cli.reports import print_degradation, print_language, print_map, print_protocol, print_search, print_summary
from stress.report.maps import load_map
from stress.report.search import load_report
from stress.store import RunStore


def add_arguments(parser) -> None:
    parser.add_argument("run", type=Path)
    parser.add_argument("--episodes", action="store_true", help="also list every episode (keys for replay)")


def run(args) -> int:
    store = RunStore.open(args.run)
    store.consolidate()
    search = load_report(store.path)
    if search is not None:
        print_search(search)
    boundaries = load_map(store.path)
    if boundaries is not None:
        print_map(boundaries)
    print_summary(store)
    print_degradation(store)
    print_language(store)
    print_protocol(store)
    if args.episodes:
        table = Table(title="episodes")
        for column in ("episode_key", "task", "init", "mode", "perturbation", "success", "steps", "wall_s", "error"):
            table.add_column(column)
        for r in store.query("SELECT * FROM episodes ORDER BY task_id, init_index, perturbation, mode"):
            table.add_row(r["episode_key"], str(r["task_id"]), str(r["init_index"]), r["mode"], r["perturbation"], str(r["success"]), str(r["steps"]), f"{r['wall_s']:.1f}", (r["error"] or "")[:60])
        console().print(table)
    return 0
