"""Language sensitivity of a run: does the policy (and its value head) listen to the instruction?

For every level of the ``language`` family a run holds (episodes with that one perturbation), against the clean
episode on the same (task, init state, seed, policy, setting):

* success, the clean success on the same pairs, and **breaks**: the share of pairs whose clean episode succeeded
  where the rewritten one failed. On a meaning-preserving level (``robustness``) breaks should stay near 0; on a
  grounding level (another task's instruction, none) they should be near 1: a policy that keeps succeeding is
  not listening;
* the instruction's mean normalised edit distance and word distance (1 - Jaccard), and its mean **embedding
  distance**: the cosine distance between the task's instruction and the one told as the reference model's own
  instruction encoder embeds them (``stress.policies.reference.text``; the encoder at hand for every policy's
  rows, absent when its checkpoint cannot be read; an empty instruction embeds as the model's empty bag);
* **value shift**: the mean absolute difference between the value the policy predicted at its first decision and
  the clean episode's. A policy-layer rewrite leaves the scene alone, so the first decision of both episodes is
  made at the same simulator state: the shift is how much the value head moves with the words alone (absent for
  policies that predict no value);
* **future shift**: for a world-model policy whose run stored the predicted frames (``--true-futures``, the
  default), the mean absolute difference (0-255) between the agentview future it predicted at the first decision
  and the clean episode's, at that same state: how much the predicted future moves with the words alone.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Callable

import numpy as np

from stress.policies.reference.text import embedding_distance

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


def _first_future(frames: Callable[[str], dict | None] | None, key: str) -> np.ndarray | None:
    """The agentview future predicted at an episode's first decision (step 0), if the run stored it."""
    stored = frames(key) if frames else None
    if not stored or not len(stored.get("steps", ())) or int(stored["steps"][0]) != 0:
        return None
    return stored["predicted"][0].astype(np.int16)


def language_sensitivity(episodes: list[dict], decisions: list[dict], frames: Callable[[str], dict | None] | None = None) -> list[dict]:
    """One row per (policy, setting, severity) of the language family (see the module docstring); ``episodes``
    are the run's valid ones, ``decisions`` its decision rows (``stress.report.degradation.load``), ``frames`` the
    run's stored frames of an episode key (``RunStore.frames``; None: no future shift)."""
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
        futures = [(_first_future(frames, e["episode_key"]), _first_future(frames, c["episode_key"])) for e, c in pairs]
        future_shifts = [float(np.abs(a - b).mean()) for a, b in futures if a is not None and b is not None and a.shape == b.shape]
        kinds = sorted({r.get("kind", "?") for _, r in members})
        embedded = [embedding_distance(r["original"], r["instruction"]) for _, r in members
                    if isinstance(r.get("original"), str) and isinstance(r.get("instruction"), str)]
        rows.append({
            "policy": policy, "setting": setting, "severity": severity, "kind": "/".join(kinds),
            "episodes": len(members), "success": _mean([float(e["success"]) for e, _ in members]),
            "pairs": len(pairs), "clean_success": _mean([float(c["success"]) for _, c in pairs]),
            "breaks": _mean([float(not e["success"]) for e, _ in clean_ok]), "clean_ok_pairs": len(clean_ok),
            "edit_distance": _mean([float(r.get("normalised_edit_distance", 0.0)) for _, r in members]),
            "word_distance": _mean([float(r.get("word_distance", 0.0)) for _, r in members]),
            "embedding_distance": _mean([d for d in embedded if d is not None]),
            "value_shift": _mean(shifts), "value_pairs": len(shifts),
            "future_shift": _mean(future_shifts), "future_pairs": len(future_shifts),
            "example": next((json.dumps(r["instruction"])[:70] for _, r in members if isinstance(r.get("instruction"), str)), None),
        })
    return rows
