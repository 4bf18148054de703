"""Best-of-N value aggregation, shared by every planning backend (Cosmos Policy's schemes).

Each candidate has an ensemble of value predictions (futures x values). Its score is one of:

* ``average``: the mean;
* ``lcb``: mean - std (a lower confidence bound: penalises disagreement);
* ``success_vote``: the share of predictions above ``SUCCESS_THRESHOLD`` (0.05: values are
  ~gamma^(steps to success) on success and ~0 on failure);
* ``majority_mean``: the mean of the predictions on the majority side of the threshold (ties count as the
  success side).

The candidate with the highest score is executed (the first one on ties).
"""

from __future__ import annotations

import numpy as np

from stress.errors import choice_error

SUCCESS_THRESHOLD = 0.05
AGGREGATIONS = ("average", "lcb", "success_vote", "majority_mean")


def check_aggregation(name: str) -> None:
    if name not in AGGREGATIONS:
        raise choice_error("aggregation", name, AGGREGATIONS)


def aggregate(values: np.ndarray, how: str) -> np.ndarray:
    """values: (N candidates, E ensemble members) in [0, 1] -> (N,) scores."""
    check_aggregation(how)
    values = np.asarray(values, dtype=np.float64)
    if how == "average":
        return values.mean(axis=1)
    if how == "lcb":
        return values.mean(axis=1) - values.std(axis=1)
    above = values > SUCCESS_THRESHOLD
    if how == "success_vote":
        return above.mean(axis=1)
    majority_success = above.sum(axis=1) * 2 >= values.shape[1]
    side = np.where(majority_success[:, None], above, ~above)
    return (values * side).sum(axis=1) / side.sum(axis=1)


def best_candidate(values: np.ndarray, how: str) -> tuple[int, np.ndarray]:
    scores = aggregate(values, how)
    return int(np.argmax(scores)), scores
