"""An example stress plug-in: a pixel perturbation family, a policy that holds still and a property, declared in
this package's entry points (pyproject.toml) and imported from the public ``stress`` API only."""

from __future__ import annotations

from typing import Any

import numpy as np

from stress import Decision, Layer, Observation, ParamSpace, Perturbation, Real, Verdict, declare_property


class Tint(Perturbation):
    """Tints the camera images red: the red channel is raised by ``strength`` of what is left to 255."""

    name = "tint"
    layer = Layer.PIXELS
    summary = "red tint on the camera images"
    severity_meaning = "strength 0.1 * level"
    space = ParamSpace(Real("strength", 0.0, 1.0, "", "share of the gap to full red added to the red channel", identity=0.0, step=0.1))

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        return {"strength": round(0.1 * severity, 2)}

    def identity_params(self) -> dict[str, Any]:
        return {"strength": 0.0}

    def apply_pixels(self, image: np.ndarray, camera: str, params: dict[str, Any]) -> np.ndarray:
        out = image.astype(np.float64)
        out[..., 0] += params["strength"] * (255.0 - out[..., 0])
        return out.round().astype(np.uint8)


class StillPolicy:
    """Holds still: zero actions, eight steps a chunk (a stand-in for a third-party backend)."""

    name = "still"
    modes = ("direct",)
    uses_images = False
    simulators = ("libero",)

    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation: str | None = None) -> None:
        pass

    def act(self, obs: Observation) -> Decision:
        return Decision(actions=np.zeros((8, 7)))


@declare_property("short_episode", variants=("scenario",), doc="the episode ends in under 50 steps")
def short_episode(episodes):
    steps = episodes["scenario"].row["steps"]
    return Verdict(steps >= 50, (50 - steps) / 50)
