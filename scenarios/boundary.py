"""The adaptive failure-boundary estimator behind ``stress map``: pure (numpy only, no simulator, no disk).

Along one axis of a perturbation family (grid indices 0..H, 0 the identity, H the most severe the map goes),
the success probability is modelled as a falling logistic with small lapses::

    p(u) = LAPSE + (1 - 2 LAPSE) * sigmoid(-(u - theta) / s),     u = index / H in [0, 1]

so ``theta`` is exactly where p crosses 50 % (the *threshold*) and ``s`` how sharp the fall is. The posterior
over (theta, s) lives on a fixed grid (theta from -0.2 to 1.2 of the axis in steps of 0.005: a threshold
before the first level or past the last is a possible answer; s log-spaced 0.01-0.3; uniform priors). The
threshold's estimate is the posterior median of theta, its uncertainty the central 95 % credible interval.

**Which level next** (the psi method of Kontsevich & Tyler, 1999): among the axis's grid levels, the one
whose next ``batch`` episodes minimise the expected entropy of theta's posterior. In practice that is a level
near the current threshold estimate, so the episodes repeat where the boundary is, not where the answer is
already known. It stops when the interval is at most ``width`` (a share of the axis) or the budget is spent.

**The 5-level grid** (how LIBERO-Plus and LIBERO-PRO report per-axis sensitivity) is the same posterior fed
round-robin episodes at levels 0, H/4, H/2, 3H/4, H, with the same stopping rule: the two designs differ
only in where the episodes go, so episodes-to-equal-width is a fair comparison (``benchmark``).
Deterministic: the same outcomes give the same levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from stress.core.metrics import wilson_interval

LAPSE = 0.03
THETAS = np.round(np.arange(-0.2, 1.2 + 1e-9, 0.005), 6)
SLOPES = np.exp(np.linspace(math.log(0.01), math.log(0.3), 8))
GRID_LEVELS = 5


def _model(theta: np.ndarray, slope: np.ndarray, u: np.ndarray) -> np.ndarray:
    """p(success) for every (theta, s, u): shape (len(theta), len(slope), len(u))."""
    z = -(u[None, None, :] - theta[:, None, None]) / slope[None, :, None]
    return LAPSE + (1 - 2 * LAPSE) / (1 + np.exp(-np.clip(z, -50, 50)))


@dataclass
class Boundary:
    """The posterior over one axis's threshold from the outcomes seen so far."""

    high: int  # grid index of the axis's far end (H); levels are 0..high
    counts: dict = field(default_factory=dict)  # level -> [successes, episodes]

    def __post_init__(self):
        if not isinstance(self.high, int) or self.high < 1:
            raise ValueError(f"an axis needs at least two levels (high >= 1), got {self.high!r}")
        self.levels = np.arange(self.high + 1)
        self._p = _model(THETAS, SLOPES, self.levels / self.high)  # (T, S, X)
        self._log_post = np.zeros((len(THETAS), len(SLOPES)))
        for level, (s, n) in list(self.counts.items()):
            self.counts[level] = [0, 0]
            self.add(level, s, n - s)

    def add(self, level: int, successes: int, failures: int) -> None:
        if not 0 <= level <= self.high:
            raise ValueError(f"level {level} outside 0..{self.high}")
        p = self._p[:, :, level]
        self._log_post += successes * np.log(p) + failures * np.log1p(-p)
        c = self.counts.setdefault(int(level), [0, 0])
        c[0] += successes
        c[1] += successes + failures

    @property
    def episodes(self) -> int:
        return sum(n for _, n in self.counts.values())

    def posterior(self) -> np.ndarray:
        w = np.exp(self._log_post - self._log_post.max())
        return w / w.sum()

    def theta_marginal(self) -> np.ndarray:
        return self.posterior().sum(axis=1)

    def threshold(self) -> dict:
        """Median and central 95 % interval of theta, as shares of the axis and as grid indices."""
        cdf = np.cumsum(self.theta_marginal())
        q = lambda x: float(THETAS[min(int(np.searchsorted(cdf, x)), len(THETAS) - 1)])  # noqa: E731
        median, low, high = q(0.5), q(0.025), q(0.975)
        return {"median": median, "low": low, "high": high, "width": high - low,
                "median_index": median * self.high, "low_index": low * self.high, "high_index": high * self.high,
                "below_axis": high < 0, "beyond_axis": low > 1}

    def next_level(self, batch: int) -> int:
        """The level whose next ``batch`` episodes minimise theta's expected posterior entropy."""
        post = self.posterior()  # (T, S)
        ys = np.arange(batch + 1)
        binom = np.array([math.comb(batch, int(y)) for y in ys], dtype=float)
        p = self._p  # (T, S, X)
        lik = binom[:, None, None, None] * p[None] ** ys[:, None, None, None] * (1 - p[None]) ** (batch - ys)[:, None, None, None]  # (Y, T, S, X)
        joint = (post[None, :, :, None] * lik).sum(axis=2)  # (Y, T, X): theta marginal x outcome
        marg = joint.sum(axis=1, keepdims=True)  # (Y, 1, X)
        cond = joint / np.maximum(marg, 1e-300)
        entropy = -(cond * np.log(np.maximum(cond, 1e-300))).sum(axis=1)  # (Y, X)
        expected = (marg[:, 0, :] * entropy).sum(axis=0)
        return int(np.argmin(np.round(expected, 12)))  # rounded: ties go to the mildest level, on every machine

    def fitted(self) -> list[float]:
        """The posterior-mean success probability at each level 0..high (the picture's line)."""
        return [float(x) for x in (self.posterior()[:, :, None] * self._p).sum(axis=(0, 1))]

    def curve(self) -> list[dict]:
        """Each visited level's observed rate with its 95 % Wilson interval, mildest first."""
        return [{"level": lv, "successes": s, "episodes": n, "rate": s / n, "ci95": list(wilson_interval(s, n))}
                for lv, (s, n) in sorted(self.counts.items()) if n]


def grid_levels(high: int, count: int = GRID_LEVELS) -> list[int]:
    """The fixed design: ``count`` evenly spaced levels from rest to the far end (0, H/4, H/2, 3H/4, H)."""
    return sorted({round(high * j / (count - 1)) for j in range(count)})


def estimate(high: int, draw: Callable[[int, int], tuple[int, int]], width: float, budget: int, batch: int = 4,
             design: str = "adaptive") -> Boundary:
    """Run one design until theta's 95 % interval is at most ``width`` (a share of the axis) or ``budget``
    episodes are spent. ``draw(level, n)`` runs n episodes at a level and returns (successes, failures) (fewer
    than n when some had no outcome: an invalid scene). ``design``: 'adaptive' (``batch`` episodes at the
    psi-method's level) or 'grid' (one episode at each of the 5 grid levels per round)."""
    b = Boundary(high)
    fixed = grid_levels(high)
    stalled = 0
    while b.episodes < budget and b.threshold()["width"] > width and stalled < 3:
        before = b.episodes
        if design == "grid":
            for level in fixed:
                b.add(level, *draw(level, 1))
        else:
            level = b.next_level(batch)
            b.add(level, *draw(level, min(batch, budget - b.episodes)))
        stalled = stalled + 1 if b.episodes == before else 0  # nothing but invalid scenes three rounds running
    return b


# --- synthetic curves with a known threshold (the benchmark; no simulator) ------------------------------
@dataclass(frozen=True)
class Curve:
    """A true success curve p(u) = lo + (hi - lo) * sigmoid(-(u - centre) / slope): clean success hi (85-100 %),
    floor lo (0-10 %): lapses the estimator's model does not know, so coverage is measured, not assumed."""

    high: int
    centre: float
    slope: float
    hi: float
    lo: float

    def p(self, level) -> np.ndarray:
        u = np.asarray(level) / self.high
        return self.lo + (self.hi - self.lo) / (1 + np.exp((u - self.centre) / self.slope))

    @property
    def threshold(self) -> float:
        """Where p crosses 50 %, as a share of the axis."""
        q = (0.5 - self.lo) / (self.hi - self.lo)
        return self.centre - self.slope * math.log(q / (1 - q))


def random_curve(seed: int, high: int = 40) -> Curve:
    rng = np.random.default_rng(seed)
    return Curve(high, float(rng.uniform(0.1, 0.9)), float(np.exp(rng.uniform(math.log(0.02), math.log(0.15)))),
                 float(rng.uniform(0.85, 1.0)), float(rng.uniform(0.0, 0.1)))


def curve_sampler(curve: Curve, seed: int) -> Callable[[int, int], tuple[int, int]]:
    rng = np.random.default_rng(seed)

    def draw(level: int, n: int) -> tuple[int, int]:
        s = int(rng.binomial(n, curve.p(level)))
        return s, n - s
    return draw


def benchmark(seeds, widths=(0.2, 0.1), budget: int = 300, batch: int = 4, high: int = 40) -> dict:
    """Per target width: episodes each design needs to reach it on the curves of ``seeds`` (both designs see the
    same curve; each its own outcomes), how often it reaches it within ``budget``, and the coverage and error of
    its interval."""
    out = {}
    for width in widths:
        rows = {"adaptive": [], "grid": []}
        for seed in seeds:
            curve = random_curve(seed, high)
            for design in rows:
                b = estimate(high, curve_sampler(curve, 10_000 + seed), width, budget, batch, design)
                t = b.threshold()
                rows[design].append({"episodes": b.episodes, "reached": t["width"] <= width, "covered": t["low"] <= curve.threshold <= t["high"],
                                     "error": abs(t["median"] - curve.threshold), "width": t["width"], "levels": len(b.counts)})
        summary = {}
        for design, rs in rows.items():
            eps = np.array([r["episodes"] for r in rs])
            summary[design] = {"median_episodes": float(np.median(eps)), "mean_episodes": float(eps.mean()),
                               "reached": sum(r["reached"] for r in rs), "coverage": float(np.mean([r["covered"] for r in rs])),
                               "median_error": float(np.median([r["error"] for r in rs])), "median_width": float(np.median([r["width"] for r in rs])),
                               "median_levels": float(np.median([r["levels"] for r in rs]))}
        both = [(a["episodes"], g["episodes"]) for a, g in zip(rows["adaptive"], rows["grid"]) if a["reached"] and g["reached"]]
        summary["paired"] = {"n": len(both), "median_saved": float(np.median([1 - a / g for a, g in both])) if both else None,
                             "adaptive_episodes": int(sum(a for a, _ in both)), "grid_episodes": int(sum(g for _, g in both))}
        out[f"{width:g}"] = summary
    return {"seeds": list(seeds), "widths": list(widths), "budget": budget, "batch": batch, "high": high, "by_width": out}
