"""What every robosuite-1.4-based adapter shares (LIBERO's tasks and robosuite's own): a Panda driven by
OSC_POSE 7-D deltas at 20 Hz, the two cameras, render-on-demand with our own GL context made current,
the controller's, gripper's and observables' state in snapshots, seeded resets, GL freed in our own context.

A subclass sets ``self.raw`` (the robosuite environment) and supplies the rest of the protocol.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any

import numpy as np

import mujoco

from stress.core.cameras import CAMERA_GEOM_GROUP, CAMERA_NAMES, CAMERAS
from stress.envs.base import SimEnv
from stress.envs.scene import SceneQuery
from stress.envs.signatures import SignatureTracker

NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # hold still, gripper open
# Panda reach (datasheet: 855 mm from the shoulder, 333 mm above the base). A top-down grasp puts the
# wrist ~0.2 m above the object; keep it 5 cm inside the maximal reach (stretched arm = singular) and the
# object at least 0.3 m out from the base (closer, the hand folds into the arm's own links).
SHOULDER_Z, WRIST_ABOVE, MAX_REACH, MIN_RADIUS = 0.333, 0.2, 0.80, 0.30


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


class PandaScene(SceneQuery):
    """Scene queries of a robosuite 1.4 single-arm Panda scene: the robot queries of the state and event
    families, and the geometry the privileged expert and the failure signatures read (collision geoms of an
    object, their boxes, the grip site's pose and velocity, which geoms are fingers, grasp = both fingers touch)."""

    def __init__(self, env):
        super().__init__(env)
        self.sim = env.raw.sim
        self.site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "gripper0_grip_site")
        robot = env.raw.robots[0]
        self.controller = robot.controller
        pads = robot.gripper.important_geoms
        self.fingers = [{self.sim.model.geom_name2id(g) for g in pads[side]} for side in ("left_finger", "right_finger")]
        self.control_timestep = env.raw.control_timestep
        self._geoms: dict[str, np.ndarray] = {}

    # --- the robot (the state and event families) ---------------------------------------------------------
    def arm_joints(self) -> np.ndarray:
        return np.array([self.model.dof_jntid[i] for i in self.env.raw.robots[0]._ref_joint_vel_indexes])

    def gripper_qpos_indexes(self) -> np.ndarray:
        return np.asarray(self.env.raw.robots[0]._ref_gripper_joint_pos_indexes)

    def grip_points(self) -> np.ndarray:
        return self.data.site_xpos[self.site][None].copy()

    def arm_moved(self, offsets: np.ndarray) -> None:
        # The OSC keeps a goal orientation that a zero rotation delta never updates, and a nullspace
        # target set to the start posture when robosuite loads it (its own init noise moves both): left
        # alone, they drive the arm back to the unperturbed posture. robosuite's own call for a new start
        # posture sets both; the cached arm state must be re-read first (it is refreshed only after the
        # controller has run). The env restores the controller's state at every reset.
        controller = self.env.raw.robots[0].controller
        controller.update(force=True)
        controller.update_initial_joints(controller.initial_joint + offsets)

    def reach_problem(self, name: str, position: np.ndarray) -> str | None:
        """Why a top-down grasp at ``position`` is outside the Panda's workspace, or None."""
        base = self.data.xpos[self.model.body("robot0_base").id]
        radius = float(np.linalg.norm(position[:2] - base[:2]))
        shoulder = base + np.array([0.0, 0.0, SHOULDER_Z])
        reach = float(np.linalg.norm(position + np.array([0.0, 0.0, WRIST_ABOVE]) - shoulder))
        if reach > MAX_REACH:
            return f"target out of reach ({reach:.2f} m from the shoulder; max {MAX_REACH})"
        if radius < MIN_RADIUS:
            return f"target too close to the robot base ({radius:.2f} m; min {MIN_RADIUS})"
        return None

    # --- geometry (the expert, the failure signatures) -----------------------------------------------------
    def body(self, name: str) -> int:
        return self.env.object_bodies[name]

    def geoms(self, name: str) -> np.ndarray:
        """Collision geoms of an object (its whole body tree)."""
        if name not in self._geoms:
            m, root = self.model, self.model.body_rootid[self.body(name)]
            ids = [g for g in range(m.ngeom) if m.body_rootid[m.geom_bodyid[g]] == root and (m.geom_contype[g] or m.geom_conaffinity[g])]
            self._geoms[name] = np.array(ids, dtype=int)
        return self._geoms[name]

    def _corners(self, name: str) -> np.ndarray:
        """World coordinates of every collision geom's AABB corners."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        pts = []
        for g in self.geoms(name):
            box = self.model.geom_aabb[g]
            local = box[:3] + signs * box[3:]
            pts.append(local @ self.data.geom_xmat[g].reshape(3, 3).T + self.data.geom_xpos[g])
        return np.concatenate(pts)

    def world_box(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        pts = self._corners(name)
        return pts.min(0), pts.max(0)

    def body_box(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lo, hi) in the object's body frame, plus its world position and rotation."""
        b = self.body(name)
        pos, rot = self.data.xpos[b].copy(), self.data.xmat[b].reshape(3, 3).copy()
        local = (self._corners(name) - pos) @ rot
        return local.min(0), local.max(0), pos, rot

    def eef(self) -> tuple[np.ndarray, np.ndarray]:
        """The grip site's world position and rotation."""
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def velocity(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.controller.ee_pos_vel), np.array(self.controller.ee_ori_vel)

    def grasped(self, name: str) -> bool:
        """Both fingers touch the object (pads or finger bodies: a bowl rim may sit above the pads)."""
        obj = set(self.geoms(name).tolist())
        touched = [False, False]
        for c in self.data.contact[: self.data.ncon]:
            for a, b in ((c.geom1, c.geom2), (c.geom2, c.geom1)):
                if b in obj:
                    for side, finger in enumerate(self.fingers):
                        touched[side] |= a in finger
        return all(touched)

    def geom_name(self, geom: int) -> str:
        return self.sim.model.geom_id2name(geom) or ""


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
    scene_class = PandaScene

    raw: Any  # the robosuite environment (privileged access: the expert and the failure tracker read it)

    def success(self) -> bool:
        """The task's own success check (LIBERO's goal predicates, robosuite's ``_check_success``)."""
        return bool(self.raw._check_success())

    def failure_tracker(self) -> SignatureTracker:
        return SignatureTracker(self)

    def close(self) -> None:
        self._free_gl()
        self._close_env()

    def _close_env(self) -> None:
        """Close what owns the robosuite environment (LIBERO's wrapper, or the environment itself)."""
        self.raw.close()

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

    # robosuite's observables cache their last sample (proprio() reads it); restoring MuJoCo's state alone would
    # leave the value from before the restore until the next step, so a snapshot carries the caches too
    OBSERVABLE_STATE = ("_current_observed_value", "_time_since_last_sample", "_current_delay", "_sampled")

    def _observable_state(self) -> dict[str, tuple]:
        return {name: tuple(np.copy(v) if isinstance(v, np.ndarray) else v for v in (getattr(obs, a) for a in self.OBSERVABLE_STATE))
                for name, obs in self.raw._observables.items()}

    def _set_observable_state(self, state: dict[str, tuple]) -> None:
        for name, values in state.items():
            for attr, value in zip(self.OBSERVABLE_STATE, values):
                setattr(self.raw._observables[name], attr, np.copy(value) if isinstance(value, np.ndarray) else value)

    def _extra_state(self) -> dict[str, Any]:
        return {"timestep": self.raw.timestep, "cur_time": self.raw.cur_time, "controller": self._controller_state(),
                "observables": self._observable_state()}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self.raw.timestep, self.raw.cur_time = state["timestep"], state["cur_time"]
        self._set_controller_state(state["controller"])
        self._set_observable_state(state["observables"])

    def _free_gl(self) -> None:
        # free our GL objects with our context current: robosuite frees them in __del__, whenever the
        # garbage collector runs, i.e. in whatever context is current then (another env's)
        context = self.raw.sim._render_context_offscreen
        if context is not None and context.gl_ctx._context:
            context.gl_ctx.make_current()
            context.con.free()
            context.gl_ctx.free()
