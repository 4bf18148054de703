"""Model-layer dynamics: surface friction, object mass and joint damping, scaled on the MjModel.

Three multiplicative factors, re-applied after every reset on top of the pristine model (all three fields
are in ``RESTORED_MODEL_FIELDS``, so nothing leaks into the next episode):

* ``friction_scale`` multiplies ``geom_friction`` (sliding, torsional, rolling) of every geom. MuJoCo gives
  a contact the larger friction of its two geoms (no geom priorities or explicit pairs in LIBERO scenes),
  so scaling every geom scales every contact's friction by exactly this factor; scaling the objects alone
  could not lower the friction of an object on the table (the table's value would win).
* ``mass_scale`` multiplies ``body_mass`` and ``body_inertia`` of every body of the task's movable objects
  (those on a free joint): same shape, denser material, so the inertia tensor scales with the mass.
* ``damping_scale`` multiplies ``dof_damping`` of every joint: the robot's arm and fingers, the objects'
  free joints, articulated fixtures (drawers, knobs).

Sampled with the family's own generator (robosuite's DynamicsModder draws from the global RNG whatever
random state it is given, so it is not used). ``mj_setConst`` is deliberately not called: it overwrites
``qpos`` with ``qpos0`` (the init state set just before would be lost) and rewrites model fields that are
not restored at reset (``body_subtreemass``, ``body_invweight0``, ``dof_invweight0``, ``dof_M0``,
``stat.meanmass``), which would leak into later episodes. The dynamics (mass matrix, bias and gravity
forces) read ``body_mass``/``body_inertia`` directly at every step; only the constraint solver's
regularisation keeps the pristine inverse weights, a second-order effect on contact softness.

Severity levels: each quantity is multiplied or divided (the direction drawn from the seed, separately
per quantity) by the level's factor:

======  ======
level   factor
======  ======
1       1.25
2       1.6
3       2.5
4       4
5       6
======  ======

Realisation: the factor actually written, read back from the model (ratio to the pristine values over
the affected entries), with the number of geoms, bodies and joints touched and the objects' total mass
before and after (kg).
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from perturbations.base import Perturbation, register
from stress.core.errors import NotRealised
from stress.core.spec import Layer
from perturbations.space import ParamSpace, Real

FACTOR = {1: 1.25, 2: 1.6, 3: 2.5, 4: 4.0, 5: 6.0}
SCALES = ("friction_scale", "mass_scale", "damping_scale")
SCALE_RANGE = (0.05, 20.0)


def _object_bodies(env) -> np.ndarray:
    """Bodies of the task's movable objects: every body whose root carries a free joint."""
    model = env.model
    roots = {
        int(model.body_rootid[body])
        for body in env.object_bodies.values()
        if any(model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE for j in range(model.njnt) if model.jnt_bodyid[j] == model.body_rootid[body])
    }
    return np.array([b for b in range(model.nbody) if int(model.body_rootid[b]) in roots], dtype=int)


def _ratio(after: np.ndarray, before: np.ndarray) -> float | None:
    """Median after/before over the entries that are non-zero before (None when there are none)."""
    mask = before != 0
    return float(np.median(after[mask] / before[mask])) if mask.any() else None


@register
class Dynamics(Perturbation):
    name = "dynamics"
    layer = Layer.MODEL
    needs = frozenset({"object_bodies"})
    summary = "friction of every contact, mass (and inertia) of the task objects, damping of every joint, scaled"
    severity_meaning = "friction, object mass and joint damping each x or / 1.25, 1.6, 2.5, 4, 6 (direction drawn per quantity)"
    # factors on a 0.1 grid: 0.1-0.9 below 1 (severity 1-5 divides by 1.25-6 = 0.8-0.17), 1.1-20 above
    space = ParamSpace(
        Real("friction_scale", *SCALE_RANGE, "", "factor on geom_friction of every geom (= every contact's friction)", identity=1.0, step=0.1),
        Real("mass_scale", *SCALE_RANGE, "", "factor on body_mass and body_inertia of the task's movable objects", identity=1.0, step=0.1),
        Real("damping_scale", *SCALE_RANGE, "", "factor on dof_damping of every joint (robot, objects, fixtures)", identity=1.0, step=0.1),
    )

    def __init__(self):
        self._before: dict[str, np.ndarray] | None = None  # pristine values, kept by apply_model for check

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        signs = rng.choice([-1.0, 1.0], size=len(SCALES))
        return {key: float(FACTOR[severity] ** sign) for key, sign in zip(SCALES, signs)}

    def is_identity(self, params: dict[str, Any]) -> bool:
        return all(float(params.get(key, 1.0)) == 1.0 for key in SCALES)

    def apply_model(self, env, params: dict[str, Any]) -> None:
        if self.is_identity(params):
            return
        model = env.model
        bodies = _object_bodies(env)
        # the env restored the pristine fields just before this hook: keep them for the realisation check
        self._before = {
            "geom_friction": model.geom_friction.copy(),
            "body_mass": model.body_mass[bodies].copy(),
            "body_inertia": model.body_inertia[bodies].copy(),
            "dof_damping": model.dof_damping.copy(),
            "bodies": bodies,
        }
        model.geom_friction[:] *= float(params.get("friction_scale", 1.0))
        mass = float(params.get("mass_scale", 1.0))
        model.body_mass[bodies] *= mass
        model.body_inertia[bodies] *= mass
        model.dof_damping[:] *= float(params.get("damping_scale", 1.0))

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        if self.is_identity(params):
            return {}
        if self._before is None:
            raise NotRealised("dynamics: apply_model did not run")
        model, before = env.model, self._before
        bodies = before["bodies"]
        realised = {
            "friction_scale": _ratio(model.geom_friction, before["geom_friction"]),
            "mass_scale": _ratio(model.body_mass[bodies], before["body_mass"]),
            "inertia_scale": _ratio(model.body_inertia[bodies], before["body_inertia"]),
            "damping_scale": _ratio(model.dof_damping, before["dof_damping"]),
        }
        # a quantity the scene does not have (ALOHA's joints carry no passive damping: its position actuators
        # do the holding) cannot be scaled: recorded as not applicable; the perturbation must change the rest
        base = {"friction_scale": before["geom_friction"], "mass_scale": before["body_mass"], "damping_scale": before["dof_damping"]}
        not_applicable = [key for key in SCALES if float(params.get(key, 1.0)) != 1.0 and not np.any(base[key])]
        for key in SCALES:
            wanted = float(params.get(key, 1.0))
            got = realised[key]
            if wanted != 1.0 and key not in not_applicable and (got is None or not np.isclose(got, wanted, rtol=1e-9)):
                raise NotRealised(f"dynamics {key} {wanted:g} realised as {got!r}")
        if not_applicable and all(float(params.get(key, 1.0)) == 1.0 or key in not_applicable for key in SCALES):
            raise NotRealised(f"dynamics changed nothing: this scene has no {', '.join(k.removesuffix('_scale') for k in not_applicable)} to scale")
        return {
            **({"not_applicable": not_applicable} if not_applicable else {}),
            **{key: value for key, value in realised.items() if value is not None},
            "n_geoms": int(np.count_nonzero(before["geom_friction"][:, 0])),
            "n_object_bodies": len(bodies),
            "n_damped_joints": int(np.count_nonzero(before["dof_damping"])),
            "object_mass_kg": [float(before["body_mass"].sum()), float(model.body_mass[bodies].sum())],
        }
