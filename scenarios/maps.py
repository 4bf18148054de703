"""A failure-boundary map as a run folder: for each policy setting, family and axis, the success probability along
the axis (each visited level with its Wilson interval) and the 50 % threshold with its 95 % interval, found
adaptively (``scenarios.boundary``) on real episodes.

A map run is an ordinary run folder (``stress.store``) whose manifest says ``"kind": "map"`` and holds the
map's configuration; its specs are added as the estimator asks for them, so ``stress show``, ``stress replay
RUN KEY`` and DuckDB read it like any run. ``map.json`` holds the curves. Everything is a deterministic function
of the configuration and the stored outcomes, so ``--resume`` re-walks the same levels and runs only what is
missing.

The episodes of a curve: level ``l`` of an axis moves that axis ``l`` grid steps from rest toward its severe
end, every other axis of the family at rest (a family searched by severity: level ``l`` is severity ``l``, level
0 the clean scene). The ``r``-th episode at a level runs init state ``inits[r % len(inits)]`` with policy seed
``seeds[r // len(inits)]``; a level whose pairs are used up gives no more episodes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

import numpy as np

from scenarios.boundary import Boundary, estimate
from scenarios.evaluate import PolicySetting
from scenarios.searchspace import axis_rest, perturbation_specs, suite_space
from stress.core.errors import UserError
from stress.core.spec import ScenarioSpec
from stress.measurement.groundtruth import Measurement
from stress.policies import policy_class
from stress.policies.planning import check_aggregation
from stress.store import RunStore

FORMAT = "stress-map/1"


def curves_of(config: dict):
    """(family, axis, side, high) for every mapped axis: the side toward which the axis goes furthest from rest
    (positive, mild -> severe, when it has one)."""
    space = suite_space(config["suite"], [config["task"]], config["inits"], config["families"], [config["camera"]], config["seeds"], 1, config.get("limits"))
    wanted = set(config.get("axes") or [])
    known = {f"{n}.{a.name}" for n in space.names for a in space.families[n]}
    unknown = sorted(wanted - known)
    if unknown:
        raise UserError(f"--axes {unknown[0]!r} names no axis of the mapped families; valid: {', '.join(sorted(known))}")
    out = []
    for name in space.names:
        for a in space.families[name]:
            if wanted and f"{name}.{a.name}" not in wanted:
                continue
            rest = axis_rest(a)
            side = 1 if a.high > rest else -1
            high = a.high - rest if side > 0 else rest - a.low
            if high >= 1:
                out.append((name, a, side, high))
    if not out:
        raise UserError(f"the families {', '.join(space.names)} have no axis to map; valid: families with a searchable axis or a severity")
    return space, out


def check_config(config: dict):
    space, curves = curves_of(config)
    policy = policy_class(config["policy"])
    for mode in config["modes"]:
        if mode not in policy.modes:
            raise UserError(f"policy {config['policy']!r} has no {mode!r} mode; valid: {', '.join(policy.modes)}")
    if "planning" in config["modes"]:
        check_aggregation(config["aggregation"])
    if not 0 < config["width"] < 1.4:
        raise UserError(f"--width {config['width']!r} invalid; valid: a share of the axis in (0, 1.4), e.g. 0.2")
    for key, low in (("budget", 1), ("batch", 1), ("workers", 1)):
        if not isinstance(config[key], int) or config[key] < low:
            raise UserError(f"--{key} {config[key]!r} invalid; valid: an integer >= {low}")
    return space, curves


def start(out, config: dict) -> RunStore:
    check_config(config)
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S") + "-map"
    return RunStore.create(out, run_id, [], {**config, "kind": "map"})


def is_map(store: RunStore) -> bool:
    return store.manifest.get("config", {}).get("kind") == "map"


def level_spec(space, setting: PolicySetting, mode: str, name: str, axis, side: int, level: int, repeat: int) -> ScenarioSpec | None:
    """The ``repeat``-th episode at ``level`` of an axis, or None when the level's init states x seeds are used up."""
    n_inits = len(space.inits)
    if repeat >= n_inits * len(space.seeds):
        return None
    point = {"context": {"task": 0, "init": repeat % n_inits, "camera": 0, "seed": repeat // n_inits}, "families": {}}
    if name in space.severity_families:
        if level:
            point["families"][name] = {"severity": level}
    else:
        point["families"][name] = {a.name: axis_rest(a) for a in space.families[name]}
        point["families"][name][axis.name] = axis_rest(axis) + side * level
    return setting.spec(space, point, mode, perturbation_specs(space, point))


def axis_values(space, name: str, axis, side: int, high: int) -> list:
    """The parameter value at each level 0..high (what the picture's x axis reads)."""
    if name in space.severity_families:
        return list(range(high + 1))
    return [axis.value(axis_rest(axis) + side * level) for level in range(high + 1)]


def run(store: RunStore, runner, on_episode: Callable | None = None) -> dict[str, Any]:
    """Run (or continue) the map stored in ``store`` with ``runner``; returns the map (written to ``map.json``)."""
    config = store.manifest["config"]
    space, axes = check_config(config)
    measurement = Measurement("none", 0)
    curves, episodes_run = [], 0
    for mode in config["modes"]:
        setting = PolicySetting(config["policy"], mode, config["candidates"], config["aggregation"], config.get("max_steps"),
                                tuple((config.get("policy_options") or {}).items()), config.get("image_size", 128))
        for name, axis, side, high in axes:
            issued: dict[int, int] = {}
            invalid = [0]

            def draw(level: int, n: int) -> tuple[int, int]:
                nonlocal episodes_run
                specs = []
                for _ in range(n):
                    spec = level_spec(space, setting, mode, name, axis, side, level, issued.get(level, 0))
                    if spec is None:
                        break
                    issued[level] = issued.get(level, 0) + 1
                    specs.append(spec)
                if not specs:
                    return 0, 0
                done = store.done_keys()
                store.add_specs(specs)
                runner.run(specs, store, on_episode, measurement)
                episodes_run += sum(1 for s in {s.key for s in specs} if s not in done)
                rows = store.query("SELECT success, error FROM episodes WHERE episode_key IN (SELECT unnest(?))", [[s.key for s in specs]])
                invalid[0] += sum(1 for r in rows if r["error"])
                wins = sum(1 for r in rows if not r["error"] and r["success"])
                return wins, sum(1 for r in rows if not r["error"]) - wins

            b = estimate(high, draw, config["width"], config["budget"], config["batch"])
            curves.append(curve_record(space, mode, name, axis, side, high, b, invalid[0], config))
    report = {"format": FORMAT, "task": config["task"], "suite": config["suite"], "policy": config["policy"], "modes": config["modes"],
              "width": config["width"], "budget": config["budget"], "curves": curves, "episodes_run": episodes_run,
              "episodes": sum(c["episodes"] + c["invalid"] for c in curves), "comparison": compare_settings(curves)}
    store.write_json("map.json", report)
    store.consolidate()
    return report


def curve_record(space, mode: str, name: str, axis, side: int, high: int, b: Boundary, invalid: int, config: dict) -> dict:
    t = b.threshold()
    values = axis_values(space, name, axis, side, high)
    stopped = "width" if t["width"] <= config["width"] else "budget" if b.episodes >= config["budget"] else "exhausted"
    return {"mode": mode, "family": name, "axis": axis.name, "side": "+" if side > 0 else "-", "high": high, "unit": getattr(axis, "unit", ""),
            "values": [v if isinstance(v, (int, float, str)) else str(v) for v in values], "threshold": t,
            "threshold_value": interpolate(values, t["median_index"]), "interval_values": [interpolate(values, t["low_index"]), interpolate(values, t["high_index"])],
            "levels": b.curve(), "fitted": b.fitted(), "episodes": b.episodes, "invalid": invalid, "stopped": stopped}


def interpolate(values: list, index: float):
    """The parameter value at a fractional level (clamped to the axis; None for a non-numeric axis)."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    i = min(max(index, 0.0), len(values) - 1.0)
    lo = int(np.floor(i))
    hi = min(lo + 1, len(values) - 1)
    return float(values[lo] + (values[hi] - values[lo]) * (i - lo))


def compare_settings(curves: list[dict]) -> list[dict]:
    """Per axis mapped in two settings (direct and best-of-N): their thresholds and whether the intervals part."""
    by_axis: dict[tuple, dict] = {}
    for c in curves:
        by_axis.setdefault((c["family"], c["axis"]), {})[c["mode"]] = c
    out = []
    for (name, axis), modes in by_axis.items():
        if len(modes) < 2:
            continue
        (m1, c1), (m2, c2) = list(modes.items())[:2]
        t1, t2 = c1["threshold"], c2["threshold"]
        out.append({"family": name, "axis": axis, "first": m1, "second": m2, "first_threshold": t1["median"], "second_threshold": t2["median"],
                    "difference": t2["median"] - t1["median"], "apart": t1["high"] < t2["low"] or t2["high"] < t1["low"]})
    return out
