"""``stress card``'s report: each pre-declared hypothesis tested on the card's episodes (its test, effect with a
95 % interval, verdict and the budget that would decide it), the planning-gain ledger, the robustness profile,
the failure alarm's section (``stress alarm CARD`` run on the card folder, read from its ``alarm.json``), the
language sensitivity (``stress.report.language`` on the card's language episodes), and the files: ``card.json`` (schema ``stress-card/1``: every number with its n, interval and episode keys),
``card.md``, ``card.html`` (static, offline, the gallery's style, linking failed episodes to the gallery's cards)
and a terminal summary of at most 20 lines.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.card import (AXES, CARD_FORMAT, FEW_CANDIDATES, HYPOTHESES, PROFILE, Context, block_specs, context_from_dict,
                            shares_scenes)
from stress.core.files import atomic_write
from stress.core.metrics import mcnemar, paired_bootstrap, selection, wilson_interval
from stress.core.stats import (INCONCLUSIVE, bootstrap_difference, logistic_fit, mcnemar_sample_size, mean_sample_size, newcombe_paired,
                               paired_counts, verdict)
from stress.report.alarm import ALARM_FILE, card_summary
from stress.report.degradation import load
from stress.report.language import language_sensitivity
from stress.store import RunStore

TEMPLATES = Path(__file__).parent / "templates"
SUMMARY_LINES = 20
MIN_BOOTSTRAP = 5  # units (per group) below which a bootstrap interval decides nothing


# --- reading the card's episodes --------------------------------------------------------------------------------
class Episodes:
    """The card folder's episodes by key, and the executed decisions' rows by episode."""

    def __init__(self, store: RunStore):
        self.rows = {e["episode_key"]: e for e in store.query("SELECT * FROM episodes")}
        self.decisions = defaultdict(list)
        if (store.path / "decisions").is_dir() and any((store.path / "decisions").glob("*.parquet")):
            for d in store.query("SELECT episode_key, step, candidate, pred_value, realised_value, action_spread, true_outcome, chosen "
                                 "FROM decisions ORDER BY episode_key, step, candidate"):
                self.decisions[d["episode_key"]].append(d)

    def valid(self, spec) -> dict | None:
        row = self.rows.get(spec.key)
        return row if row is not None and row["error"] is None else None

    def success(self, spec) -> bool | None:
        row = self.valid(spec)
        return None if row is None else bool(row["success"])

    def executed(self, key: str) -> list[dict]:
        return [d for d in self.decisions.get(key, []) if d["candidate"] == -1]


def _rate(successes: int, n: int) -> dict:
    low, high = wilson_interval(successes, n)
    return {"rate": successes / n if n else None, "successes": successes, "n": n, "low": low, "high": high}


def _budget(units: int | None, per_unit: int, what: str) -> dict:
    return {"units": units, "episodes": None if units is None else units * per_unit, "per_unit": per_unit, "basis": what}


def _needed_pairs(first_only: int, second_only: int, n: int, direction: int, margin: float) -> int | None:
    """Pairs for 80 % power: from the measured discordant rates when they lean the hypothesised way, else for an
    effect of ``margin`` at the measured (or a ``margin``-sized) discordance."""
    if n == 0:
        return None
    p10, p01 = first_only / n, second_only / n
    if (p10 - p01) * direction > 0:
        return mcnemar_sample_size(p10, p01)
    psi = max(p10 + p01, margin)
    return mcnemar_sample_size((psi + direction * margin) / 2, (psi - direction * margin) / 2)


def _paired(first: list, second: list, direction: int, margin: float) -> dict:
    """Paired boolean outcomes: p(first) - p(second) with Newcombe's interval, McNemar's p and the pairs needed."""
    both, first_only, second_only, neither = paired_counts(first, second)
    interval = newcombe_paired(both, first_only, second_only, neither)
    return {**interval, "both": both, "first_only": first_only, "second_only": second_only, "neither": neither,
            "mcnemar_p": mcnemar(first_only, second_only), "needed_pairs": _needed_pairs(first_only, second_only, interval["n"], direction, margin)}


def _failed_keys(episodes: Episodes, specs) -> list[str]:
    return sorted({s.key for s in specs if (row := episodes.valid(s)) is not None and not row["success"]})


def _decidable(effect: dict, bootstrap: bool) -> bool:
    """A bootstrap interval needs ``MIN_BOOTSTRAP`` units (per group) and some spread: with fewer, or every unit
    alike, its percentiles collapse onto the point and would decide anything."""
    if effect.get("difference") is None or effect.get("low") is None:
        return False
    if not bootstrap:
        return True
    n = min(effect["n"]) if isinstance(effect["n"], list) else effect["n"]
    return n >= MIN_BOOTSTRAP and effect["high"] > effect["low"]


def _result(h, effect: dict, test: dict, keys: list[str], failed: list[str], needed: dict, bootstrap: bool = False) -> dict:
    decidable = _decidable(effect, bootstrap)
    status = verdict(effect["low"], effect["high"], h.direction, h.margin) if decidable else INCONCLUSIVE
    if bootstrap and not decidable and effect.get("difference") is not None:  # a collapsed interval is no interval: not reported as one
        effect = {**effect, "low": None, "high": None, "no_interval": f"fewer than {MIN_BOOTSTRAP} scenarios, or every scenario alike"}
    return {"id": h.id, "number": h.number, "title": h.title, "claim": h.claim, "test": h.test, "testable": True, "verdict": status,
            "effect": {"name": h.effect, "direction": "positive" if h.direction > 0 else "negative", "margin": h.margin, **effect},
            "details": test, "episode_keys": sorted(set(keys)), "failed_keys": failed,
            "method": "bootstrap" if bootstrap else "paired proportions", "decided_by": None if status != INCONCLUSIVE else needed}


# --- the five hypotheses --------------------------------------------------------------------------------------
def _ood(h, c: Context, units, all_units, episodes: Episodes) -> dict:
    specs = block_specs(c, h.id, units, all_units)
    rows = {"clean": ([], []), "perturbed": ([], [])}
    per_unit = []
    for k in range(0, len(specs), 4):
        cd, cp, pd, pp = (episodes.success(s) for s in specs[k : k + 4])
        for name, (d, p) in (("clean", (cd, cp)), ("perturbed", (pd, pp))):
            if d is not None and p is not None:
                rows[name][0].append(p)
                rows[name][1].append(d)
        if None not in (cd, cp, pd, pp):
            per_unit.append(((cp - cd), (pp - pd)))
    perturbed = _paired(*rows["perturbed"], h.direction, h.margin)
    clean = _paired(*rows["clean"], h.direction, h.margin)
    more = paired_bootstrap([u[0] for u in per_unit], [u[1] for u in per_unit]) if per_unit else None
    families = sorted({p.label for s in specs for p in [s] if s.perturbations})
    test = {"perturbed": perturbed, "clean": clean, "families": families,
            "gain_perturbed_minus_clean": None if more is None else {"difference": more[0], "low": more[1], "high": more[2], "n": len(per_unit)}}
    effect = {k: perturbed[k] for k in ("difference", "low", "high", "n")}
    return _result(h, effect, test, [s.key for s in specs], _failed_keys(episodes, specs), _budget(perturbed["needed_pairs"], 4, "McNemar, 80 % power"))


def _overestimation(episodes: Episodes, spec) -> float | None:
    rows = [d for d in episodes.executed(spec.key) if d["pred_value"] is not None and d["realised_value"] is not None]
    return float(np.mean([d["pred_value"] - d["realised_value"] for d in rows])) if rows else None


def _value(h, c: Context, units, all_units, episodes: Episodes) -> dict:
    specs = block_specs(c, h.id, units, all_units)
    groups = {"perturbed": [], "clean": []}
    keys = {"perturbed": [], "clean": []}
    for s in specs:
        row = episodes.valid(s)
        if row is None or row["success"]:
            continue
        value = _overestimation(episodes, s)
        if value is not None:
            name = "perturbed" if s.perturbations else "clean"
            groups[name].append(value)
            keys[name].append(s.key)
    diff = bootstrap_difference(groups["perturbed"], groups["clean"])
    sd = diff.pop("sd", None)
    needed = None
    if sd is not None and diff["difference"] is not None:
        n_now = min(len(groups["perturbed"]), len(groups["clean"]))
        delta = diff["difference"] if diff["difference"] * h.direction > 0 else h.margin
        needed_failed = mean_sample_size(sd * np.sqrt(n_now), delta) if sd else None  # per group: sd is the difference's standard error
        fail = 1 - np.mean([episodes.success(s) for s in specs if episodes.success(s) is not None])
        needed = None if needed_failed is None or fail <= 0 else int(np.ceil(needed_failed / fail))
    test = {name: {"mean": float(np.mean(v)) if v else None, "n": len(v), "keys": keys[name]} for name, v in groups.items()}
    test["families"] = sorted({s.label for s in specs if s.perturbations})
    effect = {"difference": diff["difference"], "low": diff["low"], "high": diff["high"], "n": diff["n"]}
    return _result(h, effect, test, [s.key for s in specs], _failed_keys(episodes, specs), _budget(needed, 2, "bootstrap spread, 80 % power"), bootstrap=True)


def _flip(outcomes: list) -> bool | None:
    valid = [o for o in outcomes if o is not None]
    return None if len(valid) < 2 else len(set(valid)) > 1


def _flips(h, c: Context, units, all_units, episodes: Episodes, flip_seeds: int, thresholds: dict) -> dict:
    specs = block_specs(c, h.id, units, all_units)
    per_unit = 2 * flip_seeds
    near, far, xs, ys = [], [], [], []
    for k in range(0, len(specs), per_unit):
        far_flip = _flip([episodes.success(s) for s in specs[k : k + flip_seeds]])
        scene = specs[k + flip_seeds]
        near_flip = _flip([episodes.success(s) for s in specs[k + flip_seeds : k + per_unit]])
        name, severity = scene.perturbations[0].name, scene.perturbations[0].severity
        threshold = thresholds.get(name, {}).get("threshold", severity)
        if near_flip is not None and far_flip is not None:
            near.append(near_flip)
            far.append(far_flip)
        for flip, level in ((far_flip, 0), (near_flip, severity)):
            if flip is not None:
                xs.append(abs(level - threshold))
                ys.append(flip)
    test = _paired(near, far, h.direction, h.margin)
    test["trend"] = logistic_fit(xs, ys)
    test["distance"] = "levels from the boundary (a map's threshold, else the level run)"
    effect = {k: test[k] for k in ("difference", "low", "high", "n")}
    return _result(h, effect, test, [s.key for s in specs], _failed_keys(episodes, specs), _budget(test["needed_pairs"], per_unit - 1, "McNemar on flips, 80 % power"))


def _cascades(h, c: Context, units, all_units, episodes: Episodes) -> dict:
    specs = block_specs(c, h.id, units, all_units)
    option, full, short = c.replan
    harm_full, harm_short, xs, ys = [], [], [], []
    fired = []
    for k in range(0, len(specs), 4):
        clean_full, clean_short, push_full, push_short = (episodes.success(s) for s in specs[k : k + 4])
        if None not in (clean_full, clean_short, push_full, push_short):
            harm_full.append(int(clean_full) - int(push_full))
            harm_short.append(int(clean_short) - int(push_short))
        for outcome, length in ((push_full, full), (push_short, short)):
            if outcome is not None:
                xs.append(length)
                ys.append(not outcome)
        for s in specs[k + 2 : k + 4]:
            row = episodes.valid(s)
            if row is not None:
                records = json.loads(row["perturbations"] or "[]")
                fired.append(any((r.get("realisation") or {}).get("fired") for r in records if isinstance(r, dict)))
    boot = paired_bootstrap(harm_short, harm_full) if harm_full else None
    sd = float(np.std(np.subtract(harm_full, harm_short), ddof=1)) if len(harm_full) > 1 else None
    effect = {"difference": None if boot is None else boot[0], "low": None if boot is None else boot[1], "high": None if boot is None else boot[2], "n": len(harm_full)}
    delta = effect["difference"] if effect["difference"] and effect["difference"] * h.direction > 0 else h.margin
    needed = mean_sample_size(sd, delta) if sd else None  # every scenario alike: no spread to size a budget from
    test = {"option": option, "full": full, "short": short, "harm_full": float(np.mean(harm_full)) if harm_full else None,
            "harm_short": float(np.mean(harm_short)) if harm_short else None, "pairs": len(harm_full), "trend": logistic_fit(xs, ys),
            "push_fired": {"fired": sum(fired), "n": len(fired)}}
    return _result(h, effect, test, [s.key for s in specs], _failed_keys(episodes, specs), _budget(needed, 4, "paired bootstrap spread, 80 % power"), bootstrap=True)


def _mean_spread(episodes: Episodes, spec) -> float | None:
    values = [d["action_spread"] for d in episodes.executed(spec.key) if d["action_spread"] is not None and np.isfinite(d["action_spread"])]
    return float(np.mean(values)) if values else None


def _collapse(h, c: Context, units, all_units, episodes: Episodes) -> dict:
    specs = block_specs(c, h.id, units, all_units)
    few, many, direct, p_few, p_many = [], [], [], [], []
    for k in range(0, len(specs), 3):
        d, f, m = specs[k : k + 3]
        sf, sm = _mean_spread(episodes, f), _mean_spread(episodes, m)
        if sf is not None and sm is not None:
            few.append(sf)
            many.append(sm)
        outcomes = [episodes.success(s) for s in (d, f, m)]
        if None not in outcomes:
            direct.append(outcomes[0])
            p_few.append(outcomes[1])
            p_many.append(outcomes[2])
    scale = float(np.mean(many)) if many and np.mean(many) > 0 else None
    boot = paired_bootstrap(many, few) if few and scale else None
    effect = {"difference": None, "low": None, "high": None, "n": len(few)}
    needed = None
    if boot is not None:
        effect.update(difference=boot[0] / scale, low=boot[1] / scale, high=boot[2] / scale)
        sd = float(np.std(np.subtract(few, many), ddof=1) / scale) if len(few) > 1 else None
        delta = effect["difference"] if effect["difference"] * h.direction > 0 else h.margin
        needed = mean_sample_size(sd, delta) if sd else None
    test = {"spread_few": float(np.mean(few)) if few else None, "spread_many": scale, "few": FEW_CANDIDATES, "many": c.candidates,
            "gain_few": _paired(p_few, direct, -1, h.margin), "gain_many": _paired(p_many, direct, -1, h.margin)}
    return _result(h, effect, test, [s.key for s in specs], _failed_keys(episodes, specs), _budget(needed, 2, "paired bootstrap spread, 80 % power"), bootstrap=True)


# --- the ledger and the profile ----------------------------------------------------------------------------------
def _scenario_of(row: dict) -> str:
    spec = json.loads(row["spec"])
    for k in ("mode", "n_candidates", "aggregation"):
        spec.pop(k, None)
    return json.dumps(spec, sort_keys=True)


def ledger(episodes: Episodes) -> dict:
    """Planning - direct success per task x family x severity (and best-of-N), on identical scenarios, with
    Newcombe's paired interval; ordered by where planning hurts most. The overall gain pools every pair."""
    valid = [e for e in episodes.rows.values() if e["error"] is None]
    direct = {_scenario_of(e): e for e in valid if e["mode"] == "direct"}
    groups = defaultdict(list)
    for e in valid:
        twin = direct.get(_scenario_of(e)) if e["mode"] == "planning" else None
        if twin is not None:
            family = e["perturbation"].split(":")[0] if e["perturbation"] != "clean" else "clean"
            groups[(e["task_id"], family, e["severity"], e["setting"])].append((bool(e["success"]), bool(twin["success"]), e["episode_key"], twin["episode_key"]))
    rows, pooled = [], []
    for (task, fam, severity, setting), pairs in groups.items():
        r = _paired([p for p, *_ in pairs], [d for _, d, *_ in pairs], -1, 0.1)
        rows.append({"task_id": task, "family": fam, "severity": severity, "setting": setting, "planning": _rate(sum(p for p, *_ in pairs), len(pairs)),
                     "direct": _rate(sum(d for _, d, *_ in pairs), len(pairs)), "gain": {k: r[k] for k in ("difference", "low", "high", "n")},
                     "mcnemar_p": r["mcnemar_p"], "episode_keys": sorted(k for *_, a, b in pairs for k in (a, b))})
        pooled += pairs
    rows.sort(key=lambda r: (r["gain"]["difference"], r["gain"]["high"], r["task_id"], r["family"], r["severity"]))
    overall = _paired([p for p, *_ in pooled], [d for _, d, *_ in pooled], -1, 0.1)
    regrets = []
    for step_rows in _decisions_with_truth(episodes):
        candidates = sorted((d for d in step_rows if d["candidate"] >= 0), key=lambda d: d["candidate"])
        chosen = next(i for i, d in enumerate(candidates) if d["chosen"])
        regrets.append(selection([d["true_outcome"] for d in candidates], chosen)["regret"])
    return {"rows": rows, "overall": {k: overall[k] for k in ("difference", "low", "high", "n")} | {"mcnemar_p": overall["mcnemar_p"]},
            "regret": {"mean": float(np.mean(regrets)), "n": len(regrets)} if regrets else None}


def _decisions_with_truth(episodes: Episodes) -> list[list[dict]]:
    """Best-of-N decisions whose every candidate has a counterfactual true outcome and one is chosen."""
    out = []
    for rows in episodes.decisions.values():
        by_step = defaultdict(list)
        for d in rows:
            by_step[d["step"]].append(d)
        for step_rows in by_step.values():
            candidates = [d for d in step_rows if d["candidate"] >= 0]
            if candidates and all(d["true_outcome"] is not None for d in candidates) and sum(bool(d["chosen"]) for d in candidates) == 1:
                out.append(step_rows)
    return out


def profile(c: Context, units, all_units, episodes: Episodes, simulator: str) -> list[dict]:
    """Success per perturbation axis against clean on the same scenarios (direct), with the paired difference."""
    specs = block_specs(c, PROFILE, units, all_units) if units else []
    clean = {(s.task_id, s.init_index): s for s in specs if not s.perturbations}
    out = []
    for axis, names in AXES:
        supported = [n for n in names if n in c.families[PROFILE]]
        if not supported:
            out.append({"axis": axis, "families": list(names), "supported": False, "note": f"not supported by {simulator}"})
            continue
        pairs = [(episodes.success(s), episodes.success(clean[(s.task_id, s.init_index)]), s.key) for s in specs
                 if s.perturbations and s.perturbations[0].name in supported]
        pairs = [p for p in pairs if None not in p[:2]]
        r = _paired([p for p, *_ in pairs], [q for _, q, _ in pairs], -1, 0.1)
        out.append({"axis": axis, "families": supported, "supported": True, "severity": c.severities.get(supported[0], 3),
                    "success": _rate(sum(p for p, *_ in pairs), len(pairs)), "clean": _rate(sum(q for _, q, _ in pairs), len(pairs)),
                    "difference": {k: r[k] for k in ("difference", "low", "high", "n")}, "episode_keys": [k for *_, k in pairs]})
    return out


# --- the failure alarm and the language sensitivity -------------------------------------------------------------
def alarm_section(folder: Path) -> dict:
    """``stress alarm``'s summary of the card folder (``card_summary``: read from its ``alarm.json``, nothing
    recomputed), with ``stale``: the episodes stored after it was written; or, never run, the command that adds it."""
    folder = Path(folder)
    found = card_summary(folder)
    if found is None:
        return {"measured": False, "line": (f"failure alarm not measured: run `stress alarm {folder}` (add `--calibration RUN`, clean episodes of this "
                                            f"policy and suite, when the card's own clean successes are too few), then `stress card --resume {folder}`")}
    written = (folder / ALARM_FILE).stat().st_mtime
    stale = sum(1 for p in (folder / "parts").glob("*.parquet") if p.stat().st_mtime > written)
    return {"measured": True, **found, "calibration": Path(found["calibration_run"]).name, "stale": stale,
            "picture": "alarm.png" if (folder / "alarm.png").is_file() else None}


def language_section(store: RunStore, c: Context, simulator: str) -> dict:
    """``language_sensitivity`` (what ``stress show`` and the gallery show) on the card's language episodes: per
    level, success against clean on the same scenarios, breaks, edit, word and embedding distance, and how far
    the first decision's value (and, where frames were stored, the predicted future) moves with the words alone.
    Not measured: why (the profile got no scenario at this budget, or the simulator has no language family)."""
    if "language" not in c.families.get(PROFILE, ()):
        return {"measured": False, "rows": [], "note": f"not supported by {simulator}"}
    rows = language_sensitivity(*load(store), frames=store.frames)
    if not rows:
        return {"measured": False, "rows": [], "note": "not measured at this budget (no scenario for the profile's language episodes)"}
    notes = []
    if c.language_swap is None:
        notes.append("the swapped-task level (another task's instruction) is not in this card's design"
                     + ("" if shares_scenes(c.suite) else f": {simulator}'s tasks share no scene, so there is no other task's instruction to swap in"))
    elif not any(r["severity"] == c.language_swap for r in rows):
        notes.append(f"the swapped-task level (language:{c.language_swap}) got no scenario at this budget")
    if not any(r["future_pairs"] for r in rows):
        notes.append("future shift: a card stores no predicted frames (`stress run --true-futures executed` with the language levels measures it)")
    return {"measured": True, "rows": rows, "note": "; ".join(notes) or None}


def _percent(value) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def _alarm_line(section: dict) -> str:
    if not section["measured"]:
        return section["line"]
    more = len(section["lines"]) - 1
    text = "alarm: " + (section["lines"][0] if section["lines"] else "no setting to test") + (f" (+{more} more setting(s) in card.md)" if more > 0 else "")
    return text + (f"; {section['stale']} episode(s) stored since alarm.json: rerun stress alarm" if section["stale"] else "")


def _language_line(section: dict) -> str:
    if not section["measured"]:
        return f"language sensitivity: {section['note']}"
    parts = [f"language:{r['severity']} {r['kind']} {_percent(r['breaks'])} of {r['clean_ok_pairs']}"
             + ("" if r["value_shift"] is None else f", value shift {r['value_shift']:.3f}") for r in section["rows"]]
    return "language (breaks of clean successes): " + "; ".join(parts)


# --- the card ----------------------------------------------------------------------------------------------------
def card_report(store: RunStore) -> dict[str, Any]:
    """The card of a card folder (a run folder whose manifest's config holds the design under ``card``)."""
    config = store.manifest["config"]
    design = config["card"]
    c = context_from_dict(design["context"])
    all_units = [tuple(u) for u in design["units"]]
    allocation = {k: [tuple(u) for u in v] for k, v in design["allocation"].items()}
    episodes = Episodes(store)
    analyses = {"ood_amplification": _ood, "value_overconfidence": _value, "open_loop_cascades": _cascades, "mode_collapse": _collapse}
    hypotheses = []
    for h in HYPOTHESES:
        if h.id in design["untestable"]:
            hypotheses.append({"id": h.id, "number": h.number, "title": h.title, "claim": h.claim, "test": h.test, "testable": False,
                               "verdict": "not testable", "why": design["untestable"][h.id]})
            continue
        units = allocation.get(h.id, [])
        if not units:
            hypotheses.append({"id": h.id, "number": h.number, "title": h.title, "claim": h.claim, "test": h.test, "testable": True,
                               "verdict": INCONCLUSIVE, "why": f"no scenario fitted the budget of {design['budget']} episodes"})
            continue
        if h.id == "borderline_flips":
            result = _flips(h, c, units, all_units, episodes, design["flip_seeds"], design["thresholds"])
        else:
            result = analyses[h.id](h, c, units, all_units, episodes)
        result["scenarios"] = len(units)
        result["families"] = list(c.families.get(h.id, ()))
        hypotheses.append(result)
    errors = sum(1 for e in episodes.rows.values() if e["error"] is not None)
    return {"format": CARD_FORMAT, "run": store.path.name, "path": str(store.path), "created": store.manifest.get("created"),
            "policy": c.policy, "suite": c.suite, "tasks": sorted({u[0] for u in all_units}), "budget": design["budget"],
            "episodes": {"designed": len(store.manifest["specs"]), "stored": len(episodes.rows), "errors": errors,
                         "reused": design.get("reused", 0), "run": design.get("ran", None)},
            "severities": design["severity_sources"], "hypotheses": hypotheses, "ledger": ledger(episodes),
            "profile": profile(c, allocation.get(PROFILE, []), all_units, episodes, design["simulator"]),
            "alarm": alarm_section(store.path), "language": language_section(store, c, design["simulator"]),
            "notes": design.get("notes", [])}


def _pts(value) -> str:
    return "—" if value is None else f"{100 * value:+.0f} pts"


def _interval(d: dict, scale: float = 100.0, unit: str = "") -> str:
    if d.get("difference") is None:
        return "no data"
    if d.get("low") is None:
        return f"{scale * d['difference']:+.1f}{unit}, no interval yet (n={_n(d['n'])})"
    return f"{scale * d['difference']:+.1f}{unit} [{scale * d['low']:+.1f}, {scale * d['high']:+.1f}] (n={_n(d['n'])})"


def _n(n) -> str:
    return "/".join(map(str, n)) if isinstance(n, list) else str(n)


def _scale(h: dict) -> tuple[float, str]:
    """How a hypothesis' effect is printed: success differences in points, values and spreads as they are."""
    return (1.0, "") if h["id"] == "value_overconfidence" else (100.0, " %") if h["id"] == "mode_collapse" else (100.0, " pts")


def headline_of(h: dict) -> str:
    if not h["testable"]:
        return f"H{h['number']} {h['title']}: not testable ({h['why']})"
    if "effect" not in h:
        return f"H{h['number']} {h['title']}: {h['verdict']} ({h['why']})"
    scale, unit = _scale(h)
    text = f"H{h['number']} {h['title']}: {h['verdict']}; {h['effect']['name']} {_interval(h['effect'], scale, unit)}"
    if h.get("decided_by") and h["decided_by"]["episodes"]:
        text += f"; ~{h['decided_by']['episodes']} episodes would decide it"
    elif h["verdict"] == INCONCLUSIVE:
        text += "; no spread yet to size the budget that would decide it"
    return text


def _num(value, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def measured_text(h: dict) -> str:
    """What the test measured, in one line (card.md and card.html)."""
    d = h.get("details")
    if not d:
        return ""
    if h["id"] == "ood_amplification":
        p, c = d["perturbed"], d["clean"]
        return (f"OOD pairs: planning only {p['first_only']}, direct only {p['second_only']} of {p['n']} (McNemar p {_num(p['mcnemar_p'], '.3f')}); "
                f"clean pairs: planning only {c['first_only']}, direct only {c['second_only']} of {c['n']}")
    if h["id"] == "value_overconfidence":
        return f"failed perturbed episodes {_num(d['perturbed']['mean'])} (n={d['perturbed']['n']}), failed clean {_num(d['clean']['mean'])} (n={d['clean']['n']})"
    if h["id"] == "borderline_flips":
        return f"scenarios that flip: near {d['both'] + d['first_only']} of {d['n']}, far {d['both'] + d['second_only']} of {d['n']}"
    if h["id"] == "open_loop_cascades":
        return (f"harm of the push: whole chunk ({d['full']}) {_pts(d['harm_full'])}, quarter ({d['short']}) {_pts(d['harm_short'])} over {d['pairs']} scenarios; "
                f"push fired in {d['push_fired']['fired']} of {d['push_fired']['n']} pushed episodes")
    return (f"spread best-of-{d['few']} {_num(d['spread_few'], '.3f')}, best-of-{d['many']} {_num(d['spread_many'], '.3f')}; planning gain best-of-{d['few']} "
            f"{_interval(d['gain_few'], 100, ' pts')}, best-of-{d['many']} {_interval(d['gain_many'], 100, ' pts')}")


def summary(report: dict) -> list[str]:
    """At most ``SUMMARY_LINES`` lines for the terminal."""
    e = report["episodes"]
    lines = [(f"card: {report['policy']} on {report['suite']} task(s) {', '.join(map(str, report['tasks']))}; "
              f"{e['stored']} episodes ({e['reused']} reused, {e['run'] if e['run'] is not None else '?'} run, {e['errors']} errors), budget {report['budget']}")]
    lines += [headline_of(h) for h in report["hypotheses"]]
    overall = report["ledger"]["overall"]
    if overall["difference"] is not None:
        lines.append(f"planning gain overall: {_interval(overall, 100, ' pts')}")
        worst = report["ledger"]["rows"][0]
        lines.append(f"  hurts most: task {worst['task_id']} {worst['family']}:{worst['severity']} {worst['setting']}: {_interval(worst['gain'], 100, ' pts')}")
    axes = [p for p in report["profile"] if p["supported"] and p["success"]["n"]]
    if axes:
        lines.append("profile (success vs clean, same scenarios): " + "; ".join(
            f"{p['axis']} {100 * p['success']['rate']:.0f}/{100 * p['clean']['rate']:.0f} %" for p in axes))
    lines.append(_language_line(report["language"]))
    lines.append(_alarm_line(report["alarm"]))
    lines.append(f"files: {report['path']}/card.json, card.md, card.html")
    return lines[:SUMMARY_LINES]


def markdown(report: dict) -> str:
    """``card.md``: the card for a paper's appendix or a model card."""
    out = [f"# Failure-mode card: {report['policy']} on {report['suite']}", "",
           (f"Run `{report['run']}`, {report['created']}. Budget {report['budget']} episodes; {report['episodes']['stored']} stored "
            f"({report['episodes']['reused']} reused from earlier runs, {report['episodes']['errors']} errors). Intervals are 95 %."), "",
           "## Hypotheses", "", "| # | failure mode | verdict | effect | 95 % interval | n | measured | test |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for h in report["hypotheses"]:
        if "effect" not in h:
            out.append(f"| {h['number']} | {h['title']} | {h['verdict']} | — | — | — | {h.get('why', '')} | {h['test']} |")
            continue
        scale, unit = _scale(h)
        ef = h["effect"]
        interval = "—" if ef["low"] is None else f"[{scale * ef['low']:+.1f}, {scale * ef['high']:+.1f}]{unit}"
        point = "—" if ef["difference"] is None else f"{scale * ef['difference']:+.1f}{unit}"
        decide = f"; ~{h['decided_by']['episodes']} episodes would decide it" if h.get("decided_by") and h["decided_by"]["episodes"] else ""
        out.append(f"| {h['number']} | {h['title']} | {h['verdict']}{decide} | {ef['name']}: {point} | {interval} | {_n(ef['n'])} | {measured_text(h)} | {h['test']} |")
    out += ["", "## Planning-gain ledger (planning - direct, identical scenarios; Newcombe's paired interval)", ""]
    lg = report["ledger"]
    if lg["rows"]:
        out += [f"Overall: {_interval(lg['overall'], 100, ' pts')}." + (f" Selection regret {lg['regret']['mean']:.3f} over {lg['regret']['n']} decisions." if lg["regret"] else
                " Regret: no counterfactual rollouts measured."), "",
                "| task | family | severity | setting | planning | direct | gain | 95 % interval | n |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in lg["rows"]:
            g = r["gain"]
            out.append(f"| {r['task_id']} | {r['family']} | {r['severity']} | {r['setting']} | {100 * r['planning']['rate']:.0f} % | {100 * r['direct']['rate']:.0f} % | "
                       f"{100 * g['difference']:+.0f} pts | [{100 * g['low']:+.0f}, {100 * g['high']:+.0f}] | {g['n']} |")
    else:
        out.append("No direct/planning pair (the policy has no planning mode, or the budget left none).")
    out += ["", "## Robustness profile (direct; success against clean on the same scenarios)", "",
            "| axis | family | success | 95 % interval | clean | difference | n |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in report["profile"]:
        if not p["supported"]:
            out.append(f"| {p['axis']} | {', '.join(p['families'])} | {p['note']} | | | | |")
        elif not p["success"]["n"]:
            out.append(f"| {p['axis']} | {', '.join(p['families'])} | not run at this budget | | | | |")
        else:
            s, d = p["success"], p["difference"]
            out.append(f"| {p['axis']} | {p['families'][0]}:{p['severity']} | {100 * s['rate']:.0f} % | {100 * s['low']:.0f}–{100 * s['high']:.0f} % | "
                       f"{100 * p['clean']['rate']:.0f} % | {_interval(d, 100, ' pts')} | {s['n']} |")
    out += ["", "## Language sensitivity (direct; each level against clean on the same scenarios)", ""] + language_markdown(report["language"])
    out += ["", "## Failure alarm", ""] + alarm_markdown(report["alarm"])
    if report["notes"]:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"


def _ci(values, spec: str = ".2f") -> str:
    return "" if not values else f" [{format(values[0], spec)}, {format(values[1], spec)}]"


def _gap(gap: dict | None) -> str:
    return "—" if gap is None else f"{gap['gap']:+.2f} under {gap['perturbation']}"


def language_markdown(section: dict) -> list[str]:
    if not section["measured"]:
        return [f"Language sensitivity: {section['note']}."]
    out = ["Breaks: the share of the scenarios clean succeeded on that the rewritten instruction broke (meaning kept: should stay near 0; "
           "another task's instruction: near 100 % means the policy listens). Shifts: how far the first decision's value (and predicted "
           "future, 0-255) moved with the words alone.", "",
           "| level | kind | episodes | success | clean | breaks | edit distance | word distance | embedding distance | value shift | future shift | example |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in section["rows"]:
        out.append(f"| language:{r['severity']} | {r['kind']} | {r['episodes']} | {_percent(r['success'])} | {_percent(r['clean_success'])} (n={r['pairs']}) | "
                   f"{_percent(r['breaks'])} (n={r['clean_ok_pairs']}) | {_num(r['edit_distance'])} | {_num(r['word_distance'])} | {_num(r['embedding_distance'])} | "
                   f"{_num(r['value_shift'], '.3f')} (n={r['value_pairs']}) | {_num(r['future_shift'])} (n={r['future_pairs']}) | "
                   f"{'' if r['example'] is None else '`' + r['example'].replace('`', '') + '`'} |")
    if section["note"]:
        out += ["", f"Note: {section['note']}."]
    return out


def alarm_markdown(section: dict) -> list[str]:
    if not section["measured"]:
        return [section["line"].replace("failure alarm not measured", "Not measured") + "."]
    out = [f"`stress alarm` at alpha {section['alpha']}, calibrated on `{section['calibration']}`"
           + (" (every other clean episode; the rest held out)" if section["held_out_split"] else "") + "."]
    if section["stale"]:
        out.append(f"{section['stale']} episode(s) were stored after alarm.json was written: rerun `stress alarm`.")
    out += [""] + [f"- {line}" for line in section["lines"]]
    out += ["", "| setting | signal | clean FPR | TPR before onset | perturbed failures | median lead (steps) | worst coverage gap |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for st in section["settings"]:
        for r in st["signals"]:
            tags = [t for t, on in (("best", r["signal"] == st["best"]), ("policy-agnostic", r["baseline"])) if on]
            out.append(f"| {st['policy']} {st['setting']} | {r['signal']}{' (' + ', '.join(tags) + ')' if tags else ''} | {_num(r['clean_fpr'])}{_ci(r['clean_fpr_ci'])} | "
                       f"{_num(r['tpr'])}{_ci(r['tpr_ci'])} | {r['failed']} | {_num(r['lead_steps_median'], '.0f')} | "
                       f"{_gap(r['worst_coverage_gap'])} |")
    return out


def html(report: dict) -> str:
    """``card.html``: static, no script, the gallery's stylesheet inlined; failed episodes link to the gallery's cards."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined  # the report's only templating need: loaded when a card is written

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    env.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.0f} %"
    env.filters["signed"] = lambda v, scale=100.0: "—" if v is None else f"{scale * v:+.1f}"
    env.filters["num"] = _num
    css = (TEMPLATES / "gallery.css").read_text()
    scales = {h["id"]: _scale(h) for h in report["hypotheses"]}
    return env.get_template("card.html.j2").render(card=report, css=css, scales=scales, measured=measured_text)


def write_card(folder: Path, report: dict) -> None:
    """card.json, card.md and card.html into the card folder, each written atomically."""
    folder = Path(folder)
    for name, text in (("card.json", json.dumps(report, indent=2, sort_keys=True, default=str)), ("card.md", markdown(report)), ("card.html", html(report))):
        atomic_write(folder / name, lambda tmp, t=text: Path(tmp).write_text(t))
