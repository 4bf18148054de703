"""How world-model predictions, value predictions and best-of-N selection degrade, per perturbation and
severity, and how planning compares with the direct policy on the same scenarios. Reads a run's
episodes and decisions (``stress.store``); every figure is a pure function of ``stress.core.metrics``.

A figure that cannot exist (no predictions: the expert; no counterfactual rollouts; one class only) is
``None``, never 0.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from stress.core.cameras import CAMERAS
from stress.core.metrics import (amplification, auroc, breakage_rate, brier, calibration, flip_rate, mcnemar, overestimation, paired_bootstrap,
                            ranking_auroc, relative_robustness, selection, spearman)
from stress.core.stats import ranking_auroc_interval
from stress.store import RunStore

GROUP = ("policy", "setting", "perturbation", "severity")  # setting: 'direct', 'best-of-8 average', plus policy options
SCENARIO = ("suite", "task_id", "init_index", "perturbation", "seed", "policy")  # the same scenario in either mode


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def load(store: RunStore) -> tuple[list[dict], list[dict]]:
    """The run's valid episodes, and its decision rows joined with their episode's group and success, in a fixed
    order: DuckDB's parallel scans return rows in any order, and float sums (hence the tables' last digits and
    degradation.png's pixels) depend on it."""
    episodes = store.query("SELECT * FROM episodes WHERE error IS NULL ORDER BY episode_key")
    if not (store.path / "decisions").is_dir():
        return episodes, []
    return episodes, store.query(
        "SELECT d.*, e.policy, e.mode, e.setting, e.perturbation, e.severity, e.success AS episode_success "
        "FROM decisions d JOIN episodes e USING (episode_key) WHERE e.error IS NULL ORDER BY d.episode_key, d.step, d.candidate"
    )


def _order(key: tuple) -> tuple:
    policy, setting, perturbation, severity = key
    return policy, setting != "direct", setting, perturbation != "clean", perturbation, severity


PLANNING_ONLY_OPTIONS = ("value_source",)  # change only how candidates are scored, never the direct policy's actions


def _options(episode: dict) -> str:
    """The policy options of an episode's spec that shape the direct policy (direct and planning pair only
    under the same ones)."""
    options = dict(json.loads(episode["spec"]).get("policy_options", {}))
    return json.dumps({k: v for k, v in options.items() if k not in PLANNING_ONLY_OPTIONS}, sort_keys=True)


def robustness(episodes: list[dict]) -> list[dict]:
    """Per group: relative robustness (perturbed / clean success on the same init states) and the breakage
    rate (share of the scenarios the clean policy solves that the perturbation breaks)."""
    clean = {(e["suite"], e["task_id"], e["init_index"], e["seed"], e["policy"], e["setting"]): e["success"] for e in episodes if e["perturbation"] == "clean"}
    groups = defaultdict(list)
    for e in episodes:
        if e["perturbation"] == "clean":
            continue
        base = clean.get((e["suite"], e["task_id"], e["init_index"], e["seed"], e["policy"], e["setting"]))
        if base is not None:
            groups[tuple(e[k] for k in GROUP)].append((base, e["success"]))
    out = []
    for key in sorted(groups, key=_order):
        pairs = np.array(groups[key], dtype=bool)
        out.append({**dict(zip(GROUP, key)), "pairs": len(pairs), "relative_robustness": relative_robustness(pairs[:, 1], pairs[:, 0]),
                    "breakage_rate": breakage_rate(pairs[:, 0], pairs[:, 1])})
    return out


def direct_vs_planning(episodes: list[dict]) -> list[dict]:
    """Per perturbation and severity, planning vs direct on the same scenarios: success of each, the four
    paired counts, McNemar's exact p, and amplification (P(planning fails | direct succeeds) vs
    P(planning succeeds | direct fails))."""
    by_scenario = defaultdict(list)
    for e in episodes:
        by_scenario[(*(e[k] for k in SCENARIO), _options(e))].append(e)
    groups = defaultdict(list)
    for runs in by_scenario.values():
        for d in (e for e in runs if e["mode"] == "direct"):
            for p in (e for e in runs if e["mode"] == "planning"):  # each planning setting against the direct policy
                groups[(d["policy"], p["setting"], d["perturbation"], d["severity"])].append((d["success"], p["success"]))
    out = []
    for key in sorted(groups, key=_order):
        pairs = np.array(groups[key], dtype=bool)
        amp = amplification(pairs[:, 0], pairs[:, 1])
        out.append({**dict(zip(GROUP, key)), "direct": float(pairs[:, 0].mean()), "planning": float(pairs[:, 1].mean()), **amp})
    return out


def seed_sensitivity(episodes: list[dict]) -> list[dict]:
    """Per group run with several policy seeds (``--policy-seeds``): the share of scenarios (task, init
    state, perturbation) whose outcome flips when only the policy seed changes."""
    outcomes = defaultdict(lambda: defaultdict(list))
    for e in episodes:
        outcomes[tuple(e[k] for k in GROUP)][(e["suite"], e["task_id"], e["init_index"])].append(e["success"])
    out = []
    for key in sorted(outcomes, key=_order):
        rate = flip_rate(outcomes[key])
        if rate is not None:
            scenarios = outcomes[key].values()
            out.append({**dict(zip(GROUP, key)), "scenarios": len(scenarios), "seeds": max(len(v) for v in scenarios), "flip_rate": rate})
    return out


def failure_signatures(episodes: list[dict]) -> list[dict]:
    """Per group: how the failed episodes failed (stress.envs.signatures), and the share of failures with the
    most common signature (mode collapse: near 1 means the policy keeps failing the same way)."""
    groups = defaultdict(list)
    for e in episodes:
        if not e["success"] and e.get("failure"):
            groups[tuple(e[k] for k in GROUP)].append(e["failure"])
    out = []
    for key in sorted(groups, key=_order):
        names, counts = np.unique(groups[key], return_counts=True)
        top = int(np.argmax(counts))
        out.append({**dict(zip(GROUP, key)), "failures": len(groups[key]), "counts": dict(zip(names.tolist(), counts.tolist())),
                    "top_signature": str(names[top]), "top_share": float(counts[top] / len(groups[key]))})
    return out


def world_model(decisions: list[dict]) -> list[dict]:
    """Per group: predicted vs true future (PSNR, SSIM), and the copy-current-frame baseline, over the
    executed decisions whose true future was measured; per camera too."""
    groups = defaultdict(list)
    for r in decisions:
        if r["candidate"] == -1 and r.get("future_psnr") is not None:
            groups[tuple(r[k] for k in GROUP)].append(r)
    out = []
    for key in sorted(groups, key=_order):
        rows = groups[key]
        row = {**dict(zip(GROUP, key)), "decisions": len(rows)}
        for metric in ("future_psnr_occluded", "future_psnr_visible", "baseline_psnr_occluded", "baseline_psnr_visible"):
            row[metric] = _mean(r.get(metric) for r in rows)
        for metric in ("future_psnr", "baseline_psnr", "future_ssim", "baseline_ssim"):
            row[metric] = _mean(r[metric] for r in rows)
            for c in CAMERAS:
                row[f"{metric}_{c}"] = _mean(r.get(f"{metric}_{c}") for r in rows)
        out.append(row)
    return out


def value_quality(decisions: list[dict]) -> list[dict]:
    """Per group, over the executed decisions: AUROC and Brier score of the predicted value against the
    episode's eventual success, expected calibration error (with the reliability diagram's bins), and
    over-estimation = mean(predicted - realised value), overall and on failed episodes."""
    groups = defaultdict(list)
    for r in decisions:
        if r["candidate"] == -1 and r["pred_value"] is not None:
            groups[tuple(r[k] for k in GROUP)].append(r)
    out = []
    for key in sorted(groups, key=_order):
        rows = groups[key]
        pred = np.array([r["pred_value"] for r in rows], dtype=float)
        success = np.array([r["episode_success"] for r in rows], dtype=bool)
        realised = [(r["pred_value"], r["realised_value"]) for r in rows if r.get("realised_value") is not None]
        failed = [(r["pred_value"], r["realised_value"]) for r in rows if r.get("realised_value") is not None and not r["episode_success"]]
        cal = calibration(pred, success)
        out.append({**dict(zip(GROUP, key)), "decisions": len(rows), "episodes": len({r["episode_key"] for r in rows}),
                    "auroc": auroc(pred, success), "brier": brier(pred, success), "ece": cal["ece"], "reliability": cal["bins"],
                    "overestimation": overestimation(*zip(*realised)) if realised else None,
                    "overestimation_failed": overestimation(*zip(*failed)) if failed else None})
    return out


def selection_quality(decisions: list[dict]) -> list[dict]:
    """Per group of planning episodes, over the decisions whose candidates all have a true outcome
    (``--counterfactual-rollouts``): mean regret and rank of the chosen candidate, Spearman correlation
    of predicted value vs true outcome across candidates, how often the chosen candidate is truly worse
    (or better) than candidate 0, the chunk the direct policy would have executed; candidate spread; and the
    within-decision ranking AUROC (pairs of one decision's candidates with different true outcomes: does the
    better one score higher?) with its 95 % bootstrap interval over decisions and its number of pairs."""
    by_decision = defaultdict(list)
    for r in decisions:
        if r["candidate"] >= 0:
            by_decision[(r["episode_key"], r["step"])].append(r)
    groups = defaultdict(list)
    for rows in by_decision.values():
        rows.sort(key=lambda r: r["candidate"])
        groups[tuple(rows[0][k] for k in GROUP)].append(rows)
    out = []
    for key in sorted(groups, key=_order):
        measured = [rows for rows in groups[key] if all(r.get("true_outcome") is not None for r in rows)]
        stats = []
        for rows in measured:
            true = [r["true_outcome"] for r in rows]
            chosen = next(i for i, r in enumerate(rows) if r["chosen"])
            stats.append({**selection(true, chosen), "rho": spearman([r["pred_value"] for r in rows], true),
                          "worse": true[chosen] < true[0], "better": true[chosen] > true[0]})
        ranked = [([r["pred_value"] for r in rows], [r["true_outcome"] for r in rows]) for rows in measured
                  if all(r["pred_value"] is not None for r in rows)]
        interval = ranking_auroc_interval(ranked)
        out.append({**dict(zip(GROUP, key)), "decisions": len(groups[key]), "measured": len(measured),
                    "ranking_auroc": ranking_auroc(ranked), "ranking_auroc_low": interval["low"], "ranking_auroc_high": interval["high"],
                    "ranking_pairs": interval["pairs"],
                    "regret": _mean(s["regret"] for s in stats), "rank": _mean(s["rank"] for s in stats),
                    "spearman": _mean(s["rho"] for s in stats),
                    "worse_than_direct": _mean(float(s["worse"]) for s in stats), "better_than_direct": _mean(float(s["better"]) for s in stats),
                    "action_spread": _mean(rows[0].get("action_spread") for rows in groups[key])})
    return out


def degradation(episodes: list[dict], decisions: list[dict]) -> dict[str, list[dict]]:
    """Every table of ``stress show``, as JSON-able data (also written to RUN/degradation.json)."""
    return {"robustness": robustness(episodes), "direct_vs_planning": direct_vs_planning(episodes), "failures": failure_signatures(episodes),
            "seeds": seed_sensitivity(episodes),
            "world_model": world_model(decisions),
            "value": value_quality(decisions), "selection": selection_quality(decisions)}


MATCH = ("suite", "task_id", "init_index", "perturbation", "seed", "mode")
COMPARED = (("world_model", "future_psnr"), ("world_model", "future_ssim"), ("value", "auroc"), ("value", "overestimation"),
            ("selection", "regret"), ("selection", "worse_than_direct"))


def compare(run_a: tuple[list[dict], list[dict]], run_b: tuple[list[dict], list[dict]]) -> dict:
    """Two runs on their common scenarios (same task, init state, perturbation, seed and mode; if they
    share none, e.g. a direct run against a planning run, the mode is left out of the match).

    ``success``: per perturbation, severity and mode, both success rates on the common scenarios, the
    discordant counts, McNemar's exact p and a paired-bootstrap 95 % interval of B - A.
    ``figures``: the main prediction figures of each run restricted to the common scenarios."""
    match = MATCH
    (eps_a, dec_a), (eps_b, dec_b) = run_a, run_b
    common = {tuple(e[k] for k in match) for e in eps_a} & {tuple(e[k] for k in match) for e in eps_b}
    if not common:
        match = MATCH[:-1]
        common = {tuple(e[k] for k in match) for e in eps_a} & {tuple(e[k] for k in match) for e in eps_b}
    key = lambda e: tuple(e[k] for k in match)
    index_a = {key(e): e for e in eps_a if key(e) in common}
    index_b = {key(e): e for e in eps_b if key(e) in common}
    groups = defaultdict(list)
    for k in common:
        a = index_a[k]
        groups[(a["perturbation"], a["severity"], a["mode"] if "mode" in match else "any")].append((a["success"], index_b[k]["success"]))
    success = []
    for (perturbation, severity, mode) in sorted(groups, key=lambda g: (g[0] != "clean", g[0], g[1], g[2])):
        pairs = np.array(groups[(perturbation, severity, mode)], dtype=bool)
        a_only, b_only = int((pairs[:, 0] & ~pairs[:, 1]).sum()), int((~pairs[:, 0] & pairs[:, 1]).sum())
        diff = paired_bootstrap(pairs[:, 0], pairs[:, 1])
        success.append({"perturbation": perturbation, "severity": severity, "mode": mode, "n": len(pairs), "a": float(pairs[:, 0].mean()),
                        "b": float(pairs[:, 1].mean()), "a_only": a_only, "b_only": b_only, "mcnemar_p": mcnemar(a_only, b_only),
                        "difference": diff[0] if diff else None, "difference_ci95": list(diff[1:]) if diff else None})
    keys_a = {e["episode_key"] for e in index_a.values()}
    keys_b = {e["episode_key"] for e in index_b.values()}
    tables_a = degradation([e for e in eps_a if e["episode_key"] in keys_a], [d for d in dec_a if d["episode_key"] in keys_a])
    tables_b = degradation([e for e in eps_b if e["episode_key"] in keys_b], [d for d in dec_b if d["episode_key"] in keys_b])
    figures = defaultdict(dict)
    for table, field in COMPARED:
        for side, tables in (("a", tables_a), ("b", tables_b)):
            for row in tables[table]:
                mode = "direct" if row["setting"].split()[0] == "direct" else "planning"  # A's and B's settings may differ
                group = (mode, row["perturbation"], row["severity"])
                figures[group][f"{field}_{side}"] = row[field]
    rows = [{"mode": g[0], "perturbation": g[1], "severity": g[2], **{f"{f}_{s}": figures[g].get(f"{f}_{s}") for _, f in COMPARED for s in "ab"}}
            for g in sorted(figures, key=lambda g: (g[0], g[1] != "clean", g[1], g[2]))]
    return {"matched_on": list(match), "common_scenarios": len(common), "success": success, "figures": rows}
