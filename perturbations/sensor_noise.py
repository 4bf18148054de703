"""Pixel-layer sensor degradation: motion blur, ISO noise, Gaussian noise and JPEG compression.

Applied in the order a camera produces them: motion blur during the exposure (a straight-line kernel,
albumentations' ``create_motion_kernel`` + ``convolve``, the operations behind ``MotionBlur``; length and
angle fixed for the episode), ISO noise (``iso_noise``, behind ``ISONoise``), additive Gaussian read noise
(``add_noise``, behind ``GaussNoise``), then JPEG encoding (``image_compression``, behind
``ImageCompression``).

The noise is sensor noise, so it differs from frame to frame, yet it is deterministic: each frame's
generator is seeded from (``noise_seed``, camera, a hash of the clean image bytes). The pixel hook has no
frame index, and a frame counter kept in the family would drift whenever a frame is perturbed twice (the
realisation check perturbs the first frame once more, a counterfactual replay restores a snapshot and
renders again); keyed on content, the same simulator state always gives the same noisy image, different
states give fresh noise, and only a scene that did not change at all between frames shows the same noise.

Severity levels (all four effects grow together; the blur angle and ISO colour shift are drawn from the
seed):

======  ======================  =============  ===================  ============
level   motion blur length      ISO intensity  Gaussian std (0-255)  JPEG quality
======  ======================  =============  ===================  ============
1       2 % of the image side   0.05           2                    70
2       3 %                     0.10           4                    50
3       4.5 %                   0.20           7                    35
4       6 %                     0.35           11                   20
5       8 %                     0.50           16                   10
======  ======================  =============  ===================  ============

The blur kernel is the length rounded to an odd pixel count, at least 3 (e.g. 3, 5, 7, 9, 11 px at
128 px). Pixel perturbations never touch the simulator, so the privileged expert's outcome cannot change.
"""

from __future__ import annotations

import hashlib
import zlib
import math
import random
from typing import Any

import numpy as np
from albumentations.augmentations.blur.functional import create_motion_kernel
from albumentations.augmentations.pixel.functional import add_noise, convolve, image_compression, iso_noise

from perturbations.base import Perturbation, register
from stress.core.cameras import CAMERAS
from stress.core.spec import Layer
from perturbations.space import ParamSpace, Real

BLUR = {1: 0.02, 2: 0.03, 3: 0.045, 4: 0.06, 5: 0.08}
ISO = {1: 0.05, 2: 0.10, 3: 0.20, 4: 0.35, 5: 0.50}
GAUSS = {1: 2.0, 2: 4.0, 3: 7.0, 4: 11.0, 5: 16.0}
JPEG = {1: 70, 2: 50, 3: 35, 4: 20, 5: 10}
def blur_kernel_size(fraction: float, side: int) -> int:
    """Odd kernel size (>= 3) for a blur length given as a share of the image side; 0 means no blur."""
    if fraction <= 0.0:
        return 0
    size = max(3, int(round(fraction * side)))
    return size if size % 2 else size + 1


def frame_generator(noise_seed: int, camera: str, image: np.ndarray) -> np.random.Generator:
    """Per-frame generator keyed on the clean frame's content (see the module docstring)."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=8).digest()
    # LIBERO's cameras keep their index (the streams recorded runs were drawn from); other simulators'
    # cameras get one of their own from their name
    stream = CAMERAS.index(camera) if camera in CAMERAS else len(CAMERAS) + zlib.crc32(camera.encode())
    return np.random.default_rng([int(noise_seed), stream, int.from_bytes(digest, "little")])


@register
class SensorNoise(Perturbation):
    name = "sensor_noise"
    layer = Layer.PIXELS
    per_camera = True
    summary = "motion blur, ISO and Gaussian noise, JPEG compression on the camera images (noise per frame, seeded)"
    severity_meaning = (
        "all four grow together: motion blur 2/3/4.5/6/8 % of the image side, ISO intensity 0.05/0.1/0.2/0.35/0.5, "
        "Gaussian std 2/4/7/11/16 (0-255), JPEG quality 70/50/35/20/10"
    )
    space = ParamSpace(
        Real("motion_blur", 0.0, 0.5, "", "blur length, share of the image side (kernel odd, >= 3 px; 0: none)", identity=0.0, step=0.005),
        Real("motion_blur_angle", 0.0, 360.0, "deg", "blur direction", default=0.0, step=15.0),
        Real("iso_intensity", 0.0, 1.0, "", "ISO noise intensity (albumentations ISONoise; 0: none)", identity=0.0, step=0.01),
        Real("iso_color_shift", 0.0, 0.5, "", "ISO hue noise", default=0.0, step=0.01),
        Real("gaussian_std", 0.0, 100.0, "", "std of additive Gaussian noise, in 0-255 pixel units (0: none)", identity=0.0, step=1.0),
        Real("jpeg_quality", 1, 100, "", "JPEG quality (100: no compression)", identity=100, step=-1, integer=True),
        Real("noise_seed", 0, math.inf, "", "seed of the per-frame noise, combined with the camera and the frame content", default=0, integer=True),
    )

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        return {
            "motion_blur": BLUR[severity],
            "motion_blur_angle": round(float(rng.uniform(0.0, 360.0)), 2),
            "iso_intensity": ISO[severity],
            "iso_color_shift": round(float(rng.uniform(0.01, 0.05)), 4),
            "gaussian_std": GAUSS[severity],
            "jpeg_quality": JPEG[severity],
            "noise_seed": int(rng.integers(0, 2**31 - 1)),
        }

    def is_identity(self, params: dict[str, Any]) -> bool:
        # the four effects at their identity (the angle and hue shift only shape a blur or noise that is there)
        return all(params.get(p.name, p.identity) == p.identity for p in self.space.params if p.identity is not None)

    def apply_pixels(self, image: np.ndarray, camera: str, params: dict[str, Any]) -> np.ndarray:
        if self.is_identity(params):
            return image
        rng = frame_generator(params.get("noise_seed", 0), camera, image)
        out = image
        size = blur_kernel_size(float(params.get("motion_blur", 0.0)), min(image.shape[:2]))
        if size:
            # fixed direction, centred (allow_shifted=False: the Random instance is then never used)
            kernel = create_motion_kernel(size, float(params.get("motion_blur_angle", 0.0)), 0.0, False, random.Random(0))
            out = convolve(out, kernel / kernel.sum())
        if params.get("iso_intensity", 0.0) > 0.0:
            out = iso_noise(out, float(params.get("iso_color_shift", 0.0)), float(params["iso_intensity"]), rng)
        if params.get("gaussian_std", 0.0) > 0.0:
            out = add_noise(out, rng.normal(0.0, float(params["gaussian_std"]), size=out.shape).astype(np.float32))
        if params.get("jpeg_quality", 100) < 100:
            # OpenCV encodes BGR: flip so the JPEG luma/chroma split sees the true colours
            out = image_compression(np.ascontiguousarray(out[..., ::-1]), int(params["jpeg_quality"]), ".jpg")[..., ::-1]
        return np.ascontiguousarray(out, dtype=np.uint8)
