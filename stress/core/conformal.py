"""Conformal calibration of a runtime failure alarm with time-varying thresholds (pure: no simulator, no disk).

An alarm signal is a score per decision that rises toward failure; an episode's signal is its trace, a map
from the env step of each decision to the score there (steps without a score are left out). The threshold
at step t is ``mu(t) + q * sigma(t)``:

- ``mu(t)``, ``sigma(t)``: the mean and standard deviation of the score at step t over the *fitting* half of
  the clean successful calibration episodes (a step with fewer than ``MIN_AT_STEP`` scores takes the last
  step that had enough, and before the first such step the pooled figures; ``sigma`` is floored at a tenth
  of the pooled standard deviation, so a step where every fitting episode agrees does not alarm on any change);
- ``q``: the ``ceil((1 - alpha)(n + 1))``-th smallest of the *conformal* half's nonconformity scores, each
  episode's largest normalised score ``max_t (s(t) - mu(t)) / sigma(t)``.

Split conformal prediction over that maximum: for a clean successful episode exchangeable with the
conformal half, P(the alarm fires at any step) <= alpha, hence at most alpha by every step (the episode-wise
guarantee; it is the false-positive rate "at every step" of a cumulative alarm). The guarantee needs
``n >= needed_calibration(alpha)`` conformal episodes; with fewer the quantile does not exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stress.core.metrics import auroc

MIN_AT_STEP = 3  # fitting scores a step needs for its own mu / sigma
SIGMA_FLOOR = 0.1  # sigma(t) >= this share of the pooled standard deviation


def conformal_rank(alpha: float, n: int) -> int:
    """The rank ``ceil((1 - alpha)(n + 1))`` of the split-conformal quantile among n calibration scores."""
    return math.ceil((1 - alpha) * (n + 1) - 1e-12)


def needed_calibration(alpha: float) -> int:
    """The fewest calibration scores for which the conformal quantile at ``alpha`` exists (rank <= n)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha {alpha} not in (0, 1)")
    n = 1
    while conformal_rank(alpha, n) > n:
        n += 1
    return n


def conformal_quantile(scores, alpha: float) -> float:
    """The ``ceil((1 - alpha)(n + 1))``-th smallest score; ValueError when there are too few scores."""
    scores = np.sort(np.asarray(scores, dtype=float))
    k = conformal_rank(alpha, len(scores))
    if k > len(scores):
        raise ValueError(f"{len(scores)} calibration scores; alpha {alpha} needs at least {needed_calibration(alpha)}")
    return float(scores[k - 1])


@dataclass(frozen=True)
class Thresholds:
    """A calibrated time-varying threshold: ``threshold(t) = mu(t) + q * sigma(t)`` on the grid ``steps``
    (a step between grid points takes the last grid point at or before it, before the first: the first)."""

    steps: tuple[int, ...]
    mu: tuple[float, ...]
    sigma: tuple[float, ...]
    q: float
    alpha: float
    n_fit: int
    n_conformal: int

    def _index(self, step: int) -> int:
        return max(0, int(np.searchsorted(self.steps, step, side="right")) - 1)

    def normalised(self, step: int, score: float) -> float:
        i = self._index(step)
        return (score - self.mu[i]) / self.sigma[i]

    def at(self, step: int) -> float:
        i = self._index(step)
        return self.mu[i] + self.q * self.sigma[i]


def _fit_scale(fit: list[dict[int, float]]) -> tuple[list[int], list[float], list[float]]:
    values = np.array([v for trace in fit for v in trace.values()], dtype=float)
    if len(values) == 0:
        raise ValueError("no scores in the fitting episodes")
    pooled_mu, pooled_sd = float(values.mean()), float(values.std())
    floor = SIGMA_FLOOR * pooled_sd if pooled_sd > 0 else 1.0
    steps = sorted({s for trace in fit for s in trace})
    mu, sigma, last = [], [], (pooled_mu, max(pooled_sd, floor))
    for step in steps:
        at = np.array([trace[step] for trace in fit if step in trace], dtype=float)
        if len(at) >= MIN_AT_STEP:
            last = (float(at.mean()), max(float(at.std()), floor))
        mu.append(last[0])
        sigma.append(last[1])
    return steps, mu, sigma


def calibrate(fit: list[dict[int, float]], conformal: list[dict[int, float]], alpha: float) -> Thresholds:
    """Thresholds from two disjoint sets of clean successful episodes' traces (see the module docstring).
    A conformal episode without a score has nonconformity -inf (it can never alarm)."""
    steps, mu, sigma = _fit_scale(fit)
    scale = Thresholds(tuple(steps), tuple(mu), tuple(sigma), 0.0, alpha, len(fit), len(conformal))
    scores = [max((scale.normalised(s, v) for s, v in trace.items()), default=-math.inf) for trace in conformal]
    return Thresholds(tuple(steps), tuple(mu), tuple(sigma), conformal_quantile(scores, alpha), alpha, len(fit), len(conformal))


def first_alarm(trace: dict[int, float], thresholds: Thresholds) -> int | None:
    """The first step whose score exceeds the threshold there; None when the alarm never fires."""
    for step in sorted(trace):
        if trace[step] > thresholds.at(step):
            return step
    return None


def matched_auroc(failed: list[dict[int, float]], succeeded: list[dict[int, float]]) -> dict:
    """AUROC of the score at matched time steps: at each step, the failed episodes' scores against the
    successful ones' (both with a score there), so episode length cannot inflate it; the per-step figures and
    their mean weighted by the number of (failed, successful) pairs at each step (None without any pair)."""
    per_step, total, weight = [], 0.0, 0
    for step in sorted({s for trace in failed + succeeded for s in trace}):
        pos = [t[step] for t in failed if step in t]
        neg = [t[step] for t in succeeded if step in t]
        value = auroc(pos + neg, [True] * len(pos) + [False] * len(neg))
        per_step.append({"step": step, "failed": len(pos), "succeeded": len(neg), "auroc": value})
        if value is not None:
            total += value * len(pos) * len(neg)
            weight += len(pos) * len(neg)
    return {"auroc": total / weight if weight else None, "pairs": weight, "per_step": per_step}
