"""How well ALOHA's cube can be located in the top camera at the reference model's image sizes: the top camera rendered
at 224 px (the ALOHA runs' default) and area-resized to each size, as the policy does; the red-weighted centroid of
the image, mapped to the cube's table x, y by a least-squares fit on init states 0-39; the error on init states
40-49. It bounds what the image holds (a network has to learn its own read-out):

    python tests/aloha_cube_pixels.py [SIZE ...]      # default 64 96 128
"""

from __future__ import annotations

import sys

import numpy as np

from stress.envs.aloha import AlohaEnv
from stress.policies.reference.model import model_image


def localisation_error(size: int, fit: range = range(40), held_out: range = range(40, 50)) -> tuple[float, float, float]:
    """(mean, max) held-out error in cm, and pixels per cm, of the centroid read-out at ``size`` px."""
    env = AlohaEnv("aloha", 0, image_size=224)
    features, truth = [], []
    try:
        for init in (*fit, *held_out):
            env.reset(init)
            image = model_image(env.observe(render=True, cameras=("top",)).images["top"], size).astype(float)
            red = np.clip(image[..., 0] - image[..., 1:].mean(-1), 0, None)
            ys, xs = np.mgrid[:size, :size]
            weights = red / red.sum()
            features.append([(weights * xs).sum(), (weights * ys).sum(), 1.0])
            truth.append(env.object_pose("box")[:2])
    finally:
        env.close()
    x, y = np.array(features), np.array(truth)
    coef, *_ = np.linalg.lstsq(x[: len(fit)], y[: len(fit)], rcond=None)
    error = 100 * np.linalg.norm(x[len(fit) :] @ coef - y[len(fit) :], axis=1)
    return float(error.mean()), float(error.max()), float(1 / abs(coef[0, 0]) / 100)


if __name__ == "__main__":
    for size in map(int, sys.argv[1:] or (64, 96, 128)):
        mean, worst, px_per_cm = localisation_error(size)
        print(f"{size} px: held-out cube x, y error {mean:.2f} cm (max {worst:.2f}); {px_per_cm:.2f} px per cm")
