"""The few lines ``stress run`` ends with: per policy setting, success against clean, the worst
perturbation, planning against direct, value over-estimation and world model against copying the
frame; then where the full tables and the gallery are. At most ``MAX_LINES`` lines; the full tables
are ``stress show``'s. Built from the same tables (``stress.report.degradation``), never recomputed."""

from __future__ import annotations

import shlex
from collections import defaultdict

from stress.core.errors import UserError
from stress.policies import actions_only
from stress.report.summary import SummaryRow

MAX_LINES = 15
MAX_SETTINGS = 4  # up to three lines each; more settings (studies) are left to `stress show`
MISSING = {  # table -> (what it is, how to get it)
    "direct_vs_planning": ("planning vs direct", "--mode both"),
    "value": ("value over-estimation", "a policy with a value head (--policy reference)"),
    "world_model": ("world model vs copy-frame", "--true-futures executed and a policy with a world model"),
    "selection": ("selection regret", "--counterfactual-rollouts 1"),
}


def _actions_only(policies: set[tuple[str, tuple]]) -> bool:
    """Every (policy, options) of the run returns actions only (``stress.policies.actions_only``: e.g.
    ``--policy openpi``, or ``cosmos-deploy`` with a server that sends a bare list of actions)."""
    try:
        return bool(policies) and all(actions_only(name, dict(options)) for name, options in policies)
    except UserError:  # a plug-in policy no longer installed: say nothing about it
        return False


def _pooled(rows: list[SummaryRow]) -> tuple[int, int]:
    return sum(r.successes for r in rows), sum(r.episodes - r.errors for r in rows)


def _rate(k: int, n: int) -> str:
    return f"{k / n:.0%} ({k}/{n})" if n else "—"


def _weighted(rows: list[dict], field: str, weight: str = "decisions") -> float | None:
    pairs = [(r[field], r[weight]) for r in rows if r.get(field) is not None and r.get(weight)]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def headline(run_path, summary: list[SummaryRow], tables: dict[str, list[dict]], policies: set[tuple[str, tuple]] | None = None) -> list[str]:
    """The headline lines of a run (plain text, no markup). ``policies``: the run's (policy, policy options)
    pairs (default: each summary row's policy without options)."""
    settings = sorted({(r.policy, r.setting) for r in summary}, key=lambda s: (s[0], s[1] != "direct", s[1]))
    many_policies = len({p for p, _ in settings}) > 1
    by_setting = defaultdict(list)
    for r in summary:
        by_setting[(r.policy, r.setting)].append(r)
    group = lambda name, s: [r for r in tables.get(name, []) if (r["policy"], r["setting"]) == s]
    lines = []
    for s in settings[:MAX_SETTINGS]:
        rows = by_setting[s]
        clean = [r for r in rows if r.perturbation == "clean"]
        perturbed = [r for r in rows if r.perturbation != "clean"]
        name = f"{s[0]} {s[1]}" if many_policies else s[1]
        first = [f"{name}: success"]
        if perturbed:
            first.append(f"{_rate(*_pooled(perturbed))} perturbed")
            if clean:
                first.append(f"vs {_rate(*_pooled(clean))} clean")
            scored = [r for r in perturbed if r.episodes > r.errors]
            if scored:
                worst = min(scored, key=lambda r: (r.rate, -r.severity, r.perturbation))
                first.append(f"; worst {worst.perturbation} {_rate(worst.successes, worst.episodes - worst.errors)}")
        else:
            first.append(_rate(*_pooled(clean)))
        second, third = [], None
        paired = group("direct_vs_planning", s)
        if paired:
            n = sum(r["n"] for r in paired)
            plan = sum(r["planning"] * r["n"] for r in paired) / n
            direct = sum(r["direct"] * r["n"] for r in paired) / n
            third = (f"  planning vs direct on {n} paired scenarios: {plan:.0%} vs {direct:.0%} "
                     f"(planning only {sum(r['planning_only'] for r in paired)}, direct only {sum(r['direct_only'] for r in paired)})")
        value = group("value", s)
        over_p = _weighted([r for r in value if r["perturbation"] != "clean"], "overestimation")
        over_c = _weighted([r for r in value if r["perturbation"] == "clean"], "overestimation")
        if over_p is not None or over_c is not None:
            text = f"value over-estimation {over_p:+.2f} perturbed" if over_p is not None else "value over-estimation"
            second.append(text + (f" vs {over_c:+.2f} clean" if over_c is not None else ""))
        world = group("world_model", s)
        psnr, copy = _weighted(world, "future_psnr"), _weighted(world, "baseline_psnr")
        if psnr is not None and copy is not None:
            second.append(f"world model {psnr:.1f} dB vs copy-frame {copy:.1f} dB")
        lines.append(" ".join(first).replace(" ;", ";"))
        if third:
            lines.append(third)
        if second:
            lines.append("  " + "; ".join(second))
    if len(settings) > MAX_SETTINGS:
        lines.append(f"... and {len(settings) - MAX_SETTINGS} more settings: see stress show")
    missing = [name for name in MISSING if not [r for r in tables.get(name, []) if name != "selection" or r.get("measured")]]
    if _actions_only(policies if policies is not None else {(p, ()) for p, _ in settings}) and missing:  # no planning, value or future on its wire: no flag would add them
        lines.append("not provided by this policy (actions only): " + "; ".join(MISSING[name][0] for name in missing))
        missing = []
    absent = [f"{MISSING[name][0]} ({MISSING[name][1]})" for name in missing]
    if absent:
        lines.append("not in this run: " + "; ".join(absent))
    run = shlex.quote(str(run_path))
    lines.append(f"full tables: stress show {run}")
    lines.append(f"failure gallery: stress gallery {run}  (writes {run_path}/gallery/index.html)")
    return lines[:MAX_LINES]
