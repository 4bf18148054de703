"""The space a search explores, on integer grids, and how a point in it becomes ScenarioSpecs.

A *point* is a plain JSON-able dict::

    {"context": {"task": 1, "init": 7, "camera": 0, "seed": 2},          # indices into the space's lists
     "families": {"occlusion": {"area_fraction": 23, "aspect": -4}, ...}}  # grid index per searched axis

Every family's axes come from its own parameter-space declaration (``perturbations.space``): grid index 0
is the family's identity (or default) value, positive indices go mild -> severe, negative ones the other
way where a parameter is two-sided. A family that declares no searchable axis is searched by severity
(one axis ``severity``, 1-5, parameters sampled from (severity, seed) as in ``stress run``).

Samplers work in the unit cube: :meth:`SearchSpace.decode` maps ``u`` in [0, 1)^d to a point, so random,
Halton/Sobol and cross-entropy share one mapping. The context (task, init state, camera, policy seed) is
what the scenario *is*; shrinking keeps it and minimises the families and their magnitudes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from perturbations.base import family
from stress.core.errors import UserError, choice_error
from stress.core.spec import PerturbationSpec, perturbation_seed
from stress.envs import check_init, check_task, simulator_of

CONTEXT = ("task", "init", "camera", "seed")


@dataclass(frozen=True)
class GridAxis:
    """An axis given by a function of its grid index (the severity fallback and synthetic spaces)."""

    name: str
    low: int
    high: int
    unit: str = ""
    values: Callable[[int], Any] | None = field(default=None, compare=False)

    def value(self, index: int):
        return index if self.values is None else self.values(index)


def point_key(point: dict) -> str:
    return json.dumps(point, sort_keys=True, separators=(",", ":"))


def family_label(point: dict) -> str:
    return "+".join(sorted(point["families"])) or "clean"


def axis_rest(axis) -> int:
    """The grid index nearest the identity that the axis allows (0 unless the axis excludes it)."""
    return min(max(0, axis.low), axis.high)


@dataclass
class SearchSpace:
    """Suite, tasks, init states, cameras and policy seeds (the context) x compositions of up to
    ``max_families`` families over their axes."""

    suite: str
    tasks: tuple[int, ...]
    inits: tuple[int, ...]
    families: dict[str, tuple]  # family name -> its axes (objects with name, low, high, value(index))
    cameras: tuple[str, ...] = ("both",)
    seeds: tuple[int, ...] = (0,)
    max_families: int = 2
    severity_families: frozenset = frozenset()  # searched by severity (no declared axis)

    def __post_init__(self):
        if not self.families:
            raise UserError("the search space has no family; valid: --families with at least one perturbation family")
        for what, values in (("tasks", self.tasks), ("init states", self.inits), ("cameras", self.cameras), ("policy seeds", self.seeds)):
            if not values:
                raise UserError(f"the search space has no {what}; give at least one")
        if not isinstance(self.max_families, int) or not 1 <= self.max_families:
            raise UserError(f"--max-families {self.max_families!r} invalid; valid: 1 or more")
        self.max_families = min(self.max_families, len(self.families))
        self.names = sorted(self.families)

    # --- the unit-cube mapping ---------------------------------------------------------------------
    @property
    def dims(self) -> int:
        return len(CONTEXT) + 1 + self.max_families + sum(len(a) for a in self.families.values())

    def dim_names(self) -> list[str]:
        return [*CONTEXT, "n_families", *(f"family_{i}" for i in range(self.max_families)),
                *(f"{n}.{a.name}" for n in self.names for a in self.families[n])]

    def decode(self, u) -> dict:
        u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0 - 1e-12)
        pick = lambda x, n: int(x * n)  # noqa: E731  [0, 1) -> 0..n-1
        context = {name: pick(u[i], len(values)) for i, (name, values) in enumerate(zip(CONTEXT, (self.tasks, self.inits, self.cameras, self.seeds)))}
        at = len(CONTEXT)
        count = 1 + pick(u[at], self.max_families)
        remaining, chosen = list(self.names), []
        for i in range(count):
            chosen.append(remaining.pop(pick(u[at + 1 + i], len(remaining))))
        at += 1 + self.max_families
        families = {}
        for name in self.names:
            axes = self.families[name]
            if name in chosen:
                families[name] = {a.name: a.low + pick(u[at + j], a.high - a.low + 1) for j, a in enumerate(axes)}
            at += len(axes)
        return {"context": context, "families": dict(sorted(families.items()))}

    def severe_draw(self, rng: np.random.Generator) -> np.ndarray:
        """A unit-cube draw whose axes lie in the severe half of their range (both ends of a two-sided
        axis): perturbation failures are mostly monotone in severity, so a search starts there."""
        u = rng.random(self.dims)
        at = len(CONTEXT) + 1 + self.max_families
        for name in self.names:
            for a in self.families[name]:
                x = rng.random()
                if a.low < 0 < a.high:  # outer half of a side chosen by the span on each side
                    neg = -a.low / (a.high - a.low)
                    u[at] = x * neg / 2 if rng.random() < 0.5 else 1 - x * (1 - neg) / 2
                else:
                    u[at] = 0.5 + x / 2
                at += 1
        return u

    def context_values(self, point: dict) -> dict:
        c = point["context"]
        return {"task": self.tasks[c["task"]], "init": self.inits[c["init"]], "camera": self.cameras[c["camera"]], "seed": self.seeds[c["seed"]]}

    def fields(self, point: dict) -> int:
        """How many things the scenario changes: active families plus their axes away from rest."""
        return sum(1 + sum(1 for a in self.families[n] if point["families"][n][a.name] != axis_rest(a)) for n in point["families"])

    def describe(self, point: dict) -> str:
        """'occlusion(area_fraction=0.2, fill=noise)+dynamics(severity=3)' with values, not indices."""
        parts = []
        for name, indices in point["families"].items():
            axes = {a.name: a for a in self.families[name]}
            moved = [f"{k}={_fmt(axes[k].value(i))}" for k, i in indices.items() if i != axis_rest(axes[k])]
            parts.append(f"{name}({', '.join(moved)})")
        return "+".join(parts) or "clean"

    def to_dict(self) -> dict:
        return {"suite": self.suite, "tasks": list(self.tasks), "inits": list(self.inits), "families": self.names, "cameras": list(self.cameras),
                "seeds": list(self.seeds), "max_families": self.max_families,
                "axes": {n: [{"name": a.name, "low": a.low, "high": a.high, "unit": getattr(a, "unit", "")} for a in self.families[n]] for n in self.names}}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


# --- the real space: LIBERO scenes and the perturbation families' declarations -----------------------
SEVERITY_AXIS = GridAxis("severity", 1, 5, "level")


def family_axes(name: str, simulator_cameras: tuple[str, ...]) -> tuple[tuple, bool]:
    """A family's search axes on a simulator with these cameras and whether it is searched by severity (no
    declared axis)."""
    fam = family(name)
    space = fam.space_for(simulator_cameras) if getattr(fam, "space", None) is not None else None
    axes = tuple(space.axes()) if space is not None else ()
    return (axes, False) if axes else ((SEVERITY_AXIS,), True)


def limit_axes(families: dict[str, tuple], limits: dict) -> dict[str, tuple]:
    """Narrow axes to grid-index ranges, ``{"occlusion.area_fraction": [0, 30]}`` (the rest index 0 stays
    inside: a limit that excludes it is an error, since shrinking moves toward it)."""
    if not isinstance(limits, dict):
        raise UserError(f"space field 'limits' must map 'family.axis' to [low, high] grid indices, got {limits!r}")
    out = {name: list(axes) for name, axes in families.items()}
    for key, bounds in limits.items():
        name, _, axis_name = str(key).partition(".")
        axes = {a.name: i for i, a in enumerate(out.get(name, []))}
        if axis_name not in axes:
            valid = ", ".join(f"{n}.{a.name}" for n, list_ in out.items() for a in list_)
            raise UserError(f"limit {key!r} names no searched axis; valid: {valid}")
        axis = out[name][axes[axis_name]]
        ok = isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
        if not ok or not axis.low <= bounds[0] <= axis_rest(axis) <= bounds[1] <= axis.high:
            raise UserError(f"limit {key} {bounds!r} invalid; valid: [low, high] grid indices with {axis.low} <= low <= {axis_rest(axis)} <= high <= {axis.high}")
        out[name][axes[axis_name]] = dataclasses.replace(axis, low=bounds[0], high=bounds[1])
    return {name: tuple(axes) for name, axes in out.items()}


def suite_space(suite: str, tasks, inits, family_names, cameras=("both",), seeds=(0,), max_families: int = 2, limits: dict | None = None) -> SearchSpace:
    sim = simulator_of(suite)
    for task in tasks:
        check_task(suite, task)
        for init in inits:
            check_init(suite, task, init)
    targets = (*sim.cameras, "both")
    for camera in cameras:
        if camera not in targets:
            raise choice_error("camera", camera, targets)
    families, by_severity = {}, set()
    for name in family_names:
        family(name)  # unknown name -> UserError listing the valid ones
        families[name], severity = family_axes(name, sim.cameras)
        if severity:
            by_severity.add(name)
    families = limit_axes(families, limits or {})
    return SearchSpace(suite, tuple(tasks), tuple(inits), families, tuple(cameras), tuple(seeds), max_families, frozenset(by_severity))


def perturbation_specs(space: SearchSpace, point: dict) -> tuple:
    """The point's perturbations as PerturbationSpecs: explicit parameters from the grid, or a severity."""
    cameras = simulator_of(space.suite).cameras
    ctx = space.context_values(point)
    out = []
    for name, indices in point["families"].items():
        seed = perturbation_seed(0, ctx["init"])  # as `stress run` at seed 0: the scene's sampled parts follow the init state
        if name in space.severity_families:
            out.append(PerturbationSpec(name, int(indices["severity"]), seed, ctx["camera"]))
            continue
        fam = family(name)
        params = fam.space_for(cameras).params_from_axes(indices)
        out.append(PerturbationSpec(name, grid_severity(space.families[name], indices), seed, ctx["camera"], params))
    return tuple(out)


def grid_severity(axes, indices: dict) -> int:
    """The label of a searched perturbation in the severity column: its axis furthest from rest, on 0-5."""
    level = 0.0
    for a in axes:
        i = indices.get(a.name, axis_rest(a))
        span = a.high if i > 0 else -a.low if i < 0 else 0
        if span:
            level = max(level, abs(i) / span)
    return int(math.ceil(5 * level)) if level else 0
