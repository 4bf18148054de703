"""Language sensitivity of a run: does the policy (and its value head) listen to the instruction?

For every level of the ``language`` family a run holds (episodes with that one perturbation), against the clean
episode on the same (task, init state, seed, policy, setting):

* success, the clean success on the same pairs, and **breaks**: the share of pairs whose clean episode succeeded
  where the rewritten one failed. On a meaning-preserving level (``robustness``) breaks should stay near 0; on a
  grounding level (another task's instruction, none) they should be near 1: a policy that keeps succeeding is
  not listening;
* the instruction's mean normalised edit distance and word distance (1 - Jaccard);
* **value shift**: the mean absolute difference between the value the policy predicted at its first decision and
  the clean episode's. A policy-layer rewrite leaves the scene alone, so the first decision of both episodes is
  made at the same simulator state: the shift is how much the value head moves with the words alone (absent for
  policies that predict no value).
"""

from __future__ import annotations

import json
from collections import defaultdict

PAIR_KEY = ("suite", "task_id", "init_index", "seed", "policy", "setting")


def _language_record(episode: dict) -> dict | None:
    """The realisation of an episode's language perturbation when it is the episode's only perturbation."""
    try:
        records = json.loads(episode.get("perturbations") or "[]")
    except json.JSONDecodeError:
        return None
    if len(records) != 1 or not isinstance(records[0], dict) or records[0].get("name") != "language":
        return None
    return records[0].get("realisation") or None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def language_sensitivity(episodes: list[dict], decisions: list[dict]) -> list[dict]:
    """One row per (policy, setting, severity) of the language family (see the module docstring); ``episodes``
    are the run's valid ones, ``decisions`` its decision rows (``stress.report.degradation.load``)."""
    first_value = {d["episode_key"]: d["pred_value"] for d in decisions if d["step"] == 0 and d["candidate"] == -1 and d["pred_value"] is not None}
    clean = {tuple(e[k] for k in PAIR_KEY): e for e in episodes if e["perturbation"] == "clean"}
    groups: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
    for e in episodes:
        record = _language_record(e)
        if record is not None:
            groups[(e["policy"], e["setting"], e["severity"])].append((e, record))
    rows = []
    for (policy, setting, severity), members in sorted(groups.items()):
        pairs = [(e, clean[key]) for e, _ in members if (key := tuple(e[k] for k in PAIR_KEY)) in clean]
        clean_ok = [(e, c) for e, c in pairs if c["success"]]
        shifts = [abs(first_value[e["episode_key"]] - first_value[c["episode_key"]]) for e, c in pairs
                  if e["episode_key"] in first_value and c["episode_key"] in first_value]
        kinds = sorted({r.get("kind", "?") for _, r in members})
        rows.append({
            "policy": policy, "setting": setting, "severity": severity, "kind": "/".join(kinds),
            "episodes": len(members), "success": _mean([float(e["success"]) for e, _ in members]),
            "pairs": len(pairs), "clean_success": _mean([float(c["success"]) for _, c in pairs]),
            "breaks": _mean([float(not e["success"]) for e, _ in clean_ok]), "clean_ok_pairs": len(clean_ok),
            "edit_distance": _mean([float(r.get("normalised_edit_distance", 0.0)) for _, r in members]),
            "word_distance": _mean([float(r.get("word_distance", 0.0)) for _, r in members]),
            "value_shift": _mean(shifts), "value_pairs": len(shifts),
            "example": next((json.dumps(r["instruction"])[:70] for _, r in members if isinstance(r.get("instruction"), str)), None),
        })
    return rows
