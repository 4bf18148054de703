"""Pure statistics of designed experiments (``stress card``): paired-proportion intervals, two-sample bootstrap,
logistic trend fits, sample sizes from measured rates and the three-way verdict. No simulator, no disk.

* ``newcombe_paired``: the difference of two paired proportions with Newcombe's (1998) method 10 interval
  (Wilson score intervals of each margin, combined with the pairs' phi correlation), the interval suited to
  paired outcomes (direct and planning on the same scenario), not two independent Wilson intervals;
* ``bootstrap_difference``: mean(x) - mean(y) of two independent samples with a percentile bootstrap interval;
* ``logistic_fit``: P(y = 1) = 1 / (1 + exp(-(a + b x))) by Newton-Raphson, the slope's Wald 95 % interval;
* ``mcnemar_sample_size`` (Connor 1987), ``proportions_sample_size`` (two independent proportions, no
  continuity correction) and ``mean_sample_size`` (a paired mean difference): units needed for 80 % power at a
  two-sided 5 % level, given the measured rates;
* ``ranking_auroc_interval``: a percentile bootstrap interval of the within-decision ranking AUROC, resampling
  decisions (the pairs of one decision are not independent);
* ``verdict``: supported / not supported / inconclusive from an interval, a hypothesised direction and the
  smallest effect worth reporting.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from stress.core.metrics import ranking_counts, wilson_interval

Z95 = NormalDist().inv_cdf(0.975)
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive at this budget"


def _z(alpha: float, power: float) -> tuple[float, float]:
    return NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)


def newcombe_paired(both: int, first_only: int, second_only: int, neither: int, z: float = Z95) -> dict:
    """p(first) - p(second) over n pairs, with Newcombe's method 10 interval (Statistics in Medicine 17:2635,
    1998). ``first_only``: pairs where only the first succeeds. Returns {difference, low, high, n}; difference
    None (interval -1..1) for no pairs."""
    a, b, c, d = both, first_only, second_only, neither
    n = a + b + c + d
    if n == 0:
        return {"difference": None, "low": -1.0, "high": 1.0, "n": 0}
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    denominator = (a + b) * (c + d) * (a + c) * (b + d)
    if denominator == 0:
        phi = 0.0
    else:
        numerator = a * d - b * c
        numerator = max(numerator - n / 2, 0.0) if numerator > 0 else numerator  # Newcombe's continuity correction of phi
        phi = numerator / math.sqrt(denominator)
    theta = p1 - p2
    low = theta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = theta + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return {"difference": theta, "low": max(-1.0, low), "high": min(1.0, high), "n": n}


def paired_counts(first, second) -> tuple[int, int, int, int]:
    """(both, first only, second only, neither) of paired boolean outcomes."""
    if len(first) != len(second):
        raise ValueError(f"paired samples differ in length: {len(first)} vs {len(second)}")
    pairs = [(bool(x), bool(y)) for x, y in zip(first, second)]
    return (sum(x and y for x, y in pairs), sum(x and not y for x, y in pairs), sum(y and not x for x, y in pairs),
            sum(not x and not y for x, y in pairs))


def bootstrap_difference(x, y, n_boot: int = 4000, seed: int = 0) -> dict:
    """mean(x) - mean(y) of two independent samples, each resampled with replacement ``n_boot`` times (own seeded
    generator): the 2.5th and 97.5th percentiles. difference None when a sample is empty; the interval is the
    point itself when both samples have a single value."""
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) == 0 or len(y) == 0:
        return {"difference": None, "low": None, "high": None, "n": [len(x), len(y)]}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1) - y[rng.integers(0, len(y), (n_boot, len(y)))].mean(1)
    return {"difference": float(x.mean() - y.mean()), "low": float(np.percentile(means, 2.5)), "high": float(np.percentile(means, 97.5)),
            "n": [len(x), len(y)], "sd": float(np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))) if len(x) > 1 and len(y) > 1 else None}


def ranking_auroc_interval(groups, n_boot: int = 2000, seed: int = 0) -> dict:
    """95 % percentile bootstrap interval of ``ranking_auroc(groups)`` over the decisions that have a pair (each
    resampled with its pairs; own seeded generator). low/high None without such a decision."""
    import numpy as np

    counts = [ranking_counts([g]) for g in groups]
    counts = np.array([c for c in counts if c[1]], dtype=np.float64).reshape(-1, 2)
    out = {"decisions": len(groups), "decisions_with_pairs": len(counts), "pairs": int(counts[:, 1].sum())}
    if not len(counts):
        return {**out, "low": None, "high": None}
    draws = np.random.default_rng(seed).multinomial(len(counts), np.full(len(counts), 1 / len(counts)), size=n_boot)
    aurocs = (draws @ counts[:, 0]) / (draws @ counts[:, 1])
    return {**out, "low": float(np.percentile(aurocs, 2.5)), "high": float(np.percentile(aurocs, 97.5))}


def logistic_fit(x, y, iterations: int = 50) -> dict | None:
    """Maximum-likelihood logistic regression of binary ``y`` on one covariate ``x`` (Newton-Raphson): intercept,
    slope, the slope's standard error, Wald 95 % interval and two-sided p. None with fewer than two distinct x, a
    single outcome class, or separated data (the slope is then unbounded)."""
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(set(x.tolist())) < 2 or len(set(y.tolist())) < 2:
        return None
    design = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-design @ beta))
        w = p * (1 - p)
        info = design.T @ (design * w[:, None])
        try:
            step = np.linalg.solve(info, design.T @ (y - p))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    if not np.all(np.isfinite(beta)) or np.max(np.abs(beta)) > 30:  # separation: the MLE runs off to infinity
        return None
    p = 1 / (1 + np.exp(-design @ beta))
    info = design.T @ (design * (p * (1 - p))[:, None])
    se = float(np.sqrt(np.linalg.inv(info)[1, 1]))
    slope = float(beta[1])
    return {"intercept": float(beta[0]), "slope": slope, "se": se, "low": slope - Z95 * se, "high": slope + Z95 * se,
            "p": 2 * (1 - NormalDist().cdf(abs(slope) / se)), "n": len(x)}


def mcnemar_sample_size(p_first_only: float, p_second_only: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Pairs for McNemar's test to detect discordant probabilities ``p_first_only`` vs ``p_second_only`` (Connor,
    Biometrics 43:207, 1987). None when they are equal (no difference to detect)."""
    psi, delta = p_first_only + p_second_only, p_first_only - p_second_only
    if delta == 0:
        return None
    za, zb = _z(alpha, power)
    return math.ceil((za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta * delta, 0.0))) ** 2 / delta**2)


def proportions_sample_size(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Units per group to tell two independent proportions apart (normal approximation, no continuity correction)."""
    if p1 == p2:
        return None
    za, zb = _z(alpha, power)
    mean = (p1 + p2) / 2
    return math.ceil((za * math.sqrt(2 * mean * (1 - mean)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2)


def mean_sample_size(sd: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Units to detect a mean difference ``delta`` whose per-unit standard deviation is ``sd``."""
    if not delta or sd is None or not math.isfinite(sd):
        return None
    za, zb = _z(alpha, power)
    return math.ceil(((za + zb) * sd / delta) ** 2)


def verdict(low: float | None, high: float | None, direction: int, margin: float) -> str:
    """The verdict on a hypothesised effect of sign ``direction`` (+1: positive, -1: negative) from its 95 %
    interval: supported when the interval excludes 0 on that side; not supported when it excludes every effect of
    at least ``margin`` on that side (or lies wholly on the other side); else inconclusive at this budget."""
    if low is None or high is None:
        return INCONCLUSIVE
    low, high = (low, high) if direction > 0 else (-high, -low)
    if low > 0:
        return SUPPORTED
    if high < margin:
        return NOT_SUPPORTED
    return INCONCLUSIVE
