"""Properties a search tries to break: small functions of an episode's stored rows.

A property names the *variants* of a scenario it needs (each one episode), and gets them as
:class:`Episode` (its ``episodes.parquet`` row and its ``decisions.parquet`` rows). It returns a
:class:`Verdict`: whether the property is violated and a graded ``score``, the robustness value of
falsification tools: > 0 holds, <= 0 violated, and the smaller, the closer to (or deeper into) a violation,
so samplers can be guided by near misses.

Variants:
    ``scenario``  the scenario in the search's mode (``--mode``, direct by default)
    ``direct``    the scenario, direct policy          ``planning``  the scenario, best-of-N planner
    ``clean``     the same init state and policy seed, no perturbation, in the search's mode

Adding a property is one function (in your own file, loaded with ``stress search --properties FILE``)::

    from stress import Verdict, margin, register_property as register

    @register("fast_success", variants=("scenario",), doc="solves the task in under half its step budget")
    def fast_success(episodes):
        e = episodes["scenario"]
        score = 0.5 - e.row["steps"] / e.row["max_steps"] if e.row["success"] else margin(e.row)
        return Verdict(violated=score <= 0, score=score)

A package of your own declares its properties (made with ``declare``, same arguments) in the
``stress.properties`` entry points instead.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from perturbations.base import registry
from stress.core.errors import UserError
from stress.core.registry import Registry

VARIANTS = ("scenario", "direct", "planning", "clean")
REQUIREMENTS = ("planning", "values", "futures", "expert", "visual_only")


@dataclass(frozen=True)
class Verdict:
    violated: bool
    score: float  # > 0 holds, <= 0 violated; graded
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    row: dict[str, Any]
    decisions: list[dict[str, Any]]

    @property
    def executed(self) -> list[dict[str, Any]]:
        """The executed decision rows (candidate -1), in step order."""
        return sorted((d for d in self.decisions if d["candidate"] == -1), key=lambda d: d["step"])


@dataclass(frozen=True)
class Property:
    name: str
    doc: str
    variants: tuple[str, ...]
    requires: tuple[str, ...]
    check: Callable[[dict[str, Episode]], Verdict]
    subject: str = "scenario"  # the variant whose failure signature names the violation's mode


# the properties, sorted by name; plug-ins add theirs through the "stress.properties" entry points (a Property
# each, made with ``declare``)
PROPERTIES = Registry("property", "stress.properties", sort=True)


def declare(name: str, variants: tuple[str, ...], doc: str, requires: tuple[str, ...] = (), subject: str | None = None):
    """Decorator turning a check function into a :class:`Property` (not registered: what a plug-in's entry point names)."""
    bad = [v for v in variants if v not in VARIANTS] + [r for r in requires if r not in REQUIREMENTS]
    if bad:
        raise ValueError(f"property {name!r}: unknown variant or requirement {bad[0]!r}; valid: {', '.join(VARIANTS + REQUIREMENTS)}")
    return lambda fn: Property(name, doc, tuple(variants), tuple(requires), fn, subject or variants[-1])


def register(name: str, variants: tuple[str, ...], doc: str, requires: tuple[str, ...] = (), subject: str | None = None):
    """Decorator adding a property to the registry (see the module docstring); the function stays as it is."""
    def wrap(fn):
        PROPERTIES.register(name, declare(name, variants, doc, requires, subject)(fn))
        return fn

    return wrap


def properties() -> dict[str, Property]:
    return dict(PROPERTIES.items())


def get(name: str) -> Property:
    return PROPERTIES.get(name)


def load_file(path: Path) -> None:
    """Import a user's file of ``@register`` functions (once per process: a search checks its configuration twice)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"properties file {str(path)!r} not found")
    name = f"stress_user_properties_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UserError(f"properties file {str(path)!r} failed to load: {type(exc).__name__}: {exc}") from None
    sys.modules[name] = module


def check_supported(prop: Property, policy_cls, families: list) -> None:
    """A property the policy (or the families) cannot support is a usage error."""
    modes, predicts = policy_cls.modes, "planning" in policy_cls.modes  # backends with a planner predict values and futures
    if "planning" in prop.requires and "planning" not in modes:
        raise UserError(f"property {prop.name} needs a policy with a planning mode; {policy_cls.name!r} has {', '.join(modes)} (valid: reference)")
    for need in ("values", "futures"):
        if need in prop.requires and not predicts:
            raise UserError(f"property {prop.name} needs a policy that predicts {need}; {policy_cls.name!r} does not (valid: reference)")
    if "expert" in prop.requires and policy_cls.name != "expert":
        raise UserError(f"property {prop.name} is a self-check with the privileged expert; got policy {policy_cls.name!r} (valid: expert)")
    if "visual_only" in prop.requires:
        physical = [f.name for f in families if not f.keeps_physics()]
        if physical:
            raise UserError(f"property {prop.name} searches visual-only families; {physical[0]!r} changes physics "
                            f"(valid: {', '.join(_visual_families())})")


def _visual_families() -> list[str]:
    return [n for n, cls in registry().items() if cls.keeps_physics()]


# --- graded pieces ------------------------------------------------------------------------------------
def margin(row: dict[str, Any]) -> float:
    """An episode's success margin in [-1, 1]: solved -> the share of the step budget left (> 0, a fast
    success is far from failing); failed -> progress - 1 (< 0, a near miss is close to 0)."""
    if row["success"]:
        return max(0.01, 1.0 - row["steps"] / max(1, row["max_steps"]))
    return min(-0.01, (row.get("progress") or 0.0) - 1.0)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


# --- the built-in properties --------------------------------------------------------------------------
VALUE_THRESHOLD = 0.5  # decision-time value above which a failed episode counts as over-confident
PSNR_MARGIN_DB = 1.0  # how much worse than copying the current frame the predicted future may be


@register("succeeds", ("scenario",), "the policy solves the scenario (score: step budget left, or progress when it fails)")
def succeeds(episodes):
    row = episodes["scenario"].row
    return Verdict(not row["success"], margin(row), {"progress": row.get("progress"), "steps": row["steps"]})


@register("planning_not_worse", ("direct", "planning"), "best-of-N does not fail where the direct policy succeeds (best-of-N amplification)",
          requires=("planning",), subject="planning")
def planning_not_worse(episodes):
    direct, planning = episodes["direct"].row, episodes["planning"].row
    # (direct succeeds) -> (planning succeeds), graded as max(-margin_direct, margin_planning)
    score = max(-margin(direct), margin(planning))
    return Verdict(bool(direct["success"] and not planning["success"]), score,
                   {"direct_success": bool(direct["success"]), "planning_success": bool(planning["success"])})


@register("value_not_overconfident", ("scenario",), f"a failed episode's mean decision-time value stays below {VALUE_THRESHOLD} (value over-estimation)",
          requires=("values",))
def value_not_overconfident(episodes):
    e = episodes["scenario"]
    value = _mean(d["pred_value"] for d in e.executed)
    if value is None:
        return Verdict(False, 1.0, {"mean_value": None})
    # (fails) -> (mean value < threshold)
    score = max(margin(e.row), VALUE_THRESHOLD - value)
    return Verdict(bool(not e.row["success"] and value >= VALUE_THRESHOLD), score, {"mean_value": value})


@register("world_model_beats_copy", ("scenario",), f"predicted futures are not worse than copying the current frame by more than {PSNR_MARGIN_DB} dB PSNR",
          requires=("futures",))
def world_model_beats_copy(episodes):
    e = episodes["scenario"]
    gap = _mean(d["future_psnr"] - d["baseline_psnr"] for d in e.executed if d.get("future_psnr") is not None and d.get("baseline_psnr") is not None)
    if gap is None:
        return Verdict(False, 1.0, {"psnr_gap_db": None})
    score = (gap + PSNR_MARGIN_DB) / 10.0  # dB -> roughly the scale of the other scores
    return Verdict(score <= 0, score, {"psnr_gap_db": gap})


@register("robust_if_clean_solved", ("clean", "scenario"), "a scenario whose clean twin is solved is solved under the perturbation (conditional robustness)")
def robust_if_clean_solved(episodes):
    clean, perturbed = episodes["clean"].row, episodes["scenario"].row
    score = max(-margin(clean), margin(perturbed))
    return Verdict(bool(clean["success"] and not perturbed["success"]), score, {"clean_success": bool(clean["success"])})


@register("physics_preserved", ("clean", "scenario"), "with the expert, a visual-only family leaves the outcome unchanged (a self-check of the suite)",
          requires=("expert", "visual_only"))
def physics_preserved(episodes):
    clean, perturbed = episodes["clean"].row, episodes["scenario"].row
    same = bool(clean["success"]) == bool(perturbed["success"]) and clean["steps"] == perturbed["steps"]
    # graded by how far the step counts drifted (they must match exactly)
    score = 1.0 / (1.0 + abs(clean["steps"] - perturbed["steps"])) if same else -1.0
    return Verdict(not same, score, {"clean_steps": clean["steps"], "steps": perturbed["steps"]})
