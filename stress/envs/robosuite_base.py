"""What every robosuite-1.4-based adapter shares (LIBERO's tasks and robosuite's own): a Panda driven by
OSC_POSE 7-D deltas at 20 Hz, the two cameras, render-on-demand with our own GL context made current,
the controller's and gripper's state in snapshots, seeded resets, GL freed in our own context.

A subclass sets ``self.raw`` (the robosuite environment) and supplies the rest of the protocol.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any

import numpy as np

from perturbations.base import CAMERAS
from stress.envs.base import SimEnv
from stress.core.cameras import CAMERA_GEOM_GROUP, CAMERA_NAMES

NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # hold still, gripper open


def prepare_robosuite_import() -> None:
    """Headless GL, and robosuite's import-time advice to create a private macro file (which means writing
    into site-packages; the defaults are what we want) dropped."""
    logging.getLogger("robosuite_logs").addFilter(lambda record: "macro" not in record.getMessage())
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


@contextmanager
def seeded_global_numpy(seed: int):
    """robosuite draws placements and the robot's initialization noise from the *global* numpy RNG, so its
    resets depend on whatever ran before. Seed that draw, and give the caller its RNG state back after."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


class RobosuiteSimEnv(SimEnv):
    """The protocol hooks common to adapters over a robosuite 1.4 single-arm Panda environment ``self.raw``."""

    cameras = CAMERAS
    camera_names = CAMERA_NAMES
    camera_geom_group = CAMERA_GEOM_GROUP
    visual_geom_groups = (1,)  # group 0 holds robosuite's collision geoms, which the cameras do not render
    action_dim = 7  # OSC_POSE delta: dx dy dz, droll dpitch dyaw, gripper
    proprio_dim = 9  # gripper qpos (2), end-effector position (3), quaternion (4, xyzw)
    control_hz = 20
    chunk_size = 16  # Cosmos Policy's LIBERO chunk (and the expert's): event triggers count within it

    raw: Any  # the robosuite environment (privileged access: the expert and the failure tracker read it)

    def _physics_step(self, action: np.ndarray) -> None:
        """One control step (20 Hz)."""
        self.raw.step(np.clip(action, -1.0, 1.0))

    def proprio(self) -> np.ndarray:
        obs = self.raw._get_observations()
        return np.concatenate([obs["robot0_gripper_qpos"], obs["robot0_eef_pos"], obs["robot0_eef_quat"]]).astype(np.float32)

    def _render_context(self, camera: str | None = None):
        # robosuite never makes a context current before rendering; with two envs in one process the
        # other env's context would be drawn into, so make ours current first
        context = self.raw.sim._render_context_offscreen
        context.gl_ctx.make_current()
        for name, group in CAMERA_GEOM_GROUP.items():
            context.vopt.geomgroup[group] = int(name == camera)
        return context.con, context.scn, context.vopt

    def _render_raw(self, camera: str) -> np.ndarray:
        self._render_context(camera)
        return self.raw.sim.render(self.image_size, self.image_size, camera_name=CAMERA_NAMES[camera])

    # --- snapshots: the controller's and gripper's arrays, robosuite's counters ------------------------
    def _stateful_parts(self):
        robot = self.raw.robots[0]
        return {"controller": robot.controller, "gripper": robot.gripper}

    def _controller_state(self) -> dict[str, Any]:
        """Arrays and scalars of the controller and gripper (e.g. the gripper's smoothed command)."""
        return {
            f"{part}.{key}": np.copy(value) if isinstance(value, np.ndarray) else value
            for part, obj in self._stateful_parts().items()
            for key, value in vars(obj).items()
            if isinstance(value, (np.ndarray, bool, int, float, type(None)))
        }

    def _set_controller_state(self, state: dict[str, Any]) -> None:
        parts = self._stateful_parts()
        for key, value in state.items():
            part, attr = key.split(".", 1)
            setattr(parts[part], attr, np.copy(value) if isinstance(value, np.ndarray) else value)

    def _extra_state(self) -> dict[str, Any]:
        return {"timestep": self.raw.timestep, "cur_time": self.raw.cur_time, "controller": self._controller_state()}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self.raw.timestep, self.raw.cur_time = state["timestep"], state["cur_time"]
        self._set_controller_state(state["controller"])

    def _free_gl(self) -> None:
        # free our GL objects with our context current: robosuite frees them in __del__, whenever the
        # garbage collector runs, i.e. in whatever context is current then (another env's)
        context = self.raw.sim._render_context_offscreen
        if context is not None and context.gl_ctx._context:
            context.gl_ctx.make_current()
            context.con.free()
            context.gl_ctx.free()
