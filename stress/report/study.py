"""The studies the critique of world-model planning asks for (``stress study NAME``): one variable of the
policy varied on identical scenarios, with its success, latency, prediction and selection figures.

* ``aggregation``: best-of-N value aggregation, average / lcb / success_vote / majority_mean;
* ``value-source``: V(s') (value of the predicted future) vs Q(s, a) (value of state + actions);
* ``denoising``: 1 / 5 / 10 denoising steps, direct and planning (latency vs success vs prediction error);
* ``candidates``: best-of-N with N = 1, 2, 4, 8 under the given perturbation families and severities;
* ``temperature``: the policy's sampling temperature 1 / 0.5 / 0.25, direct and planning (how much of the
  outcome is the policy's noise, and what best-of-N gains when its candidates are less diverse).

Every study also runs the direct policy on the same scenarios, the reference point of every comparison.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from stress.core.registry import Registry
from stress.policies.planning import AGGREGATIONS
from stress.report.degradation import degradation

DENOISING_STEPS = (1, 5, 10)
CANDIDATES = (1, 2, 4, 8)
TEMPERATURES = (1.0, 0.5, 0.25)


def _planning(s, n_candidates: int, aggregation: str, **fields):
    return replace(s, mode="planning", n_candidates=n_candidates, aggregation=aggregation, **fields)


def _aggregation(s, n_candidates, aggregation):
    return [s] + [_planning(s, n_candidates, a) for a in AGGREGATIONS]


def _value_source(s, n_candidates, aggregation):
    return [s] + [_planning(s, n_candidates, aggregation, policy_options=(("value_source", v),)) for v in ("future", "action")]


def _direct_and_planning(s, n_candidates: int, aggregation: str, option: str, values) -> list:
    """Direct and planning with each value of one policy option."""
    out = []
    for value in values:
        options = ((option, value),)
        out += [replace(s, policy_options=options), _planning(s, n_candidates, aggregation, policy_options=options)]
    return out


def _denoising(s, n_candidates, aggregation):
    return _direct_and_planning(s, n_candidates, aggregation, "num_denoising_steps", DENOISING_STEPS)


def _candidates(s, n_candidates, aggregation):
    return [s] + [_planning(s, n, aggregation) for n in CANDIDATES]


def _temperature(s, n_candidates, aggregation):
    return _direct_and_planning(s, n_candidates, aggregation, "temperature", TEMPERATURES)


# the studies: (direct spec, n_candidates, aggregation) -> its variants (the direct spec itself included) each, in
# this order; plug-ins add theirs through the "stress.studies" entry points
STUDIES = Registry("study", "stress.studies")
STUDIES.register("aggregation", _aggregation)
STUDIES.register("value-source", _value_source)
STUDIES.register("denoising", _denoising)
STUDIES.register("candidates", _candidates)
STUDIES.register("temperature", _temperature)


def study_specs(name: str, base: list, n_candidates: int, aggregation: str, checkpoints: tuple[str, ...] = ()) -> list:
    """The study's variants of each direct ``base`` spec (the direct spec itself included); with ``checkpoints``,
    all of them once per checkpoint (e.g. models trained on different amounts of data)."""
    variants = STUDIES.get(name)
    out = [v for s in base for v in variants(s, n_candidates, aggregation)]
    if checkpoints:
        out = [replace(s, policy_options=tuple(sorted((*s.policy_options, ("checkpoint", c))))) for c in checkpoints for s in out]
    return list({s.key: s for s in out}.values())


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
