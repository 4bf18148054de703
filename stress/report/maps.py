"""A failure-boundary map's report: ``map.png`` (one panel per mapped axis and side: each visited level's success
rate with its 95 % Wilson interval, the fitted curve, the 50 % threshold and its 95 % interval, one colour per policy
setting; one panel per pair of axes: the threshold along the first axis at each level of the second), the tables
``stress map`` and ``stress show`` print, and the levels at the boundary the gallery shows."""

from __future__ import annotations

import json
import math
from pathlib import Path

from stress.report.figures import pyplot

COLOURS = {"direct": "tab:blue", "planning": "tab:orange"}


def save_map_plot(report: dict, path) -> None:
    """``map.png`` (``path``: a file name or a binary file object)."""
    plt = pyplot()
    axes_keys = list(dict.fromkeys(_axis_key(c) for c in report["curves"]))
    pairs = report.get("pairs") or []
    pair_keys = list(dict.fromkeys(_pair_key(p) for p in pairs))
    panels = len(axes_keys) + len(pair_keys)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(grid.flat, axes_keys):
        _curve_panel(ax, key, [c for c in report["curves"] if _axis_key(c) == key])
    for ax, key in zip(list(grid.flat)[len(axes_keys):], pair_keys):
        _pair_panel(ax, [p for p in pairs if _pair_key(p) == key])
    for ax in list(grid.flat)[panels:]:
        ax.axis("off")
    fig.suptitle(f"failure boundaries: {report['policy']} on {report['suite']} task {report['task']}, {design_text(report)}\n"
                 f"dashed: 50 % threshold; band: its 95 % interval; numbers: episodes per level" +
                 ("\npairs: circles, the threshold along the first axis (bar: 95 %) at levels of the second; diamond, the second axis's own "
                  "threshold with the first at rest" if pairs else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _axis_key(c: dict) -> tuple:
    return c["family"], c["axis"], c["side"]


def _pair_key(p: dict) -> tuple:
    return _axis_key(p["first"]), _axis_key(p["second"])


def _curve_panel(ax, key: tuple, curves: list[dict]) -> None:
    for c in curves:
        colour = COLOURS.get(c["mode"], "tab:green")
        ax.plot(range(c["high"] + 1), c["fitted"], color=colour, lw=1.2, alpha=0.8)
        xs = [r["level"] for r in c["levels"]]
        ys = [r["rate"] for r in c["levels"]]
        err = [[r["rate"] - r["ci95"][0] for r in c["levels"]], [r["ci95"][1] - r["rate"] for r in c["levels"]]]
        ax.errorbar(xs, ys, yerr=err, fmt="o", color=colour, ms=3, capsize=2, label=f"{c['mode']}: {c['episodes']} ep.")
        for r in c["levels"]:
            ax.annotate(str(r["episodes"]), (r["level"], r["rate"]), textcoords="offset points", xytext=(3, 3), fontsize=6, color=colour)
        t = c["threshold"]
        low, high = max(t["low_index"], 0), min(t["high_index"], c["high"])
        if low <= high:
            ax.axvspan(low, high, color=colour, alpha=0.12)
        if 0 <= t["median_index"] <= c["high"]:
            ax.axvline(t["median_index"], color=colour, ls="--", lw=1)
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    _ticks(ax.set_xticks, c)
    ax.set(title=f"{key[0]}.{key[1]} ({key[2]})", xlabel=_unit_label(c), ylabel="success", ylim=(-0.05, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")


def _pair_panel(ax, pairs: list[dict]) -> None:
    """x: the first axis; y: the second axis's levels; per setting the threshold along x at each level with its interval
    (circles, joined), and the second axis's own threshold at the first's rest (a diamond, interval upward); squares:
    the visited cells, coloured by their success rate (red 0 %, green 100 %)."""
    first, second = pairs[0]["first"], pairs[0]["second"]
    cmap = pyplot().get_cmap("RdYlGn")
    for p in pairs:
        colour = COLOURS.get(p["mode"], "tab:green")
        ys, xs, lows, highs = [], [], [], []
        for row in p["rows"]:
            for r in row["levels"]:
                ax.scatter([r["level"]], [row["second_level"]], s=12 + 4 * r["episodes"], marker="s", color=cmap(r["rate"]), alpha=0.55, lw=0)
            t = row["threshold"]
            ys.append(row["second_level"])
            xs.append(min(max(t["median_index"], 0), first["high"]))
            lows.append(xs[-1] - min(max(t["low_index"], 0), first["high"]))
            highs.append(min(max(t["high_index"], 0), first["high"]) - xs[-1])
        ax.errorbar(xs, ys, xerr=[lows, highs], fmt="o-", color=colour, ms=4, capsize=3, lw=1.2,
                    label=f"{p['mode']}: {sum(r['episodes'] for r in p['rows'])} ep.")
        t = p.get("second_threshold")
        if t is not None:  # the second axis alone (the first at rest): the boundary's point on the rest line
            y = min(max(t["median_index"], 0), second["high"])
            ax.errorbar([0], [y], yerr=[[y - min(max(t["low_index"], 0), second["high"])], [min(max(t["high_index"], 0), second["high"]) - y]],
                        fmt="D", color=colour, ms=4, capsize=3, lw=1.2)
    _ticks(ax.set_xticks, first)
    levels = sorted({row["second_level"] for p in pairs for row in p["rows"]})  # the rows span rest to the second axis's boundary
    top = max([*levels, *(min(second["high"], p["second_threshold"]["high_index"]) for p in pairs if p.get("second_threshold"))], default=1) or 1
    ax.set_yticks(levels, [_label(second["values"][lv]) for lv in levels])
    ax.set(title=f"{first['family']}.{first['axis']} × {second['family']}.{second['axis']}", xlabel=f"{first['axis']} {_unit_label(first)}",
           ylabel=f"{second['axis']} {_unit_label(second)}", xlim=(-0.03 * first["high"], 1.03 * first["high"]), ylim=(-0.06 * top, 1.1 * top))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")


def _ticks(setter, walk: dict) -> None:
    ticks = sorted({0, walk["high"] // 2, walk["high"]})
    setter(ticks, [_label(walk["values"][i]) for i in ticks])


def _unit_label(walk: dict) -> str:
    return f"value{' (' + walk['unit'] + ')' if walk.get('unit') else ''}"


def _label(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _value(v) -> str:
    return "—" if v is None else f"{v:.3g}"


def threshold_text(c: dict) -> str:
    t = c["threshold"]
    return "before the first level" if t["median"] < 0 else "past the last level" if t["median"] > 1 else _value(c["threshold_value"])


def interval_text(c: dict) -> str:
    return f"{_value(c['interval_values'][0])}–{_value(c['interval_values'][1])}"


def share_text(c: dict) -> str:
    t = c["threshold"]
    return f"{t['median']:.2f} [{t['low']:.2f}, {t['high']:.2f}]"


def rates_text(c: dict) -> str:
    return ", ".join(f"{r['level']}:{r['successes']}/{r['episodes']}" for r in c["levels"])


def boundary_levels(c: dict) -> list[dict]:
    """The visited levels at the boundary: those inside the threshold's 95 % interval, else the one nearest the threshold."""
    t = c["threshold"]
    inside = [r for r in c["levels"] if t["low_index"] <= r["level"] <= t["high_index"]]
    if inside or not c["levels"]:
        return inside
    return [min(c["levels"], key=lambda r: (abs(r["level"] - t["median_index"]), r["level"]))]


def gallery_rows(report: dict, outcome_of: dict[str, str], carded: set[str]) -> dict:
    """The gallery's map section: per curve and pair row the threshold texts and the episodes at the boundary, each
    ``{"key", "outcome"}`` ('success', 'failure' or 'error', '' when not stored) and whether the gallery has its card."""
    def row(c: dict, values: list) -> dict:
        at = [{"value": _label(values[r["level"]]), "successes": r["successes"], "episodes": r["episodes"],
               "keys": [{"key": k, "outcome": outcome_of.get(k, ""), "card": k in carded} for k in r.get("keys", [])]}
              for r in boundary_levels(c)]
        return {"setting": c["mode"], "threshold": threshold_text(c), "interval": interval_text(c), "share": share_text(c), "episodes": c["episodes"],
                "invalid": c["invalid"], "stopped": c["stopped"], "rates": rates_text(c), "boundary": at}

    curves = [{"axis": f"{c['family']}.{c['axis']} ({c['side']})", **row(c, c["values"])} for c in report["curves"]]
    pairs = [{"pair": f"{p['first']['family']}.{p['first']['axis']} × {p['second']['family']}.{p['second']['axis']}",
              "at": f"{p['second']['axis']} = {_label(r['second_value'])}", **row(r, p["first"]["values"])}
             for p in report.get("pairs") or [] for r in p["rows"]]
    return {"curves": curves, "pairs": pairs, "comparison": map_tables(report)["comparison"], "episodes": report.get("episodes"), "design": design_text(report),
            "width": report.get("width"), "budget": report.get("budget")}


def map_tables(report: dict) -> dict[str, list[dict]]:
    curves = [{"setting": c["mode"], "axis": f"{c['family']}.{c['axis']} ({c['side']})", "threshold": threshold_text(c), "interval": interval_text(c),
               "share": share_text(c), "episodes": c["episodes"], "levels": len(c["levels"]), "invalid": c["invalid"], "stopped": c["stopped"],
               "rates": rates_text(c)} for c in report["curves"]]
    pairs = [{"setting": p["mode"], "pair": f"{p['first']['family']}.{p['first']['axis']} × {p['second']['family']}.{p['second']['axis']}",
              "at": f"{p['second']['axis']} = {_label(row['second_value'])}", "threshold": threshold_text(row), "interval": interval_text(row),
              "share": share_text(row), "episodes": row["episodes"], "invalid": row["invalid"], "stopped": row["stopped"], "rates": rates_text(row)}
             for p in report.get("pairs") or [] for row in p["rows"]]
    comparison = [{"axis": f"{r['family']}.{r['axis']}" + (f" ({r['side']})" if "side" in r else ""), "settings": f"{r['first']} vs {r['second']}",
                   "thresholds": f"{r['first_threshold']:.2f} vs {r['second_threshold']:.2f}", "difference": f"{r['difference']:+.2f}",
                   "apart": "yes" if r["apart"] else "no (intervals overlap)"} for r in report["comparison"]]
    return {"curves": curves, "pairs": pairs, "comparison": comparison}


def design_text(report: dict) -> str:
    """How the map's episodes were placed: 'adaptive', or 'grid N' (the fixed-grid baseline); a map.json from before
    the grid option was adaptive."""
    design = report.get("design", "adaptive")
    return "found adaptively" if design == "adaptive" else f"on a fixed grid of {design.split()[-1]} levels per axis (the baseline)"


def map_layout(report: dict) -> dict:
    """``MAP_LAYOUT`` with the design in the first table's title."""
    title, columns = MAP_LAYOUT["curves"]
    return {**MAP_LAYOUT, "curves": (f"{title}; {design_text(report)}", columns)}


MAP_LAYOUT = {
    "curves": ("failure boundaries: the 50 % success threshold (value; share of the axis [95 % interval]); level:successes/episodes",
               [("axis", "axis", "s"), ("threshold", "threshold", "s"), ("95% interval", "interval", "s"),
                ("share of axis", "share", "s"), ("episodes", "episodes", "d"), ("levels", "levels", "d"), ("invalid", "invalid", "d"),
                ("stopped", "stopped", "s"), ("per level", "rates", "s")]),
    "pairs": ("pairs of axes: the threshold along the first axis at each level of the second (share of the first axis [95 % interval])",
              [("pair", "pair", "s"), ("at", "at", "s"), ("threshold", "threshold", "s"), ("95% interval", "interval", "s"), ("share of axis", "share", "s"),
               ("episodes", "episodes", "d"), ("invalid", "invalid", "d"), ("stopped", "stopped", "s"), ("per level", "rates", "s")]),
    "comparison": ("settings at the boundary (shares of the axis; apart: the 95 % intervals do not overlap)",
                   [("axis", "axis", "s"), ("settings", "settings", "s"), ("thresholds", "thresholds", "s"), ("difference", "difference", "s"), ("apart", "apart", "s")]),
}


def load_map(run: Path) -> dict | None:
    path = Path(run) / "map.json"
    return json.loads(path.read_text()) if path.is_file() else None
