"""A failure-boundary map as a run folder: for each policy setting, family and axis, the success probability along
the axis (each visited level with its Wilson interval) and the 50 % threshold with its 95 % interval, found
adaptively (``scenarios.boundary``) on real episodes; for a pair of axes, the threshold along the first at a few
levels of the second (a 2-D boundary, each row by the same 1-D estimator).

A map run is an ordinary run folder (``stress.store``) whose manifest says ``"kind": "map"`` and holds the
map's configuration; its specs are added as the estimator asks for them, so ``stress show``, ``stress replay
RUN KEY`` and DuckDB read it like any run. ``map.json`` holds the curves. Everything is a deterministic function
of the configuration and the stored outcomes, so ``--resume`` re-walks the same levels and runs only what is
missing.

The episodes of a curve: level ``l`` of an axis moves that axis ``l`` grid steps from rest toward one end (the
far end, or both ends one after the other with ``sides: both``), every other axis of the family at rest (a
family searched by severity: level ``l`` is severity ``l``, level 0 the clean scene). A pair's row at level
``m`` of its second axis adds that move to every episode of the first axis's curve; at ``m = 0`` the row is the
first axis's own curve (the same episodes). The ``r``-th episode at a level runs init state
``inits[r % len(inits)]`` with policy seed ``seeds[r // len(inits)]``; a level whose pairs are used up gives no
more episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import numpy as np

from scenarios.boundary import GRID_LEVELS, Boundary, design_name, estimate, grid_levels, row_levels
from scenarios.evaluate import PolicySetting
from scenarios.searchspace import axis_rest, perturbation_specs, suite_space
from stress.core.errors import UserError
from stress.core.spec import ScenarioSpec
from stress.measurement.groundtruth import Measurement
from stress.policies import policy_class
from stress.policies.planning import check_aggregation
from stress.store import RunStore

FORMAT = "stress-map/1"
SIDES = ("far", "both")
GRID_MAX = 50  # levels of a fixed grid (--grid): more is a sweep, not a baseline


@dataclass(frozen=True)
class Walk:
    """One direction along one axis: ``side`` (+1 or -1) from rest, ``high`` grid steps to its end."""

    family: str
    axis: Any
    side: int
    high: int

    @property
    def name(self) -> str:
        return f"{self.family}.{self.axis.name}"

    def index(self, level: int) -> int:
        return axis_rest(self.axis) + self.side * level


def walks_of(space, name: str, axis, sides: str = "far") -> list[Walk]:
    """The walks mapped along an axis: toward the end where it goes furthest from rest (positive, mild -> severe,
    when it has one), or toward both ends of a two-sided axis (``sides='both'``: the positive side first). A family
    searched by severity: level l is severity l, 0 (the clean scene) to the highest."""
    if name in space.severity_families:
        return [Walk(name, axis, 1, axis.high)]
    rest = axis_rest(axis)
    up, down = Walk(name, axis, 1, axis.high - rest), Walk(name, axis, -1, rest - axis.low)
    far = up if axis.high > rest else down
    chosen = [far] if sides == "far" else [up, down]
    return [w for w in chosen if w.high >= 1]


def map_families(config: dict) -> list[str]:
    """The families a map's episodes perturb: the mapped ones, then those only a pair names."""
    names = list(config["families"])
    for pair in config.get("pairs") or []:
        names += [a.partition(".")[0] for a in pair if a.partition(".")[0] not in names]
    return list(dict.fromkeys(names))


def curves_of(config: dict):
    """The space, the walks mapped one axis at a time, and the pairs (first axis's walk, second axis's walk)."""
    names = map_families(config)
    if not names:
        raise UserError("nothing to map: give --families, --axes or --pair")
    space = suite_space(config["suite"], [config["task"]], config["inits"], names, [config["camera"]], config["seeds"], 1, config.get("limits"))
    known = {f"{n}.{a.name}": (n, a) for n in space.names for a in space.families[n]}
    mapped = {k: v for k, v in known.items() if v[0] in config["families"]}
    wanted = set(config.get("axes") or [])
    unknown = sorted(wanted - set(mapped))
    if unknown:
        raise UserError(f"--axes {unknown[0]!r} names no axis of the mapped families; valid: {', '.join(sorted(mapped))}")
    walks = [w for key, (n, a) in mapped.items() if not wanted or key in wanted for w in walks_of(space, n, a, config.get("sides", "far"))]
    pairs = []
    for pair in config.get("pairs") or []:
        bad = next((a for a in pair if a not in known), None)
        if bad is not None or len(pair) != 2 or pair[0] == pair[1]:
            raise UserError(f"--pair {','.join(pair)!r} invalid; valid: two different axes FAMILY.AXIS,FAMILY.AXIS of "
                            f"{', '.join(sorted(known))}")
        ends = [walks_of(space, *known[a]) for a in pair]
        if not all(ends):
            raise UserError(f"--pair {','.join(pair)!r} invalid: an axis without a step from rest; valid: {', '.join(sorted(known))}")
        pairs.append((ends[0][0], ends[1][0]))
    if not walks and not pairs:
        raise UserError(f"the families {', '.join(space.names)} have no axis to map; valid: families with a searchable axis or a severity")
    return space, walks, pairs


def check_config(config: dict):
    if config.get("sides", "far") not in SIDES:
        raise UserError(f"--sides {config['sides']!r} invalid; valid: {', '.join(SIDES)}")
    if not isinstance(config.get("pair_levels", 3), int) or config.get("pair_levels", 3) < 2:
        raise UserError(f"--pair-levels {config['pair_levels']!r} invalid; valid: an integer >= 2")
    space, walks, pairs = curves_of(config)
    policy = policy_class(config["policy"])
    for mode in config["modes"]:
        if mode not in policy.modes:
            raise UserError(f"policy {config['policy']!r} has no {mode!r} mode; valid: {', '.join(policy.modes)}")
    if "planning" in config["modes"]:
        check_aggregation(config["aggregation"])
    grid = config.get("grid")
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or not 2 <= grid <= GRID_MAX):
        raise UserError(f"--grid {grid!r} invalid; valid: an integer 2-{GRID_MAX} (levels per axis), or no --grid for the adaptive design")
    if not 0 < config["width"] < 1.4:
        raise UserError(f"--width {config['width']!r} invalid; valid: a share of the axis in (0, 1.4), e.g. 0.2")
    for key, low in (("budget", 1), ("batch", 1), ("workers", 1)):
        if not isinstance(config[key], int) or config[key] < low:
            raise UserError(f"--{key} {config[key]!r} invalid; valid: an integer >= {low}")
    return space, walks, pairs


def start(out, config: dict) -> RunStore:
    check_config(config)
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S") + "-map"
    return RunStore.create(out, run_id, [], {**config, "kind": "map"})


def is_map(store: RunStore) -> bool:
    return store.manifest.get("config", {}).get("kind") == "map"


def level_spec(space, setting: PolicySetting, mode: str, walk: Walk, level: int, repeat: int, fixed: tuple = ()) -> ScenarioSpec | None:
    """The ``repeat``-th episode at ``level`` of a walk (plus each ``(walk, level)`` of ``fixed`` away from rest: a
    pair's second axis), or None when the level's init states x seeds are used up."""
    n_inits = len(space.inits)
    if repeat >= n_inits * len(space.seeds):
        return None
    point = {"context": {"task": 0, "init": repeat % n_inits, "camera": 0, "seed": repeat // n_inits}, "families": {}}
    for i, (w, lv) in enumerate(((walk, level), *fixed)):
        if i and not lv:
            continue  # a second axis at rest: the first axis's own episodes
        if w.family in space.severity_families:
            if lv:
                point["families"][w.family] = {"severity": lv}
        else:
            moved = point["families"].setdefault(w.family, {a.name: axis_rest(a) for a in space.families[w.family]})
            moved[w.axis.name] = w.index(lv)
    return setting.spec(space, point, mode, perturbation_specs(space, point))


def axis_values(space, walk: Walk) -> list:
    """The parameter value at each level 0..high (what the picture's x axis reads)."""
    if walk.family in space.severity_families:
        return list(range(walk.high + 1))
    return [walk.axis.value(walk.index(level)) for level in range(walk.high + 1)]


def outer_levels(second: dict, count: int) -> list[int]:
    """A pair's levels of its second axis from the second axis alone's curve record (``boundary.row_levels``)."""
    return row_levels(second["threshold"], second["high"], count)


class _Mapper:
    """Runs curves on one store: each a 1-D estimate whose draws become episodes (resumable: done ones are read)."""

    def __init__(self, store: RunStore, runner, on_episode, space, config: dict):
        self.store, self.runner, self.on_episode, self.space, self.config = store, runner, on_episode, space, config
        self.measurement = Measurement("none", 0)
        self.episodes_run = 0
        self.keys: set[str] = set()  # every episode a curve asked for (a pair's first row shares its first axis's)

    def curve(self, setting: PolicySetting, mode: str, walk: Walk, fixed: tuple = ()) -> tuple[Boundary, int, dict]:
        """The estimate along ``walk``; (boundary, invalid scenes, level -> episode keys run there)."""
        keys: dict[int, list[str]] = {}
        invalid = [0]

        def draw(level: int, n: int) -> tuple[int, int]:
            specs = []
            for _ in range(n):
                spec = level_spec(self.space, setting, mode, walk, level, len(keys.get(level, [])), fixed)
                if spec is None:
                    break
                keys.setdefault(level, []).append(spec.key)
                self.keys.add(spec.key)
                specs.append(spec)
            if not specs:
                return 0, 0
            done = self.store.done_keys()
            self.store.add_specs(specs)
            self.runner.run(specs, self.store, self.on_episode, self.measurement)
            self.episodes_run += sum(1 for s in {s.key for s in specs} if s not in done)
            rows = self.store.query("SELECT success, error FROM episodes WHERE episode_key IN (SELECT unnest(?))", [[s.key for s in specs]])
            invalid[0] += sum(1 for r in rows if r["error"])
            wins = sum(1 for r in rows if not r["error"] and r["success"])
            return wins, sum(1 for r in rows if not r["error"]) - wins

        grid = self.config.get("grid")
        b = estimate(walk.high, draw, self.config["width"], self.config["budget"], self.config["batch"],
                     "adaptive" if grid is None else "grid", grid or GRID_LEVELS)
        return b, invalid[0], keys


def run(store: RunStore, runner, on_episode: Callable | None = None) -> dict[str, Any]:
    """Run (or continue) the map stored in ``store`` with ``runner``; returns the map (written to ``map.json``)."""
    config = store.manifest["config"]
    space, walks, pairs = check_config(config)
    mapper = _Mapper(store, runner, on_episode, space, config)
    curves, pair_maps = [], []
    for mode in config["modes"]:
        setting = PolicySetting(config["policy"], mode, config["candidates"], config["aggregation"], config.get("max_steps"),
                                tuple((config.get("policy_options") or {}).items()), config.get("image_size", 128))
        for walk in walks:
            curves.append(curve_record(space, mode, walk, *mapper.curve(setting, mode, walk), config))
        for first, second in pairs:
            alone = next((c for c in curves if (c["mode"], c["family"], c["axis"], c["side"]) == (mode, *_walk_key(second))), None)
            if alone is None:  # the second axis alone, the first at rest: where the rows may stop
                alone = curve_record(space, mode, second, *mapper.curve(setting, mode, second), config)
                curves.append(alone)
            rows = []
            second_values = axis_values(space, second)
            for m in outer_levels(alone, config.get("pair_levels", 3)):
                row = curve_record(space, mode, first, *mapper.curve(setting, mode, first, ((second, m),)), config)
                rows.append({"second_level": m, "second_value": _plain(second_values[m]), **{k: v for k, v in row.items() if k != "values"}})
            pair_maps.append({"mode": mode, "first": walk_record(space, first), "second": walk_record(space, second), "rows": rows,
                              "second_threshold": alone["threshold"]})
    report = {"format": FORMAT, "task": config["task"], "suite": config["suite"], "policy": config["policy"], "modes": config["modes"],
              "design": design_name(config.get("grid")), "width": config["width"], "budget": config["budget"], "curves": curves, "pairs": pair_maps,
              "episodes_run": mapper.episodes_run, "episodes": len(mapper.keys), "comparison": compare_settings(curves)}
    store.write_json("map.json", report)
    store.consolidate()
    return report


def _walk_key(walk: Walk) -> tuple:
    return walk.family, walk.axis.name, "+" if walk.side > 0 else "-"


def walk_record(space, walk: Walk) -> dict:
    family, axis, side = _walk_key(walk)
    return {"family": family, "axis": axis, "side": side, "high": walk.high,
            "unit": getattr(walk.axis, "unit", ""), "values": [_plain(v) for v in axis_values(space, walk)]}


def _plain(value):
    return value if isinstance(value, (int, float, str)) or value is None else str(value)


def curve_record(space, mode: str, walk: Walk, b: Boundary, invalid: int, keys: dict, config: dict) -> dict:
    t = b.threshold()
    values = axis_values(space, walk)
    stopped = "width" if t["width"] <= config["width"] else "budget" if b.episodes >= config["budget"] else "exhausted"
    levels = [{**row, "keys": keys.get(row["level"], [])} for row in b.curve()]
    grid = config.get("grid")
    return {"mode": mode, **walk_record(space, walk), "threshold": t, "design": design_name(grid),
            "grid_levels": grid_levels(walk.high, grid) if grid is not None else None,
            "threshold_value": interpolate(values, t["median_index"]), "interval_values": [interpolate(values, t["low_index"]), interpolate(values, t["high_index"])],
            "levels": levels, "fitted": b.fitted(), "episodes": b.episodes, "invalid": invalid, "stopped": stopped}


def interpolate(values: list, index: float):
    """The parameter value at a fractional level (clamped to the axis; None for a non-numeric axis)."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    i = min(max(index, 0.0), len(values) - 1.0)
    lo = int(np.floor(i))
    hi = min(lo + 1, len(values) - 1)
    return float(values[lo] + (values[hi] - values[lo]) * (i - lo))


def compare_settings(curves: list[dict]) -> list[dict]:
    """Per axis (and side) mapped in two settings (direct and best-of-N): their thresholds and whether the intervals part."""
    by_axis: dict[tuple, dict] = {}
    for c in curves:
        by_axis.setdefault((c["family"], c["axis"], c["side"]), {})[c["mode"]] = c
    out = []
    for (name, axis, side), modes in by_axis.items():
        if len(modes) < 2:
            continue
        (m1, c1), (m2, c2) = list(modes.items())[:2]
        t1, t2 = c1["threshold"], c2["threshold"]
        out.append({"family": name, "axis": axis, "side": side, "first": m1, "second": m2, "first_threshold": t1["median"], "second_threshold": t2["median"],
                    "difference": t2["median"] - t1["median"], "apart": t1["high"] < t2["low"] or t2["high"] < t1["low"]})
    return out
