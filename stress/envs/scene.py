"""The scene-query object: what the families, the failure signatures and the privileged experts ask of a
live scene, answered for one simulator's robot and objects (``env.scene``).

``SceneQuery`` answers what any MuJoCo scene can (object positions, movable objects, contacts of a body
tree); each adapter supplies a subclass for its robot (``PandaScene`` for the robosuite-based ones in
``stress.envs.robosuite_base``, ``AlohaScene`` in ``stress.envs.aloha``) answering the robot queries
(``arm_joints``, ``grip_points``, ``arm_moved``, ``reach_problem``, ...) so the families need no
per-simulator branches. A simulator declares which of these questions it answers in its capabilities
(``stress.envs.base.Simulator.capabilities``); a family needs only those it asks.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import mujoco
import numpy as np


class SceneQuery:
    """Questions about the live scene of one env (``env.model`` / ``env.data``, read at call time)."""

    def __init__(self, env):
        self.env = env

    @property
    def model(self) -> mujoco.MjModel:
        return self.env.model

    @property
    def data(self) -> mujoco.MjData:
        return self.env.data

    # --- objects ----------------------------------------------------------------------------------------
    def object_position(self, name: str) -> np.ndarray:
        """World position (m) of a task object."""
        return np.array(self.data.xpos[self.env.object_bodies[name]])

    def movable_objects(self) -> list[str]:
        """The objects on a free joint that state and event families may move."""
        return list(self.env.object_bodies)

    def init_range(self, name: str) -> dict[str, Any] | None:
        """Where the task's init states put object ``name``: ``lo``, ``hi`` (x, y corners, m) and ``yaw``
        (min, max deg, relative to its current pose); None: the init states give no range (one point)."""
        return None

    def other_tasks(self) -> tuple[tuple[int, str], ...]:
        """(task id, instruction) of the other tasks of this task's scene (the language family's swap);
        none by default: a simulator whose tasks share no scene (ALOHA's, robosuite's)."""
        return ()

    # --- the robot ----------------------------------------------------------------------------------------
    def arm_joints(self) -> np.ndarray:
        """MuJoCo joint ids of the arm joints (grippers excluded), in the order of robot_init's offsets."""
        raise NotImplementedError

    def gripper_qpos_indexes(self) -> np.ndarray:
        """qpos addresses of the grippers' finger joints."""
        raise NotImplementedError

    def grip_points(self) -> np.ndarray:
        """World positions (n x 3) of each gripper's grasp point (LIBERO: one, ALOHA: two)."""
        raise NotImplementedError

    def arm_moved(self, offsets: np.ndarray) -> None:
        """The arm joints were just set ``offsets`` (rad) away from the init state: make the controller hold
        the new posture (undone at the next reset)."""
        raise NotImplementedError

    def reach_problem(self, name: str, position: np.ndarray) -> str | None:
        """Why the robot cannot grasp object ``name`` at ``position`` (outside its workspace), or None."""
        raise NotImplementedError

    @contextmanager
    def settled_view(self):
        """The scene as validity checks judge it. An episode that starts after settle steps (LIBERO) is
        judged as it is; an adapter without them overrides this (ALOHA: a probe settle, undone after)."""
        yield
