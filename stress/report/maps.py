"""A failure-boundary map's report: ``map.png`` (one panel per mapped axis: each visited level's success rate with
its 95 % Wilson interval, the fitted curve, the 50 % threshold and its 95 % interval, one colour per policy
setting) and the tables ``stress map`` and ``stress show`` print."""

from __future__ import annotations

import json
import math
from pathlib import Path

from stress.report.figures import pyplot


def save_map_plot(report: dict, path: Path) -> None:
    plt = pyplot()

    axes_keys = list(dict.fromkeys((c["family"], c["axis"]) for c in report["curves"]))
    cols = min(3, len(axes_keys))
    rows = math.ceil(len(axes_keys) / cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    colours = {"direct": "tab:blue", "planning": "tab:orange"}
    for ax, key in zip(grid.flat, axes_keys):
        for c in (c for c in report["curves"] if (c["family"], c["axis"]) == key):
            colour = colours.get(c["mode"], "tab:green")
            levels = list(range(c["high"] + 1))
            ax.plot(levels, c["fitted"], color=colour, lw=1.2, alpha=0.8)
            xs = [r["level"] for r in c["levels"]]
            ys = [r["rate"] for r in c["levels"]]
            err = [[r["rate"] - r["ci95"][0] for r in c["levels"]], [r["ci95"][1] - r["rate"] for r in c["levels"]]]
            ax.errorbar(xs, ys, yerr=err, fmt="o", color=colour, ms=3, capsize=2,
                        label=f"{c['mode']}: {c['episodes']} ep.")
            for r in c["levels"]:
                ax.annotate(str(r["episodes"]), (r["level"], r["rate"]), textcoords="offset points", xytext=(3, 3), fontsize=6, color=colour)
            t = c["threshold"]
            low, high = max(t["low_index"], 0), min(t["high_index"], c["high"])
            if low <= high:
                ax.axvspan(low, high, color=colour, alpha=0.12)
            if 0 <= t["median_index"] <= c["high"]:
                ax.axvline(t["median_index"], color=colour, ls="--", lw=1)
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ticks = sorted({0, c["high"] // 2, c["high"]})
        ax.set_xticks(ticks, [_label(c["values"][i]) for i in ticks])
        ax.set(title=f"{key[0]}.{key[1]} ({c['side']})", xlabel=f"value{' (' + c['unit'] + ')' if c.get('unit') else ''}", ylabel="success", ylim=(-0.05, 1.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    for ax in list(grid.flat)[len(axes_keys):]:
        ax.axis("off")
    fig.suptitle(f"failure boundaries: {report['policy']} on {report['suite']} task {report['task']}\n"
                 f"dashed: 50 % threshold; band: its 95 % interval; numbers: episodes per level", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _value(v) -> str:
    return "—" if v is None else f"{v:.3g}"


def map_tables(report: dict) -> dict[str, list[dict]]:
    curves = []
    for c in report["curves"]:
        t = c["threshold"]
        where = ("before the first level" if t["median"] < 0 else "past the last level" if t["median"] > 1 else _value(c["threshold_value"]))
        curves.append({"setting": c["mode"], "axis": f"{c['family']}.{c['axis']} ({c['side']})", "threshold": where,
                       "interval": f"{_value(c['interval_values'][0])}–{_value(c['interval_values'][1])}",
                       "share": f"{t['median']:.2f} [{t['low']:.2f}, {t['high']:.2f}]", "episodes": c["episodes"], "levels": len(c["levels"]),
                       "invalid": c["invalid"], "stopped": c["stopped"],
                       "rates": ", ".join(f"{r['level']}:{r['successes']}/{r['episodes']}" for r in c["levels"])})
    comparison = [{"axis": f"{r['family']}.{r['axis']}", "settings": f"{r['first']} vs {r['second']}",
                   "thresholds": f"{r['first_threshold']:.2f} vs {r['second_threshold']:.2f}", "difference": f"{r['difference']:+.2f}",
                   "apart": "yes" if r["apart"] else "no (intervals overlap)"} for r in report["comparison"]]
    return {"curves": curves, "comparison": comparison}


MAP_LAYOUT = {
    "curves": ("failure boundaries: the 50 % success threshold (value; share of the axis [95 % interval]); level:successes/episodes",
               [("axis", "axis", "s"), ("threshold", "threshold", "s"), ("95% interval", "interval", "s"),
                ("share of axis", "share", "s"), ("episodes", "episodes", "d"), ("levels", "levels", "d"), ("invalid", "invalid", "d"),
                ("stopped", "stopped", "s"), ("per level", "rates", "s")]),
    "comparison": ("settings at the boundary (shares of the axis; apart: the 95 % intervals do not overlap)",
                   [("axis", "axis", "s"), ("settings", "settings", "s"), ("thresholds", "thresholds", "s"), ("difference", "difference", "s"), ("apart", "apart", "s")]),
}


def load_map(run: Path) -> dict | None:
    path = Path(run) / "map.json"
    return json.loads(path.read_text()) if path.is_file() else None
