"""A search run's report: ``search.png`` (violations and distinct failure modes against evaluations spent,
for the sampler and the ``--compare`` baseline on the same space, budget and seed) and the tables that
``stress search`` and ``stress show`` print (curves, findings original -> shrunk, the i.i.d. estimate)."""

from __future__ import annotations

import json
from pathlib import Path

from stress.report.figures import pyplot


def save_search_plot(report: dict, path: Path) -> None:
    plt = pyplot()

    fig, (violations_ax, modes_ax) = plt.subplots(1, 2, figsize=(11, 4))
    from matplotlib.ticker import MaxNLocator

    for run, curve in report["runs"].items():
        x = range(0, len(curve["violations_curve"]) + 1)  # nothing found before the first evaluation
        label = f"{curve['sampler']} ({run})"
        violations_ax.step(x, [0, *curve["violations_curve"]], where="post", label=label)
        modes_ax.step(x, [0, *curve["modes_curve"]], where="post", label=label)
    violations_ax.set(title=f"violations of {report['property']}", xlabel="evaluations spent", ylabel="violations found")
    modes_ax.set(title="distinct failure modes (signature x families)", xlabel="evaluations spent", ylabel="modes")
    iid = report["iid"]
    if iid["n"]:
        low, high = iid["ci95"]
        violations_ax.text(0.02, 0.97, f"i.i.d. violation rate {iid['rate']:.0%} (95% CI {low:.0%}-{high:.0%}, n={iid['n']})",
                           transform=violations_ax.transAxes, va="top", fontsize=8)
    for ax in (violations_ax, modes_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def search_tables(report: dict) -> dict[str, list[dict]]:
    runs = [{"run": run, "sampler": c["sampler"], "evaluations": c["evaluations"], "violations": c["violations"],
             "per_100": c["violations_per_100"], "first": c["first_violation"], "modes": len(c["modes"]), "invalid": c["invalid"],
             "episodes": c["episodes_run"]} for run, c in report["runs"].items()]
    findings = [{"id": f["id"], "failure_mode": f["mode"], "verdict": f["verdict"], "original": f["original"], "shrunk": f["shrunk"],
                 "fields": f"{f['fields']['original']} -> {f['fields']['shrunk']}", "shrink": f["shrink_evaluations"],
                 "minimal": "yes" if f["one_minimal"] else "no", "replay": f"{f['replay']['reproduced']}/{f['replay']['of']}"} for f in report["findings"]]
    return {"runs": runs, "findings": findings}


def load_report(run: Path) -> dict | None:
    path = Path(run) / "search.json"
    return json.loads(path.read_text()) if path.is_file() else None
