"""The planted-failure benchmark: the search's own code on a synthetic episode function whose failure
regions, thresholds and modes are known, so search quality is measured in seconds without a simulator.

The space mimics a real one (two tasks, 50 init states, four policy seeds; five families with grids like
their declarations). Three planted modes, each monotone toward the severe end of its axes, as
perturbation failures are:

=================  =========================================================  ================
mode               region                                                     signature
=================  =========================================================  ================
occlusion          ``area_fraction`` index >= 30 and ``anchor`` index >= 1    never_grasped
dynamics           ``friction_scale`` index <= -14                            dropped
mid_chunk_push     ``speed_mps`` index >= 28 and ``step`` index >= 10         collision
=================  =========================================================  ================

The other axes and the families ``lighting`` and ``sensor_noise`` change nothing. The graded score is the
normalised distance to the nearest region (1 when no planted family is perturbed), negative inside.
Under uniform sampling about 14 % of scenarios violate.
"""

from __future__ import annotations

import statistics
from typing import Any


from scenarios.properties import Verdict
from scenarios.search import Evaluation, Search
from scenarios.searchspace import GridAxis, SearchSpace

A = GridAxis
FAMILIES = {
    "occlusion": (A("area_fraction", 0, 50), A("aspect", -10, 10), A("anchor", 0, 1), A("fill", 0, 2)),
    "dynamics": (A("friction_scale", -20, 20), A("mass_scale", -20, 20), A("damping_scale", -20, 20)),
    "mid_chunk_push": (A("speed_mps", 0, 40), A("step", 0, 15), A("direction_deg", 0, 35), A("chunk", 0, 20)),
    "lighting": (A("diffuse_scale", -20, 20), A("ambient", 0, 20), A("tilt_deg", 0, 18)),
    "sensor_noise": (A("gaussian_std", 0, 50), A("jpeg_quality", 0, 99)),
}
# mode -> (family, {axis: threshold index}, signature); a region is every axis at or beyond its threshold
MODES = {
    "occlusion": ("occlusion", {"area_fraction": 30, "anchor": 1}, "never_grasped"),
    "dynamics": ("dynamics", {"friction_scale": -14}, "dropped"),
    "push": ("mid_chunk_push", {"speed_mps": 28, "step": 10}, "collision"),
}


def planted_space() -> SearchSpace:
    return SearchSpace("planted", (0, 1), tuple(range(50)), FAMILIES, ("both",), (0, 1, 2, 3), max_families=2)


def _spans(family: str) -> dict[str, int]:
    return {a.name: a.high - a.low for a in FAMILIES[family]}


def verdict(point: dict) -> tuple[Verdict, str | None]:
    """The planted property: violated inside any region; score = distance to the nearest region."""
    best, signature = 1.0, None
    for family, thresholds, sig in MODES.values():
        indices = point["families"].get(family)
        if indices is None:
            continue
        spans = _spans(family)
        # per axis: how far short of its threshold in units of the axis span; at the threshold half a step inside
        gaps = [((t - indices[a]) if t > 0 else (indices[a] - t)) - 0.5 for a, t in thresholds.items()]
        distance = max(g / spans[a] for g, a in zip(gaps, thresholds))
        if distance <= 0 and (signature is None or distance < best):
            signature = sig
        best = min(best, distance)
    return Verdict(best <= 0, float(best)), signature


class PlantedEvaluator:
    """Evaluates points with :func:`verdict`; each scenario counts as one episode."""

    def __init__(self):
        self.episodes = 0

    def evaluate(self, points: list[dict]) -> list[Evaluation]:
        out = []
        for point in points:
            self.episodes += 1
            v, signature = verdict(point)
            out.append(Evaluation(point, v, signature if v.violated else "success", [], 1))
        return out

    def replay(self, point: dict, times: int, tag: str) -> list[bool]:
        return [verdict(point)[0].violated for _ in range(times)]


def planted_thresholds_recovered(finding: dict) -> bool:
    """Whether a shrunk finding is exactly its planted region's corner: that family alone, each threshold
    axis exactly at its threshold, every other axis at rest."""
    families = finding["shrunk"]["point"]["families"]
    for family, thresholds, _ in MODES.values():
        if list(families) == [family]:
            expected = {a.name: thresholds.get(a.name, 0) for a in FAMILIES[family]}
            return families[family] == expected
    return False


def benchmark(samplers=("random", "halton", "ce", "bandit"), seeds: int = 20, budget: int = 100, shrinker: str = "greedy", first_seed: int = 0) -> dict[str, Any]:
    """Every sampler over ``seeds`` seeds on the planted space: violations per 100, evaluations to the
    first violation, planted modes found, thresholds recovered after shrinking, shrink cost, 1-minimality."""
    out = {}
    for name in samplers:
        per_seed = []
        for seed in range(first_seed, first_seed + seeds):
            search = Search(planted_space(), "planted", PlantedEvaluator(), sampler=name, budget=budget, seed=seed, max_findings=len(MODES), shrinker=shrinker)
            result = search.run()
            curve = result["report"]["runs"]["search"]
            findings = result["findings"]
            per_seed.append({
                "violations_per_100": curve["violations_per_100"],
                "first_violation": curve["first_violation"] or budget + 1,
                "modes_found": len({m.split(" x ")[0] for m in curve["modes"]}),
                "recovered": sum(planted_thresholds_recovered(f) for f in findings), "findings": len(findings),
                "one_minimal": sum(f["one_minimal"] for f in findings),
                "shrink_evaluations": [f["shrink_evaluations"] for f in findings],
                "original_fields": [f["fields"]["original"] for f in findings],
            })
        shrink_costs = [c for s in per_seed for c in s["shrink_evaluations"]]
        six = [c for s in per_seed for c, n in zip(s["shrink_evaluations"], s["original_fields"]) if n >= 6]
        out[name] = {
            "seeds": seeds, "budget": budget,
            "violations_per_100": statistics.mean(s["violations_per_100"] for s in per_seed),
            "median_first_violation": statistics.median(s["first_violation"] for s in per_seed),
            "all_modes_found": sum(s["modes_found"] == len(MODES) for s in per_seed),
            "mean_modes_found": statistics.mean(s["modes_found"] for s in per_seed),
            "findings": sum(s["findings"] for s in per_seed),
            "thresholds_recovered": sum(s["recovered"] for s in per_seed),
            "one_minimal": sum(s["one_minimal"] for s in per_seed),
            "median_shrink_evaluations": statistics.median(shrink_costs) if shrink_costs else None,
            "max_shrink_evaluations": max(shrink_costs) if shrink_costs else None,
            "median_shrink_evaluations_6_fields": statistics.median(six) if six else None,
            "max_shrink_evaluations_6_fields": max(six) if six else None,
        }
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(benchmark(), indent=2))
