"""Pixel-layer lighting: brightness, contrast, gamma, cast shadows and glare on the camera images.

Every effect has explicit parameters fixed for the episode and is applied with albumentations' functional
API, so it is identical on every frame (shadows and glare do not jump between frames). Geometry is given in
0-1 image coordinates and sized to the frame, so the same parameters look the same at 128 and 256 px.
Applied in this order: brightness and contrast (albucore ``multiply_add``, the operation behind
``RandomBrightnessContrast``), gamma (``gamma_transform``, behind ``RandomGamma``), shadows
(``add_shadow``, behind ``RandomShadow``), glare (``add_sun_flare_physics_based``, behind
``RandomSunFlare``; its radius is a share of the image side instead of the transform's 400 px default,
which would cover a 128-256 px frame several times over).

Severity levels (each level applies all five effects; the direction, brighter or darker, is drawn from
the seed, and gamma goes the same way as brightness so the two never cancel). Because each level draws
its own direction and clipping saturates, the mean image change grows with severity on average over seeds,
not necessarily for every single seed:

======  ==========  ==============  ================  ==============================  ============
level   brightness  contrast        gamma             shadows (count, darkening)       glare radius
======  ==========  ==============  ================  ==============================  ============
1       +-3 %       x or / 1.08     1.08^(-+1)        1 polygon, 20 %                 6 % of side
2       +-6 %       x or / 1.16     1.16^(-+1)        1 polygon, 30 %                 10 %
3       +-10 %      x or / 1.28     1.28^(-+1)        2 polygons, 40 %                15 %
4       +-15 %      x or / 1.45     1.45^(-+1)        2 polygons, 50 %                21 %
5       +-22 %      x or / 1.70     1.70^(-+1)        3 polygons, 65 %                30 %
======  ==========  ==============  ================  ==============================  ============

Brightness is a share of full scale (255); contrast scales pixel values about mid-grey (127.5).
Pixel perturbations never touch the simulator, so the privileged expert's outcome cannot change.
"""

from __future__ import annotations

from typing import Any

import albucore
import numpy as np
from albumentations.augmentations.pixel.functional import add_shadow, add_sun_flare_physics_based, gamma_transform

from perturbations.base import Layer, Perturbation, register
from stress.errors import UserError

BRIGHTNESS = {1: 0.03, 2: 0.06, 3: 0.10, 4: 0.15, 5: 0.22}
CONTRAST = {1: 1.08, 2: 1.16, 3: 1.28, 4: 1.45, 5: 1.70}
GAMMA = {1: 1.08, 2: 1.16, 3: 1.28, 4: 1.45, 5: 1.70}
SHADOWS = {1: (1, 0.20), 2: (1, 0.30), 3: (2, 0.40), 4: (2, 0.50), 5: (3, 0.65)}  # (count, darkening)
SHADOW_RADIUS = {1: 0.15, 2: 0.17, 3: 0.20, 4: 0.23, 5: 0.26}  # polygon radius, share of the image side
GLARE_RADIUS = {1: 0.06, 2: 0.10, 3: 0.15, 4: 0.21, 5: 0.30}
MID_GREY = 127.5


def _number(params: dict[str, Any], key: str, low: float, high: float, default: float, low_open: bool = False) -> float:
    value = params.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(exclusive)" if low_open else ""
        raise UserError(f"image_lighting {key} {value!r} out of range; valid: {low:g}-{high:g} {bracket}".rstrip())
    return float(value)


def _point(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in value)


@register
class ImageLighting(Perturbation):
    name = "image_lighting"
    layer = Layer.PIXELS
    per_camera = True
    summary = "brightness, contrast, gamma, cast shadows and glare on the camera images, fixed for the episode"
    severity_meaning = (
        "all five effects grow together; brightness +-3/6/10/15/22 % of full scale, contrast and gamma x or / "
        "1.08/1.16/1.28/1.45/1.7, shadows 1/1/2/2/3 polygons darkening 20/30/40/50/65 %, glare radius "
        "6/10/15/21/30 % of the image side"
    )
    parameters = {
        "brightness": "added to every pixel, share of full scale (255), -1..1",
        "contrast": "factor about mid-grey (127.5), 0-4 (1: unchanged)",
        "gamma": "exponent on 0-1 pixel values, 0.1-10 (1: unchanged, < 1 brighter)",
        "shadows": "list of {polygon: [[x, y], ...] (0-1 image coordinates, >= 3 points), intensity: darkening 0-1}",
        "glare": "{centre: [x, y] (0-1), radius: share of the image side 0-1, colour: [r, g, b] 0-255, "
        "ghosts: [[x, y, radius, alpha], ...] flare circles (0-1 coordinates and radius, alpha 0-1)}",
    }

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        light = 1.0 if rng.random() < 0.5 else -1.0  # brighter or darker scene
        contrast_up = rng.random() < 0.5
        count, darkening = SHADOWS[severity]
        shadows = []
        for _ in range(count):
            centre = rng.uniform(0.15, 0.85, size=2)
            n = int(rng.integers(4, 8))
            angles = np.sort(rng.uniform(0.0, 2 * np.pi, size=n))  # sorted: a star-shaped, non-crossing polygon
            radii = SHADOW_RADIUS[severity] * rng.uniform(0.6, 1.0, size=n)
            poly = np.clip(centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None], 0.0, 1.0)
            shadows.append({"polygon": [[round(float(x), 4), round(float(y), 4)] for x, y in poly], "intensity": darkening})
        centre = rng.uniform(0.1, 0.9, size=2)
        direction = rng.uniform(0.0, 2 * np.pi)
        ghosts = []  # flare circles along a line through the light source, as RandomSunFlare places them
        for t in rng.uniform(0.15, 0.6, size=int(rng.integers(3, 6))):
            xy = np.clip(centre + t * np.array([np.cos(direction), np.sin(direction)]), 0.0, 1.0)
            ghosts.append([round(float(xy[0]), 4), round(float(xy[1]), 4), round(float(rng.uniform(0.01, 0.03)), 4), round(float(rng.uniform(0.05, 0.2)), 4)])
        return {
            "brightness": light * BRIGHTNESS[severity],
            "contrast": CONTRAST[severity] if contrast_up else 1.0 / CONTRAST[severity],
            "gamma": GAMMA[severity] ** (-light),
            "shadows": shadows,
            "glare": {
                "centre": [round(float(v), 4) for v in centre],
                "radius": GLARE_RADIUS[severity],
                "colour": [255, int(rng.integers(235, 256)), int(rng.integers(190, 236))],  # warm white
                "ghosts": ghosts,
            },
        }

    def is_identity(self, params: dict[str, Any]) -> bool:
        return (
            float(params.get("brightness", 0.0)) == 0.0
            and float(params.get("contrast", 1.0)) == 1.0
            and float(params.get("gamma", 1.0)) == 1.0
            and not params.get("shadows")
            and not params.get("glare")
        )

    def check_params(self, params: dict[str, Any]) -> None:
        unknown = set(params) - set(self.parameters)
        if unknown:
            raise UserError(f"unknown image_lighting parameter(s) {sorted(unknown)}; valid: {', '.join(self.parameters)}")
        _number(params, "brightness", -1.0, 1.0, 0.0)
        _number(params, "contrast", 0.0, 4.0, 1.0)
        _number(params, "gamma", 0.1, 10.0, 1.0)
        shadows = params.get("shadows", [])
        if not isinstance(shadows, list):
            raise UserError(f"image_lighting shadows {shadows!r} invalid; valid: a list of {{polygon, intensity}}")
        for shadow in shadows:
            polygon = shadow.get("polygon") if isinstance(shadow, dict) else None
            if not (isinstance(polygon, list) and len(polygon) >= 3 and all(_point(p) for p in polygon)):
                raise UserError(f"image_lighting shadow polygon {polygon!r} invalid; valid: >= 3 [x, y] points in 0..1")
            _number(shadow, "intensity", 0.0, 1.0, 0.5)
        glare = params.get("glare")
        if glare is None or glare == {}:
            return
        if not isinstance(glare, dict) or set(glare) - {"centre", "radius", "colour", "ghosts"}:
            raise UserError(f"image_lighting glare {glare!r} invalid; valid: {{centre, radius, colour, ghosts}}")
        if not _point(glare.get("centre")):
            raise UserError(f"image_lighting glare centre {glare.get('centre')!r} invalid; valid: [x, y] in 0..1")
        radius = glare.get("radius")
        if not isinstance(radius, (int, float)) or not 0.0 < radius <= 1.0:
            raise UserError(f"image_lighting glare radius {radius!r} out of range; valid: 0-1 (exclusive of 0)")
        colour = glare.get("colour", [255, 255, 255])
        if not (isinstance(colour, list) and len(colour) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in colour)):
            raise UserError(f"image_lighting glare colour {colour!r} invalid; valid: [r, g, b] integers 0-255")
        for ghost in glare.get("ghosts", []):
            if not (isinstance(ghost, list) and len(ghost) == 4 and all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in ghost)):
                raise UserError(f"image_lighting glare ghost {ghost!r} invalid; valid: [x, y, radius, alpha] each 0..1")

    def apply_pixels(self, image: np.ndarray, camera: str, params: dict[str, Any]) -> np.ndarray:
        if self.is_identity(params):
            return image
        out = image
        contrast, brightness = float(params.get("contrast", 1.0)), float(params.get("brightness", 0.0))
        if contrast != 1.0 or brightness != 0.0:
            # contrast about mid-grey, not about black: brightness and contrast stay separate knobs
            out = albucore.multiply_add(out, contrast, MID_GREY * (1.0 - contrast) + 255.0 * brightness, inplace=False)
        if float(params.get("gamma", 1.0)) != 1.0:
            out = gamma_transform(out, float(params["gamma"]))
        height, width = out.shape[:2]
        scale = np.array([width, height], dtype=np.float64)
        shadows = params.get("shadows") or []
        if shadows:
            polygons = [np.round(np.asarray(s["polygon"]) * (scale - 1)).astype(np.int32) for s in shadows]
            out = add_shadow(out, polygons, np.array([float(s.get("intensity", 0.5)) for s in shadows]))
        glare = params.get("glare")
        if glare:
            side = min(height, width)
            centre = tuple(int(v) for v in np.round(np.asarray(glare["centre"]) * (scale - 1)))
            ghosts = [
                (alpha, tuple(int(v) for v in np.round(np.array([x, y]) * (scale - 1))), max(1, round(r * side)) ** 3, tuple(glare.get("colour", [255] * 3)))
                for x, y, r, alpha in glare.get("ghosts", [])
            ]  # the physics-based flare takes each ghost's radius cubed, as RandomSunFlare passes it
            out = add_sun_flare_physics_based(out, centre, max(1, round(glare["radius"] * side)), tuple(glare.get("colour", [255] * 3)), ghosts)
        return np.ascontiguousarray(out, dtype=np.uint8)
