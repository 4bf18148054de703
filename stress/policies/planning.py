"""Best-of-N value aggregation, shared by every planning backend: Cosmos Policy's schemes, exactly as its
``aggregate_value_predictions`` computes them (golden values in tests/test_planning_aggregation.py).

Each candidate has an ensemble of value predictions (futures x values). Its score is one of:

* ``average``: the mean;
* ``lcb``: mean - std, the *unbiased* std (a lower confidence bound: penalises disagreement);
* ``success_vote``: the share of predictions above ``SUCCESS_THRESHOLD`` (0.05: values are
  ~gamma^(steps to success) on success and ~0 on failure);
* ``majority_mean``: the mean of the predictions above the threshold when at least half are above it,
  else 0 (the majority predicts failure).

Every score is then clamped to [0, 1], as Cosmos does (so ``lcb`` ties at 0 are common). The candidate
with the highest score is executed (the first one on ties). One deviation: with a single ensemble member
Cosmos's unbiased std is NaN; here it is 0 (``lcb`` is then the value itself).
"""

from __future__ import annotations

import numpy as np

from stress.core.errors import choice_error

SUCCESS_THRESHOLD = 0.05
AGGREGATIONS = ("average", "lcb", "success_vote", "majority_mean")


def check_aggregation(name: str) -> None:
    if name not in AGGREGATIONS:
        raise choice_error("aggregation", name, AGGREGATIONS)


def aggregate(values: np.ndarray, how: str) -> np.ndarray:
    """values: (N candidates, E ensemble members) in [0, 1] -> (N,) scores in [0, 1]."""
    check_aggregation(how)
    values = np.asarray(values, dtype=np.float64)
    if how == "average":
        scores = values.mean(axis=1)
    elif how == "lcb":
        std = values.std(axis=1, ddof=1) if values.shape[1] > 1 else np.zeros(len(values))
        scores = values.mean(axis=1) - std
    else:
        above = values > SUCCESS_THRESHOLD
        if how == "success_vote":
            scores = above.mean(axis=1)
        else:  # majority_mean
            n_above = above.sum(axis=1)
            mean_above = (values * above).sum(axis=1) / np.maximum(n_above, 1)
            scores = np.where(n_above / values.shape[1] >= 0.5, mean_above, 0.0)
    return np.clip(scores, 0.0, 1.0)


def best_candidate(values: np.ndarray, how: str) -> tuple[int, np.ndarray]:
    scores = aggregate(values, how)
    return int(np.argmax(scores)), scores
