"""The planted-failure benchmark: the search's own code on synthetic episode functions whose failure
regions are known, so search quality is measured in seconds without a simulator.

The space mimics a real one (two tasks, 50 init states, four policy seeds; five families with grids like
their declarations). A *landscape* is drawn from a seed (:func:`landscape`): four failure regions, each
of a different kind, on families and axes drawn at random, so that no prior about where failures lie
("more severe is worse") can pass for learning:

===============  ==========================================================================  ==============
kind             region (on an axis of span M, one side of a two-sided axis)                  under uniform
===============  ==========================================================================  ==============
``severe``       one or two axes at or beyond a threshold at 55-80 % of M (monotone)           ~ 3-9 %
``pocket``       an interior interval of 20-30 % of M centred at 30-70 %                       ~ 6-9 %
``mild``         an interval from 3-15 % of M, 25 % wide: fails near the identity, not at it   ~ 7 %
``band``         a narrow interval of 8-12 % of M anywhere in 20-90 %                          ~ 2-4 %
``rare``         two axes of one family each in an interval of 20 % of M                       ~ 1 %
``interaction``  two families, one axis each beyond 40-60 % of M: either alone holds          ~ 1-2 %
===============  ==========================================================================  ==============

(Under uniform: the chance a uniform point of the space lands in the region, at ``max_families`` 2.)
Every region has its own failure signature. The verdict is exact (inside a region or not); the graded
score is the normalised distance to the nearest region (1 from a region none of whose families is
perturbed; a family not perturbed counts as at rest; inside: minus the depth) plus Gaussian noise of standard deviation ``NOISE``, deterministic per (landscape,
scenario) so that a scenario asked twice answers the same, as the store makes a real search do. The noise
is a stand-in (0.1 on a score in [-1, 1]); the reference model's score noise is not measured yet.

:func:`benchmark` scores samplers on landscapes drawn from seeds given by the caller: tune on one range,
report on another (``stress bench --planted --tune-seeds 0-19 --report-seeds 100-119``). Modes are counted
two ways: by region (how many planted regions the proposals hit) and as a real search records them (a
region's signature x the families of the violating proposal, before shrinking), with the share of regions
hit by a proposal that perturbs exactly the region's own families (the cause named, not buried in a pair).
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np

from scenarios.properties import Verdict
from scenarios.search import Evaluation, Search
from scenarios.searchspace import GridAxis, SearchSpace, axis_rest, family_label, point_key

A = GridAxis
FAMILIES = {
    "occlusion": (A("area_fraction", 0, 50), A("aspect", -10, 10), A("anchor", 0, 1), A("fill", 0, 2)),
    "dynamics": (A("friction_scale", -20, 20), A("mass_scale", -20, 20), A("damping_scale", -20, 20)),
    "mid_chunk_push": (A("speed_mps", 0, 40), A("step", 0, 15), A("direction_deg", 0, 35), A("chunk", 0, 20)),
    "lighting": (A("diffuse_scale", -20, 20), A("ambient", 0, 20), A("tilt_deg", 0, 18)),
    "sensor_noise": (A("gaussian_std", 0, 50), A("jpeg_quality", 0, 99)),
}
KINDS = ("severe", "pocket", "mild", "band", "rare", "interaction")
SIGNATURES = ("collision", "never_grasped", "dropped", "wrong_place", "timeout_near_goal", "timeout")
MODES_PER_LANDSCAPE = 4
NOISE = 0.1  # standard deviation of the graded score's noise (a stand-in: see the module docstring)


@dataclass(frozen=True)
class Region:
    """A planted failure region: every listed (family, axis) inside its closed index interval [lo, hi]."""

    name: str  # "kind:index"
    kind: str
    signature: str
    bounds: tuple[tuple[str, str, int, int], ...]  # (family, axis, lo, hi) grid indices

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(sorted({f for f, _, _, _ in self.bounds}))

    def corner(self) -> dict:
        """The region's point nearest the identity: its families alone, each bounded axis at the bound
        nearest rest, every other axis at rest (what exact shrinking must return)."""
        out = {f: {a.name: axis_rest(a) for a in FAMILIES[f]} for f in self.families}
        for f, axis, lo, hi in self.bounds:
            out[f][axis] = lo if lo > 0 else hi
        return out

    def distance(self, families: dict) -> float:
        """Normalised distance of a point's families to the region, <= 0 inside (minus the depth); 1 when
        the point perturbs none of its families, else a family not perturbed counts as at rest."""
        if not set(self.families) & set(families):
            return 1.0
        gaps = []
        for f, axis, lo, hi in self.bounds:
            a = next(x for x in FAMILIES[f] if x.name == axis)
            i = families.get(f, {}).get(axis, axis_rest(a))
            gap = max(lo - i, i - hi) - 0.5  # > 0 outside; half a step inside at the boundary
            gaps.append(gap / (a.high - a.low))
        return max(gaps)


def _interval(rng: np.random.Generator, axis: GridAxis, start: float, width: float) -> tuple[int, int]:
    """[lo, hi] at fractions (start, start + width) of the magnitude on one side of the axis (drawn when
    the axis is two-sided), never containing rest, at least two indices wide."""
    negative = axis.low < 0 and (axis.high <= 0 or rng.random() < 0.5)
    span = -axis.low if negative else axis.high
    lo = max(1, int(round(start * span)))
    hi = min(span, max(lo + 1, int(round((start + width) * span))))
    lo = min(lo, hi - 1) if hi > 1 else lo
    return (-hi, -lo) if negative else (lo, hi)


def _wide_axes(family: str) -> list[GridAxis]:
    return [a for a in FAMILIES[family] if max(a.high, -a.low) >= 10]


def landscape(seed: int) -> tuple[Region, ...]:
    """``MODES_PER_LANDSCAPE`` regions of distinct kinds on families and axes drawn from ``seed``."""
    rng = np.random.default_rng([seed, 0x1A4D])
    kinds = [KINDS[i] for i in rng.permutation(len(KINDS))[:MODES_PER_LANDSCAPE]]
    signatures = [SIGNATURES[i] for i in rng.permutation(len(SIGNATURES))]
    names = sorted(FAMILIES)
    regions = []
    for n, kind in enumerate(kinds):
        if kind == "interaction":
            pair = sorted(str(f) for f in rng.choice(names, 2, replace=False))
            bounds = []
            for f in pair:
                axis = _wide_axes(f)[int(rng.integers(len(_wide_axes(f))))]
                start = rng.uniform(0.4, 0.6)
                bounds.append((f, axis.name, *_interval(rng, axis, start, 1.0)))
        else:
            f = str(rng.choice(names))
            axes = _wide_axes(f)
            count = 2 if kind == "rare" or (kind == "severe" and rng.random() < 0.5) else 1
            chosen = [axes[i] for i in rng.choice(len(axes), min(count, len(axes)), replace=False)]
            bounds = []
            for axis in chosen:
                if kind == "severe":
                    start, width = rng.uniform(0.55, 0.8), 1.0
                elif kind == "pocket":
                    width = rng.uniform(0.2, 0.3)
                    start = rng.uniform(0.3, 0.7) - width / 2
                elif kind == "mild":
                    start, width = rng.uniform(0.03, 0.15), 0.25
                elif kind == "band":
                    start, width = rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.12)
                else:  # rare
                    start, width = rng.uniform(0.2, 0.8), 0.2
                bounds.append((f, axis.name, *_interval(rng, axis, start, width)))
        regions.append(Region(f"{kind}:{n}", kind, signatures[n], tuple(bounds)))
    return tuple(regions)


def planted_space() -> SearchSpace:
    return SearchSpace("planted", (0, 1), tuple(range(50)), FAMILIES, ("both",), (0, 1, 2, 3), max_families=2)


def region_of(regions, point: dict) -> Region | None:
    """The region a point violates in (the deepest when several), or None."""
    inside = [(r.distance(point["families"]), r.name, r) for r in regions if r.distance(point["families"]) <= 0]
    return min(inside)[2] if inside else None


def verdict(regions, point: dict, seed: int = 0) -> tuple[Verdict, str | None]:
    """The planted property: violated inside any region; score = distance to the nearest region plus noise
    that never crosses zero (the verdict is the ground truth)."""
    distance = min(r.distance(point["families"]) for r in regions)
    noise_seed = int.from_bytes(hashlib.sha256(f"{seed}:{point_key(point)}".encode()).digest()[:8], "little")
    noisy = distance + NOISE * float(np.random.default_rng(noise_seed).standard_normal())
    region = region_of(regions, point)
    score = min(noisy, -1e-3) if region else max(noisy, 1e-3)
    return Verdict(region is not None, float(score)), region.signature if region else None


class PlantedEvaluator:
    """Evaluates points on the landscape of ``seed``; each scenario counts as one episode."""

    def __init__(self, seed: int = 0, regions=None):
        self.seed = seed
        self.regions = tuple(regions) if regions is not None else landscape(seed)
        self.episodes = 0

    def evaluate(self, points: list[dict]) -> list[Evaluation]:
        out = []
        for point in points:
            self.episodes += 1
            v, signature = verdict(self.regions, point, self.seed)
            out.append(Evaluation(point, v, signature if v.violated else "success", [], 1))
        return out

    def replay(self, point: dict, times: int, tag: str) -> list[bool]:
        return [verdict(self.regions, point, self.seed)[0].violated for _ in range(times)]


def corner_recovered(regions, finding: dict) -> bool:
    """Whether a shrunk finding is exactly a region's corner nearest the identity."""
    families = finding["shrunk"]["point"]["families"]
    return any(families == r.corner() for r in regions)


def _first(curve: list[int], budget: int) -> int:
    return next((i + 1 for i, c in enumerate(curve) if c), budget + 1)


def run_one(sampler: str, seed: int, budget: int = 100, shrinker: str = "greedy") -> dict:
    """One search on the landscape of ``seed`` (the search's seed too): what a table row averages."""
    evaluator = PlantedEvaluator(seed)
    search = Search(planted_space(), "planted", evaluator, sampler=sampler, budget=budget, seed=seed, max_findings=MODES_PER_LANDSCAPE, shrinker=shrinker)
    findings = search.run()["findings"]
    rows = [r for r in search.log if r["run"] == "search" and r["phase"] == "sample"]
    hits = [region_of(evaluator.regions, r["point"]) for r in rows]
    found_at, recorded, own = {}, set(), set()
    for i, (region, row) in enumerate(zip(hits, rows)):
        if region is not None:
            found_at.setdefault(region.name, i + 1)
            # as the real search names a mode: its signature (one per region here) x the families the proposal perturbed
            recorded.add((region.name, family_label(row["point"])))
            if set(row["point"]["families"]) == set(region.families):
                own.add(region.name)  # the cause named: hit by a proposal perturbing exactly the region's families
    return {
        "hits": [h.name if h else None for h in hits], "found_at": found_at, "kinds": {r.name: r.kind for r in evaluator.regions},
        "recorded_modes": len(recorded), "own_set": len(own) / len(evaluator.regions),
        "violations_per_100": 100.0 * sum(h is not None for h in hits) / max(1, len(hits)),
        "first_violation": _first([h is not None for h in hits], budget),
        "findings": len(findings), "exact": sum(corner_recovered(evaluator.regions, f) for f in findings),
        "one_minimal": sum(f["one_minimal"] for f in findings),
        "shrink_evaluations": [f["shrink_evaluations"] for f in findings],
    }


def summarise(runs: list[dict], budgets=(25, 50, 100)) -> dict[str, Any]:
    """A table row over one sampler's runs: distinct planted modes found by each budget (mean share of the
    landscape's modes), the modes as a real search records them (distinct region x family set of the
    violating proposals, mean count per landscape) and the share of regions hit under exactly their own
    families, violations per 100, median evaluations to the first violation, exact corners."""
    shrink_costs = [c for r in runs for c in r["shrink_evaluations"]]
    row = {f"modes_{b}": statistics.mean(sum(at <= b for at in r["found_at"].values()) / MODES_PER_LANDSCAPE for r in runs) for b in budgets}
    row.update({
        "seeds": len(runs),
        "recorded_modes": statistics.mean(r["recorded_modes"] for r in runs), "own_set": statistics.mean(r["own_set"] for r in runs),
        "violations_per_100": statistics.mean(r["violations_per_100"] for r in runs),
        "median_first_violation": statistics.median(r["first_violation"] for r in runs),
        "findings": sum(r["findings"] for r in runs), "exact": sum(r["exact"] for r in runs), "one_minimal": sum(r["one_minimal"] for r in runs),
        "median_shrink_evaluations": statistics.median(shrink_costs) if shrink_costs else None,
        "max_shrink_evaluations": max(shrink_costs) if shrink_costs else None,
    })
    for kind in KINDS:
        planted = [(name, r) for r in runs for name, k in r["kinds"].items() if k == kind]
        row[f"found_{kind}"] = sum(name in r["found_at"] for name, r in planted) / len(planted) if planted else None
    return row


def benchmark(samplers, seeds, budget: int = 100, shrinker: str = "greedy") -> dict[str, dict]:
    """Every sampler on the landscapes of ``seeds`` (each seed: its landscape and the search's seed)."""
    return {name: summarise([run_one(name, s, budget, shrinker) for s in seeds], tuple(b for b in (25, 50, 100) if b <= budget)) for name in samplers}


if __name__ == "__main__":
    import json

    print(json.dumps(benchmark(("random", "ce"), range(100, 120)), indent=2))
