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

from perturbations.base import Perturbation, register
from stress.core.spec import Layer
from perturbations.space import Group, ListOf, ParamSpace, Real, Vector
from stress.core.errors import UserError

BRIGHTNESS = {1: 0.03, 2: 0.06, 3: 0.10, 4: 0.15, 5: 0.22}
CONTRAST = {1: 1.08, 2: 1.16, 3: 1.28, 4: 1.45, 5: 1.70}
GAMMA = {1: 1.08, 2: 1.16, 3: 1.28, 4: 1.45, 5: 1.70}
SHADOWS = {1: (1, 0.20), 2: (1, 0.30), 3: (2, 0.40), 4: (2, 0.50), 5: (3, 0.65)}  # (count, darkening)
SHADOW_RADIUS = {1: 0.15, 2: 0.17, 3: 0.20, 4: 0.23, 5: 0.26}  # polygon radius, share of the image side
GLARE_RADIUS = {1: 0.06, 2: 0.10, 3: 0.15, 4: 0.21, 5: 0.30}
MID_GREY = 127.5


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
    space = ParamSpace(
        Real("brightness", -1.0, 1.0, "", "added to every pixel, share of full scale (255)", identity=0.0, step=0.01),
        Real("contrast", 0.0, 4.0, "", "factor about mid-grey (127.5)", identity=1.0, step=0.02),
        Real("gamma", 0.1, 10.0, "", "exponent on 0-1 pixel values (< 1 brighter)", identity=1.0, step=0.05),
        ListOf("shadows", Group("shadow", (
            ListOf("polygon", Vector("point", 2, 0.0, 1.0, "", "[x, y] in 0-1 image coordinates"), 3, None, "outline of the shadow (required)"),
            Real("intensity", 0.0, 1.0, "", "darkening", default=0.5),
        ), "a cast shadow"), 0, None, "cast shadows, each {polygon, intensity}"),
        Group("glare", (
            Vector("centre", 2, 0.0, 1.0, "", "[x, y] of the light source in 0-1 image coordinates (required)"),
            Real("radius", 0.0, 1.0, "", "radius, share of the image side (required)", low_open=True),
            Vector("colour", 3, 0, 255, "", "[r, g, b]", default=255, integer=True),
            ListOf("ghosts", Vector("ghost", 4, 0.0, 1.0, "", "[x, y, radius, alpha]: flare circle in 0-1 coordinates and radius, alpha 0-1"),
                   0, None, "flare circles along a line through the light source"),
        ), "sun-flare glare; null or {} for none"),
    )

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
        glare = params.get("glare")
        self.space.validate(self.name, {k: v for k, v in params.items() if not (k == "glare" and v is None)})
        # what the declaration cannot say: these fields are required once a shadow or a glare is given
        for i, shadow in enumerate(params.get("shadows", [])):
            if "polygon" not in shadow:
                raise UserError(f"image_lighting shadows[{i}] {shadow!r} has no polygon; valid: {{polygon: >= 3 [x, y] points in 0-1, intensity}}")
        if glare and not {"centre", "radius"} <= set(glare):
            raise UserError(f"image_lighting glare {glare!r} needs centre and radius; valid: {{centre, radius, colour, ghosts}}, or null")

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
