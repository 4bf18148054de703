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

**The N-level grid** (how LIBERO-Plus and LIBERO-PRO report per-axis sensitivity; N = 5 by default) is the
same posterior fed round-robin episodes at N evenly spaced levels (5: 0, H/4, H/2, 3H/4, H), with the same
stopping rule checked after each round: the two designs differ only in where the episodes go, so
episodes-to-equal-width is a fair comparison (``benchmark``; ``stress map --grid N`` runs it on real episodes).
Deterministic: the same outcomes give the same levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
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


@lru_cache(maxsize=8)
def _likelihood(high: int, batch: int) -> np.ndarray:
    """P(y successes of ``batch``) for every (y, theta, s, level 0..high): shape (Y, T, S, X). Fixed by the model, so
    computed once per axis length (the psi method's costliest part; the benchmarks run thousands of estimates)."""
    ys = np.arange(batch + 1)
    binom = np.array([math.comb(batch, int(y)) for y in ys], dtype=float)
    p = _model(THETAS, SLOPES, np.arange(high + 1) / high)  # (T, S, X)
    lik = binom[:, None, None, None] * p[None] ** ys[:, None, None, None] * (1 - p[None]) ** (batch - ys)[:, None, None, None]
    lik.setflags(write=False)
    return lik


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
        joint = np.einsum("ts,ytsx->ytx", post, _likelihood(self.high, batch))  # (Y, T, X): theta marginal x outcome
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
    """The fixed design: ``count`` evenly spaced levels from rest to the far end (5: 0, H/4, H/2, 3H/4, H); fewer
    when the axis has fewer than ``count`` levels (every level then)."""
    if count < 2:
        raise ValueError(f"a grid needs at least 2 levels, got {count!r}")
    return sorted({round(high * j / (count - 1)) for j in range(count)})


def row_levels(threshold: dict, high: int, count: int) -> list[int]:
    """A pair's levels of its second axis: ``count`` evenly spaced from rest to where the second axis alone (the first
    at rest) is surely past its own boundary, the top of its threshold's 95 % interval (``threshold``: ``Boundary.
    threshold()``; the axis's end, ``high``, when the interval reaches it); further on, the first axis fails from rest
    and a row would say nothing new."""
    span = max(1, min(high, int(np.ceil(threshold["high_index"]))))
    return sorted({round(span * j / (count - 1)) for j in range(count)})


def design_name(grid: int | None) -> str:
    """How ``map.json`` and the tables name a design: 'adaptive', or 'grid N'."""
    return "adaptive" if grid is None else f"grid {grid}"


def estimate(high: int, draw: Callable[[int, int], tuple[int, int]], width: float, budget: int, batch: int = 4,
             design: str = "adaptive", grid: int = GRID_LEVELS) -> Boundary:
    """Run one design until theta's 95 % interval is at most ``width`` (a share of the axis) or ``budget``
    episodes are spent. ``draw(level, n)`` runs n episodes at a level and returns (successes, failures) (fewer
    than n when some had no outcome: an invalid scene). ``design``: 'adaptive' (``batch`` episodes at the
    psi-method's level) or 'grid' (one episode at each of the ``grid`` levels per round, mildest first; the
    last round stops at the budget)."""
    b = Boundary(high)
    fixed = grid_levels(high, grid) if design == "grid" else []
    stalled = 0
    while b.episodes < budget and b.threshold()["width"] > width and stalled < 3:
        before = b.episodes
        if design == "grid":
            for level in fixed:
                if b.episodes >= budget:
                    break
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
        summary["paired"] = _paired(rows["adaptive"], rows["grid"])
        out[f"{width:g}"] = summary
    return {"seeds": list(seeds), "widths": list(widths), "budget": budget, "batch": batch, "high": high, "by_width": out}


# --- synthetic surfaces with a known boundary curve (the pairs' benchmark; no simulator) ---------------------------
@dataclass(frozen=True)
class Surface:
    """A true success surface over a pair of axes (first a, second b, both as shares of their axes) whose 50 % boundary
    is the curve (a / a0)^k + (b / b0)^k = 1: the first axis alone crosses 50 % at a0, the second alone at b0, and k
    says how they compound (k < 1: strongly, the curve bowed toward rest; k = 1: a straight trade-off; k > 1: weakly).
    Along the first axis at any b the success is a logistic in a, p = lo + (hi - lo) * sigmoid(-(a - a*(b)) / slope + z),
    z placing its 50 % crossing exactly at the boundary a*(b) (before rest, a* < 0, once b is past b0); along the
    second axis with the first at rest it is not a logistic in b, so the estimator's model is wrong there, as on a real
    scene. Lapses hi, lo as ``Curve``'s."""

    high: int
    first: float  # a0
    second: float  # b0
    power: float  # k
    slope: float
    hi: float
    lo: float

    def boundary(self, b: float) -> float:
        """The first axis's true threshold (share) with the second at share ``b``: a*(b), negative past b0."""
        r = 1 - (b / self.second) ** self.power
        return float(self.first * math.copysign(abs(r) ** (1 / self.power), r))

    def p(self, level_a, level_b) -> np.ndarray:
        a = np.asarray(level_a) / self.high
        q = (0.5 - self.lo) / (self.hi - self.lo)
        z = -(a - self.boundary(level_b / self.high)) / self.slope + math.log(q / (1 - q))
        return self.lo + (self.hi - self.lo) / (1 + np.exp(-z))


def random_surface(seed: int, high: int = 40) -> Surface:
    rng = np.random.default_rng(seed)
    return Surface(high, float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.2, 0.8)), float(np.exp(rng.uniform(math.log(0.5), math.log(2.0)))),
                   float(np.exp(rng.uniform(math.log(0.02), math.log(0.15)))), float(rng.uniform(0.85, 1.0)), float(rng.uniform(0.0, 0.1)))


def pair_estimate(surface: Surface, seed: int, width: float, budget: int, batch: int = 4, design: str = "adaptive", grid: int = GRID_LEVELS,
                  pair_levels: int = 3) -> dict:
    """A pair map on a synthetic surface as ``stress map --pair`` does it: the second axis alone (the first at rest),
    then one row along the first axis at each of ``row_levels`` of the second, each row by ``estimate`` with ``design``.
    Returns the second axis alone's and each row's boundary with the true threshold there."""
    rng = np.random.default_rng(seed)

    def sampler(p: Callable[[int], float]) -> Callable[[int, int], tuple[int, int]]:
        def draw(level: int, n: int) -> tuple[int, int]:
            s = int(rng.binomial(n, p(level)))
            return s, n - s
        return draw

    alone = estimate(surface.high, sampler(lambda lv: surface.p(0, lv)), width, budget, batch, design, grid)
    rows = [(m, estimate(surface.high, sampler(lambda lv, m=m: surface.p(lv, m)), width, budget, batch, design, grid))
            for m in row_levels(alone.threshold(), surface.high, pair_levels)]
    return {"alone": (alone, surface.second), "rows": [(b, surface.boundary(m / surface.high)) for m, b in rows]}


def _score(b: Boundary, truth: float, width: float) -> dict:
    """One estimate against the truth; a truth before the estimator's lowest threshold (the scene fails at rest, well
    before the axis) counts as that lowest one: the most the estimator can say."""
    t = b.threshold()
    truth = max(truth, float(THETAS[0]))
    return {"episodes": b.episodes, "reached": t["width"] <= width, "covered": t["low"] <= truth <= t["high"],
            "error": abs(t["median"] - truth), "width": t["width"]}


def pair_benchmark(seeds, widths=(0.2, 0.1), budget: int = 300, batch: int = 4, high: int = 40, grid: int = GRID_LEVELS, pair_levels: int = 3) -> dict:
    """Per target width, per part of a pair map (the second axis alone, then each row of the first axis, mildest
    first) and design: episodes to reach the width on the surfaces of ``seeds`` (both designs see the same surface,
    each its own outcomes), how often within ``budget`` per part, coverage and error against the true boundary; and
    the whole pair's episodes. The grid design's rows are chosen by its own second-axis estimate, as in a real map."""
    designs = {"adaptive": ("adaptive", GRID_LEVELS), f"grid {grid}": ("grid", grid)}
    out = {}
    for width in widths:
        parts: dict[str, dict[str, list]] = {d: {} for d in designs}
        totals: dict[str, list] = {d: [] for d in designs}
        for seed in seeds:
            surface = random_surface(seed, high)
            for name, (design, count) in designs.items():
                found = pair_estimate(surface, 20_000 + seed, width, budget, batch, design, count, pair_levels)
                scored = {"second axis alone": _score(*found["alone"], width),
                          **{_row_name(i, len(found["rows"])): _score(b, truth, width) for i, (b, truth) in enumerate(found["rows"])}}
                for part, score in scored.items():
                    parts[name].setdefault(part, []).append(score)
                totals[name].append({"episodes": sum(s["episodes"] for s in scored.values()), "reached": all(s["reached"] for s in scored.values())})
        summary = {}
        for name in designs:
            summary[name] = {part: _summary(rs) for part, rs in parts[name].items()}
            eps = np.array([t["episodes"] for t in totals[name]])
            summary[name]["whole pair"] = {"n": len(eps), "median_episodes": float(np.median(eps)), "mean_episodes": float(eps.mean()),
                                     "reached": sum(t["reached"] for t in totals[name])}
        adaptive, fixed = designs
        summary["paired"] = _paired(totals[adaptive], totals[fixed])
        summary["paired_parts"] = {part: _paired(parts[adaptive][part], parts[fixed][part]) for part in parts[adaptive]}
        out[f"{width:g}"] = summary
    return {"seeds": list(seeds), "widths": list(widths), "budget": budget, "batch": batch, "high": high, "grid": grid, "pair_levels": pair_levels,
            "designs": list(designs), "by_width": out}


def _row_name(i: int, rows: int) -> str:
    """A pair's row by its level of the second axis: 'row 0 (rest)', 'row 1', ..., 'row 2 (top)'."""
    return f"row {i}" + (" (rest)" if i == 0 else " (top)" if i == rows - 1 else "")


def pair_parts(pair_levels: int) -> list[str]:
    """The parts of ``pair_benchmark``'s summary in the order a pair map runs them, then the whole pair."""
    return ["second axis alone", *(_row_name(i, pair_levels) for i in range(pair_levels)), "whole pair"]


def _paired(adaptive: list[dict], grid: list[dict]) -> dict:
    """Episodes of both designs on the cases where both reached the width: totals and the median saving per case."""
    both = [(x["episodes"], y["episodes"]) for x, y in zip(adaptive, grid) if x["reached"] and y["reached"]]
    return {"n": len(both), "median_saved": float(np.median([1 - x / y for x, y in both])) if both else None,
            "adaptive_episodes": int(sum(x for x, _ in both)), "grid_episodes": int(sum(y for _, y in both))}


def _summary(rs: list[dict]) -> dict:
    eps = np.array([r["episodes"] for r in rs])
    return {"n": len(rs), "median_episodes": float(np.median(eps)), "mean_episodes": float(eps.mean()), "reached": sum(r["reached"] for r in rs),
            "coverage": float(np.mean([r["covered"] for r in rs])), "median_error": float(np.median([r["error"] for r in rs])),
            "median_width": float(np.median([r["width"] for r in rs]))}
