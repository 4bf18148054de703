"""Pixel-layer occlusion: opaque patches pasted on the camera images the policy sees.

The patch geometry is fixed for the whole episode (it "stays put"), one patch per targeted camera,
centred on the task's target object projected into that camera at the start of the episode (or on a
sampled point when ``anchor="random"`` or when the target is not in view). Patches are cut with
albumentations' cutout; a ``noise`` fill reuses one seed every frame so the noise does not flicker.
Pixel perturbations never touch the simulator, so the true future frames stay clean.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from albumentations.augmentations.dropout.functional import cutout

from perturbations.base import Perturbation, register
from stress.core.spec import Layer
from perturbations.space import Choice, Free, ParamSpace, Real, Vector

AREA_BY_SEVERITY = {1: 0.03, 2: 0.06, 3: 0.12, 4: 0.20, 5: 0.35}
FILLS = {"black": (0, 0, 0), "gray": (128, 128, 128), "noise": "random"}
ANCHORS = ("target", "random")


@register
class Occlusion(Perturbation):
    name = "occlusion"
    layer = Layer.PIXELS
    per_camera = True
    summary = "opaque patch on the camera image, centred on the target object, fixed for the episode"
    severity_meaning = "patch area as a share of the image: 1: 3%, 2: 6%, 3: 12%, 4: 20%, 5: 35%"
    space = ParamSpace(
        Real("area_fraction", 0.0, 1.0, "", "patch area / image area", identity=0.0, step=0.01),
        Real("aspect", 0.25, 4.0, "", "patch width / height", default=1.0, step=0.05),
        Choice("anchor", ANCHORS, "'target': centred on the target object's projection; 'random': on random_centre", searchable=False),
        Vector("offset", 2, -1.0, 1.0, "patch sizes", "[dx, dy] shift of the patch centre from the anchor", default=0.0, step=0.05),
        Vector("random_centre", 2, 0.0, 1.0, "", "[u, v] centre in 0-1 image coordinates, used when anchor is 'random' or the target is out of view", default=0.5),
        Choice("fill", tuple(FILLS), "what the patch is filled with (noise: the same every frame)"),
        Real("noise_seed", 0, math.inf, "", "seed of the noise fill", default=0, integer=True),
        Free("holes_px", "set by resolve and recorded: the patch per camera, [x1, y1, x2, y2] pixels (recomputed when given)"),
        Free("anchored_on", "set by resolve and recorded: per camera, 'target' or 'random' (recomputed when given)"),
    )

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        return {
            "area_fraction": AREA_BY_SEVERITY[severity],
            "aspect": float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
            "anchor": "target",
            "offset": [float(v) for v in rng.uniform(-0.25, 0.25, size=2)],
            "random_centre": [float(v) for v in rng.uniform(0.2, 0.8, size=2)],
            "fill": str(rng.choice(sorted(FILLS))),
            "noise_seed": int(rng.integers(0, 2**31 - 1)),
        }

    def identity_params(self) -> dict[str, Any]:
        return {"area_fraction": 0.0}

    def is_identity(self, params: dict[str, Any]) -> bool:
        return float(params.get("area_fraction", 0.0)) == 0.0

    def resolve(self, params: dict[str, Any], env, cameras: tuple[str, ...]) -> dict[str, Any]:
        """Fix the patch of each camera in pixels (x1, y1, x2, y2) for the episode."""
        if self.is_identity(params):
            return dict(params)
        rows, cols = env.image_shape
        area = params["area_fraction"] * rows * cols
        aspect = params.get("aspect", 1.0)
        width = min(cols, max(1, round(np.sqrt(area * aspect))))
        height = min(rows, max(1, round(np.sqrt(area / aspect))))
        holes, anchors = {}, {}
        for camera in cameras:
            centre = None
            if params.get("anchor", "target") == "target":
                centre = env.project(env.object_position(env.target_object), camera)
                if centre is not None and not (0 <= centre[0] < rows and 0 <= centre[1] < cols):
                    centre = None
            anchors[camera] = "target" if centre is not None else "random"
            if centre is None:
                u, v = params.get("random_centre", [0.5, 0.5])
                centre = (v * rows, u * cols)
            dx, dy = params.get("offset", [0.0, 0.0])
            row, col = centre[0] + dy * height, centre[1] + dx * width
            x1 = int(np.clip(round(col - width / 2), 0, cols - width))
            y1 = int(np.clip(round(row - height / 2), 0, rows - height))
            holes[camera] = [x1, y1, x1 + width, y1 + height]
        return {**params, "holes_px": holes, "anchored_on": anchors}

    def occluded_pixels(self, env, params: dict[str, Any], camera: str) -> np.ndarray | None:
        hole = params.get("holes_px", {}).get(camera)
        if hole is None or self.is_identity(params):
            return None
        x1, y1, x2, y2 = hole
        mask = np.zeros(env.image_shape, dtype=bool)
        mask[y1:y2, x1:x2] = True
        return mask

    def apply_pixels(self, image: np.ndarray, camera: str, params: dict[str, Any]) -> np.ndarray:
        hole = params.get("holes_px", {}).get(camera)
        if hole is None or self.is_identity(params):
            return image
        rng = np.random.default_rng(params.get("noise_seed", 0))  # same noise every frame
        return cutout(image, np.array([hole]), FILLS[params.get("fill", "black")], rng)
