"""Simulator lighting (model layer): the scene's own lights made brighter or darker, moved, re-aimed,
tinted warm or cool, or one of them switched off.

Only the per-light model fields are edited (``light_diffuse``, ``light_ambient``, ``light_specular``,
``light_pos``, ``light_dir``, ``light_active``), which the env restores from a pristine copy at every
reset, so nothing leaks into the next episode. The headlight (``model.vis.headlight``) is left alone on
purpose: the env does not restore ``vis`` at reset (nor inside ``env.applier.clean_model``), so a headlight edit
would leak into the following unperturbed episodes and be invisible to the realisation check; a
headlight knob becomes safe once the env restores ``vis.headlight`` like the other model fields.
``ambient`` adds ambient colour to the scene lights instead; being spot lights, their ambient term is
attenuated by the spot cone like the rest of their light, so it brightens what they illuminate.

LIBERO scenes have two spot lights (``light1``, ``light2``, 4 m above the floor, pointing down).
Severity levels, each a stronger change of every light (the sign of the brightness change and the
warm/cool side are drawn from the family's generator):

    level  brightness (diffuse, specular)  ambient   re-aim   move     colour temperature   light off
    1      x0.80 or x1.25                  +0.00      3 deg   0.15 m   5500 or 7500 K       no
    2      x0.65 or x1.50                  +0.05      6 deg   0.30 m   4500 or 9000 K       no
    3      x0.50 or x1.80                  +0.10      9 deg   0.45 m   3500 or 12000 K      no
    4      x0.35 or x2.20                  +0.15     12 deg   0.60 m   2800 or 16000 K      no
    5      x0.20 or x2.60                  +0.20     15 deg   0.75 m   2000 or 25000 K      yes

(ambient is added only when brightening; 6500 K is neutral white). Re-aiming stays within 15 degrees
because the lights are spots (cutoff 45 deg, exponent 10): their whole contribution, ambient included,
falls off as cos^10 of the angle to the table, so a few degrees already brighten or darken it visibly
and ~50 deg leaves only the headlight. In LIBERO scenes only ``light1`` reaches the table (the table is
outside ``light2``'s cone): switching ``light1`` off leaves the headlight alone, switching ``light2`` off
changes nothing by itself, which is why "light off" comes only at level 5 on top of the other changes.

Realisation: the mean absolute pixel change (0-255) of each camera against the clean render of the same
state; a non-identity sample that changes both cameras by less than 0.5 is not realised.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from perturbations.base import Perturbation, register, require_image_change
from stress.core.errors import InvalidScene
from stress.core.spec import Layer
from perturbations.space import Choice, ParamSpace, Real, Vector

NEUTRAL_K = 6500.0
# level -> (dim factor, bright factor, ambient added when brightening, tilt deg, shift m, warm K, cool K, light off)
LEVELS = {
    1: (0.80, 1.25, 0.00, 3.0, 0.15, 5500.0, 7500.0, False),
    2: (0.65, 1.50, 0.05, 6.0, 0.30, 4500.0, 9000.0, False),
    3: (0.50, 1.80, 0.10, 9.0, 0.45, 3500.0, 12000.0, False),
    4: (0.35, 2.20, 0.15, 12.0, 0.60, 2800.0, 16000.0, False),
    5: (0.20, 2.60, 0.20, 15.0, 0.75, 2000.0, 25000.0, True),
}
MAX_SHIFT = 3.0  # m, each axis
SPACE = ParamSpace(
    Real("diffuse_scale", 0.0, 5.0, "", "factor on every light's diffuse colour", identity=1.0, step=0.05),
    Real("specular_scale", 0.0, 5.0, "", "factor on every light's specular colour", identity=1.0, step=0.05),
    Real("ambient", 0.0, 1.0, "", "ambient colour added to every light (grey level)", identity=0.0, step=0.01),
    Real("tilt_deg", 0.0, 90.0, "deg", "angle every light direction is tilted away from its own", identity=0.0, step=1.0),
    Real("azimuth_deg", 0.0, 360.0, "deg", "compass direction of that tilt (0 = +x, 90 = +y)", identity=0.0, step=10.0),
    Vector("position_shift", 3, -MAX_SHIFT, MAX_SHIFT, "m", "[dx, dy, dz] added to every light position", identity=0.0, step=0.05),
    Real("colour_temperature", 1000.0, 40000.0, "K", "Planckian colour of the diffuse light (6500 = neutral)", identity=NEUTRAL_K, step=500.0),
    # LIBERO scenes have 2 or 3 lights; an index the scene lacks is an invalid scene. Not searched: only
    # light1 (index 0) reaches the table, so the order of severity depends on the scene
    Choice("light_off", (None, 0, 1, 2), "index of the light switched off (0 = light1) or null", searchable=False),
)
IDENTITY = SPACE.defaults()  # every parameter's default is its identity


def blackbody_rgb(kelvin: float) -> np.ndarray:
    """Approximate RGB (0-1) of a black body at ``kelvin`` (Tanner Helland's fit of the Planckian locus)."""
    t = kelvin / 100.0
    red = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    green = 99.4708025861 * np.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
    blue = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * np.log(t - 10) - 305.0447927307)
    return np.clip(np.array([red, green, blue]), 0.0, 255.0) / 255.0


def temperature_tint(kelvin: float) -> np.ndarray:
    """Per-channel factor (max 1) turning a neutral (6500 K) light into one of ``kelvin``."""
    tint = blackbody_rgb(kelvin) / blackbody_rgb(NEUTRAL_K)
    return tint / tint.max()


def _rotate(vec: np.ndarray, axis: np.ndarray, angle_rad: float) -> np.ndarray:
    quat, out = np.zeros(4), np.zeros(3)
    mujoco.mju_axisAngle2Quat(quat, axis, angle_rad)
    mujoco.mju_rotVecQuat(out, vec, quat)
    return out


@register
class Lighting(Perturbation):
    name = "lighting"
    layer = Layer.MODEL
    needs = frozenset({"lights"})
    preserves_physics = True
    summary = "scene lights rescaled, re-aimed, moved, tinted (colour temperature) or one switched off"
    severity_meaning = (
        "every light: brightness x0.8|1.25, x0.65|1.5, x0.5|1.8, x0.35|2.2, x0.2|2.6; re-aimed 3/6/9/12/15 deg; "
        "moved 0.15/0.3/0.45/0.6/0.75 m; 5500|7500, 4500|9000, 3500|12000, 2800|16000, 2000|25000 K; one light off at 5"
    )
    space = SPACE

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        dim, bright, ambient, tilt, shift, warm, cool, off = LEVELS[severity]
        brighter = bool(rng.integers(2))
        direction = rng.normal(size=3)
        return {
            "diffuse_scale": bright if brighter else dim,
            "specular_scale": bright if brighter else dim,
            "ambient": ambient if brighter else 0.0,
            "tilt_deg": tilt,
            "azimuth_deg": float(rng.uniform(0.0, 360.0)),
            "position_shift": [float(v) for v in shift * direction / np.linalg.norm(direction)],
            "colour_temperature": warm if rng.integers(2) else cool,
            "light_off": int(rng.integers(2)) if off else None,
        }

    def identity_params(self) -> dict[str, Any]:
        return dict(IDENTITY)

    def is_identity(self, params: dict[str, Any]) -> bool:
        return {**IDENTITY, **params} == IDENTITY

    def apply_model(self, env, params: dict[str, Any]) -> None:
        p = {**IDENTITY, **params}
        model = env.model  # fields below are restored to pristine before this hook runs
        off = p["light_off"]
        if off is not None and off >= model.nlight:
            raise InvalidScene(f"lighting light_off {off} but the scene has {model.nlight} light(s); valid: 0-{model.nlight - 1}")
        model.light_diffuse[:] = np.clip(model.light_diffuse * p["diffuse_scale"] * temperature_tint(p["colour_temperature"]), 0.0, None)
        model.light_specular[:] *= p["specular_scale"]
        model.light_ambient[:] += p["ambient"]
        model.light_pos[:] += np.asarray(p["position_shift"], dtype=float)
        if p["tilt_deg"]:
            azimuth = np.deg2rad(p["azimuth_deg"])
            # tilting towards the azimuth = rotating about the horizontal axis perpendicular to it
            axis = np.array([np.sin(azimuth), -np.cos(azimuth), 0.0])
            for i in range(model.nlight):
                model.light_dir[i] = _rotate(model.light_dir[i], axis, np.deg2rad(p["tilt_deg"]))
        if off is not None:
            model.light_active[off] = 0

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        if self.is_identity(params):
            return {}
        return require_image_change(env, self.name)
