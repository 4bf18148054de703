"""The figures of a study (``stress study NAME``; the studies and their scenarios: scenarios/studies.py): per
setting of the varied policy variable, its success, latency, prediction and selection figures."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from stress.report.degradation import degradation
from stress.report.figures import pyplot


def study_table(episodes: list[dict], decisions: list[dict]) -> list[dict]:
    """Per setting, perturbation and severity: success, latency per decision, future PSNR vs copy-frame,
    value AUROC, selection regret and worse-than-direct share, planning vs direct amplification."""
    tables = degradation(episodes, decisions)
    key = lambda r: (r["setting"], r["perturbation"], r["severity"])
    rows: dict[tuple, dict] = defaultdict(dict)
    groups = defaultdict(list)
    for e in episodes:
        groups[key(e)].append(e)
    for k, eps in groups.items():
        decided = sum(e["decisions"] or 0 for e in eps)
        rows[k].update(episodes=len(eps), success=float(np.mean([e["success"] for e in eps])),
                       latency_ms=1000 * sum(e["policy_s"] or 0.0 for e in eps) / decided if decided else None)
    for table, fields in (("world_model", ("future_psnr", "baseline_psnr")), ("value", ("auroc",)), ("selection", ("regret", "worse_than_direct")),
                          ("direct_vs_planning", ("direct_only", "planning_only", "mcnemar_p"))):
        for r in tables[table]:
            if key(r) in rows:
                rows[key(r)].update({f: r[f] for f in fields})
    return [{"setting": k[0], "perturbation": k[1], "severity": k[2], **rows[k]}
            for k in sorted(rows, key=lambda k: (k[1] != "clean", k[1], k[2], k[0] != "direct", _setting_order(k[0])))]


def _setting_order(setting: str) -> tuple:
    """Settings in the study's natural order: N, then denoising steps, then the rest alphabetically."""
    words = setting.split()
    n = int(words[0].split("-")[-1]) if words[0].startswith("best-of-") else 0
    steps = next((int(w.split("=")[1]) for w in words if w.startswith("steps=")), 0)
    return n, steps, setting


def save_study_plot(name: str, rows: list[dict], path: Path) -> None:
    """Success, latency, future PSNR and regret against the study's settings, a line per perturbation."""
    plt = pyplot()

    settings = sorted({r["setting"] for r in rows}, key=lambda s: (s.split()[0] != "direct", _setting_order(s)))
    scenes = sorted({(r["perturbation"], r["severity"]) for r in rows}, key=lambda p: (p[0] != "clean", p))
    panels = (("success", "success rate"), ("latency_ms", "policy latency per decision (ms)"), ("future_psnr", "future PSNR (dB)"),
              ("regret", "best-of-N regret"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
    x = np.arange(len(settings))
    for ax, (field, title) in zip(axes, panels):
        for perturbation, severity in scenes:
            by_setting = {r["setting"]: r.get(field) for r in rows if (r["perturbation"], r["severity"]) == (perturbation, severity)}
            y = [np.nan if by_setting.get(s) is None else by_setting[s] for s in settings]
            ax.plot(x, y, marker="o", label=perturbation)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x, [s.replace(" steps=", "\nsteps=").replace(" value=", "\nvalue=").replace(" model=", "\nmodel=") for s in settings], rotation=45, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"study: {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
