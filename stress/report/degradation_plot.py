"""``RUN/degradation.png``: the degradation report as one picture (six panels, one colour per policy
setting, scene groups on the x axis: clean first, then each perturbation by severity). A panel whose
data the run does not have (no predictions, no counterfactual rollouts) says so instead of plotting 0."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import BinaryIO

import numpy as np

from stress.core.metrics import calibration, wilson_interval
from stress.report.figures import pyplot


def _scene_order(scene: tuple[str, int]) -> tuple:
    return scene[0] != "clean", scene[0], scene[1]


def save_degradation_plot(episodes: list[dict], decisions: list[dict], tables: dict[str, list[dict]], path: Path | BinaryIO) -> None:
    """The picture as a PNG into ``path`` (a file, or a binary file object: the gallery compares the bytes first)."""
    plt = pyplot()

    settings = sorted({(e["policy"], e["setting"]) for e in episodes}, key=lambda s: (s[0], s[1] != "direct", s[1]))
    scenes = sorted({(e["perturbation"], e["severity"]) for e in episodes}, key=_scene_order)
    x_of = {s: i for i, s in enumerate(scenes)}
    colour = {s: plt.cm.tab10(i % 10) for i, s in enumerate(settings)}
    name = lambda s: s[1] if len({p for p, _ in settings}) == 1 else f"{s[0]} {s[1]}"
    offset = lambda s: (settings.index(s) - (len(settings) - 1) / 2) * min(0.8 / max(len(settings), 1), 0.25)

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    (success_ax, world_ax, reliability_ax), (over_ax, selection_ax, failure_ax) = axes

    # success with 95 % Wilson intervals
    outcomes = defaultdict(list)
    for e in episodes:
        outcomes[(e["policy"], e["setting"], e["perturbation"], e["severity"])].append(bool(e["success"]))
    for (policy, setting, perturbation, severity), wins in outcomes.items():
        s = (policy, setting)
        low, high = wilson_interval(sum(wins), len(wins))
        rate = float(np.mean(wins))
        success_ax.errorbar(x_of[(perturbation, severity)] + offset(s), rate, yerr=[[rate - low], [high - rate]], fmt="o", color=colour[s], capsize=3)
    success_ax.set_ylim(-0.05, 1.05)
    _frame(success_ax, "success (95 % Wilson)", scenes)
    for s in settings:
        success_ax.plot([], [], "o", color=colour[s], label=name(s))
    success_ax.legend(fontsize=7, loc="best")

    # world model vs the copy-current-frame baseline
    rows = tables["world_model"]
    for s in settings:
        mine = sorted((r for r in rows if (r["policy"], r["setting"]) == s), key=lambda r: x_of[(r["perturbation"], r["severity"])])
        if mine:
            x = [x_of[(r["perturbation"], r["severity"])] for r in mine]
            world_ax.plot(x, [r["future_psnr"] for r in mine], "o-", color=colour[s], label=f"{name(s)}: predicted")
            world_ax.plot(x, [r["baseline_psnr"] for r in mine], "x:", color=colour[s], label="copy current frame")
    _frame(world_ax, "future PSNR vs true future (dB)", scenes, empty=not rows)
    if rows:
        world_ax.legend(fontsize=7, loc="best")

    # reliability diagram of the executed decisions' values vs eventual success, per setting (all scenes)
    pooled = defaultdict(lambda: ([], []))
    for r in decisions:
        if r["candidate"] == -1 and r["pred_value"] is not None:
            pooled[(r["policy"], r["setting"])][0].append(r["pred_value"])
            pooled[(r["policy"], r["setting"])][1].append(bool(r["episode_success"]))
    reliability_ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for s, (pred, success) in pooled.items():
        cal = calibration(pred, success)
        bins = [b for b in cal["bins"] if b["n"]]
        reliability_ax.plot([b["mean_pred"] for b in bins], [b["frac_positive"] for b in bins], "o-", color=colour.get(s), label=f"{name(s)} (ECE {cal['ece']:.2f})")
    reliability_ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="predicted value", ylabel="share of episodes that succeeded")
    reliability_ax.set_title("value reliability (executed decisions)", fontsize=10)
    if pooled:
        reliability_ax.legend(fontsize=7, loc="upper left")
    else:
        _no_data(reliability_ax)

    # over-estimation: predicted - realised value
    rows = [r for r in tables["value"] if r["overestimation"] is not None]
    for s in settings:
        mine = sorted((r for r in rows if (r["policy"], r["setting"]) == s), key=lambda r: x_of[(r["perturbation"], r["severity"])])
        if mine:
            over_ax.plot([x_of[(r["perturbation"], r["severity"])] for r in mine], [r["overestimation"] for r in mine], "o-", color=colour[s])
            failed = [(x_of[(r["perturbation"], r["severity"])], r["overestimation_failed"]) for r in mine if r["overestimation_failed"] is not None]
            if failed:
                over_ax.plot(*zip(*failed), "v:", color=colour[s])
    over_ax.axhline(0, color="grey", lw=0.8)
    _frame(over_ax, "value over-estimation: predicted − realised (▼ failed episodes)", scenes, empty=not rows)

    # best-of-N selection against counterfactual outcomes
    rows = [r for r in tables["selection"] if r["measured"]]
    for s in settings:
        mine = sorted((r for r in rows if (r["policy"], r["setting"]) == s), key=lambda r: x_of[(r["perturbation"], r["severity"])])
        if mine:
            x = np.array([x_of[(r["perturbation"], r["severity"])] for r in mine]) + offset(s)
            selection_ax.bar(x, [r["worse_than_direct"] for r in mine], width=0.8 / max(len(settings), 1), color=colour[s], alpha=0.8)
            selection_ax.plot(x, [r["regret"] for r in mine], "k_", markersize=12)
    selection_ax.set_ylim(0, 1.05)
    _frame(selection_ax, "best-of-N: share of chosen chunks truly worse than direct (bars), regret (—)", scenes, empty=not rows)

    # failure signatures per setting, all scenes
    counts = defaultdict(lambda: defaultdict(int))
    for e in episodes:
        if not e["success"] and e.get("failure"):
            counts[(e["policy"], e["setting"])][e["failure"]] += 1
    signatures = sorted({f for c in counts.values() for f in c})
    bottom = np.zeros(len(settings))
    for i, signature in enumerate(signatures):
        heights = np.array([counts[s][signature] for s in settings], dtype=float)
        failure_ax.bar(range(len(settings)), heights, bottom=bottom, color=plt.cm.Set2(i % 8), label=signature)
        bottom += heights
    failure_ax.set_xticks(range(len(settings)), [name(s) for s in settings], rotation=30, ha="right", fontsize=7)
    failure_ax.set_title("failure signatures (failed episodes, all scenes)", fontsize=10)
    if signatures:
        failure_ax.legend(fontsize=7)
    else:
        _no_data(failure_ax, "no failed episodes")

    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def _frame(ax, title: str, scenes: list[tuple[str, int]], empty: bool = False) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xticks(range(len(scenes)), ["clean" if p == "clean" else p for p, _ in scenes], rotation=30, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(scenes) - 0.4)
    ax.grid(alpha=0.3)
    if empty:
        _no_data(ax)


def _no_data(ax, text: str = "no data in this run") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
