"""State-layer robot init: offsets on the Panda's seven arm joints at the start of the episode.

The offsets (radians) are added to the arm joints' qpos of the shipped init state (clipped to the joint
limits), with zero joint velocity, before the env's settle steps. Each joint gets its own offset, drawn
with a random sign and a magnitude in the level's band:

    level                 1            2           3           4           5
    |offset| per joint    0.03-0.05    0.05-0.10   0.10-0.20   0.20-0.30   0.30-0.40 rad

Consistency with the controller: the OSC_POSE delta controller re-reads the hand *position* at every
step, but keeps its goal *orientation* until an action asks for a non-zero rotation, and pulls the joints
in its nullspace towards ``controller.initial_joint``, the start posture robosuite records when it loads
the controller (its own init noise moves both). Left alone, both drive the arm back to the unperturbed
posture during the settle steps (most of a wrist offset vanished in 10 steps). After writing the offsets,
the controller's cached arm state is refreshed and ``update_initial_joints(initial_joint + offsets)``
(robosuite's call for a new start posture) moves the nullspace target with the start and resets the goal
to the new hand pose; the env restores the controller's state at every reset, so nothing leaks into the
next episode. The gripper's joints and its smoothed command are left as the init state and the env reset
put them (their change after settling is recorded).

Validity (``InvalidScene``, re-sampled by the env): after settling the arm or gripper touches nothing
but itself (no contact with the table, a fixture or an object) and no object moved by more than 5 mm
versus the same scene settled without the offsets (the arm did not knock anything while settling).
Realisation: per-joint offsets present after settling (rad) and the end-effector displacement (m) versus
the unperturbed settled scene.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perturbations.base import InvalidScene, Layer, NotRealised, Perturbation, register
from perturbations.object_pose import body_root_name, movable_objects, pose, settled_reference
from perturbations.space import ParamSpace, Vector

N_JOINTS = 7
OFFSET_RAD = {1: (0.03, 0.05), 2: (0.05, 0.10), 3: (0.10, 0.20), 4: (0.20, 0.30), 5: (0.30, 0.40)}
MAX_OFFSET = 1.0
DISTURB_TOL_M = 0.005
MIN_PRESENT = 0.25  # share of the requested offset (largest joint) that must survive the settle steps


@register
class RobotInit(Perturbation):
    name = "robot_init"
    layer = Layer.STATE
    summary = "offsets on the seven arm joints at the start of the episode"
    severity_meaning = (
        "|offset| per arm joint, random signs: 1: 0.03-0.05 rad, 2: 0.05-0.1 rad, 3: 0.1-0.2 rad, "
        "4: 0.2-0.3 rad, 5: 0.3-0.4 rad"
    )
    space = ParamSpace(
        Vector("offsets", N_JOINTS, -MAX_OFFSET, MAX_OFFSET, "rad", "added to arm joints 1-7 of the init state (clipped to the joint limits)", identity=0.0, step=0.02),
    )

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        magnitude = rng.uniform(*OFFSET_RAD[severity], size=N_JOINTS)
        signs = rng.choice([-1.0, 1.0], size=N_JOINTS)
        return {"offsets": [round(float(v), 5) for v in signs * magnitude]}

    def is_identity(self, params: dict[str, Any]) -> bool:
        return not any(params.get("offsets", []))

    def apply_state(self, env, params: dict[str, Any]) -> None:
        if self.is_identity(params):
            return
        # realise() makes a fresh family instance per episode (and per re-sample): state kept on self
        # between apply_state and check belongs to this episode only
        self._reference = settled_reference(env)
        robot = env.raw.robots[0]
        model, data = env.raw.sim.model._model, env.raw.sim.data._data
        qpos_idx, qvel_idx = robot._ref_joint_pos_indexes, robot._ref_joint_vel_indexes
        start = data.qpos[qpos_idx].copy()
        joints = [model.dof_jntid[i] for i in qvel_idx]
        low, high = model.jnt_range[joints, 0], model.jnt_range[joints, 1]
        target = np.clip(start + np.asarray(params["offsets"], dtype=float), low, high)
        self._applied = target - start  # after clipping to the joint limits
        data.qpos[qpos_idx] = target
        data.qvel[qvel_idx] = 0.0
        # The OSC keeps a goal orientation that a zero rotation delta never updates, and a nullspace
        # target set to the start posture when robosuite loads it (its own init noise moves both): left
        # alone, they drive the arm back to the unperturbed posture. robosuite's own call for a new start
        # posture sets both; the cached arm state must be re-read first (it is refreshed only after the
        # controller has run). The env restores the controller's state at every reset.
        controller = robot.controller
        controller.update(force=True)
        controller.update_initial_joints(controller.initial_joint + self._applied)

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        if self.is_identity(params):
            return {}
        robot = env.raw.robots[0]
        model, data = env.raw.sim.model._model, env.raw.sim.data._data
        root = model.body_rootid[model.body("robot0_base").id]
        for c in data.contact[: data.ncon]:
            roots = model.body_rootid[model.geom_bodyid[[c.geom1, c.geom2]]]
            if (roots == root).sum() == 1:  # arm against something else (self-contacts are filtered by MuJoCo)
                raise InvalidScene(f"the offset arm touches {body_root_name(env, c.geom2 if roots[0] == root else c.geom1)}")
        reference = self._reference
        for name in movable_objects(env):
            moved = float(np.linalg.norm(pose(env, name)[0] - reference["objects"][name][0]))
            if moved > DISTURB_TOL_M:
                raise InvalidScene(f"the offset arm knocked {name} by {moved * 100:.1f} cm while settling")
        present = data.qpos[robot._ref_joint_pos_indexes] - reference["arm_qpos"]
        largest = int(np.argmax(np.abs(self._applied)))
        if abs(present[largest]) < MIN_PRESENT * abs(self._applied[largest]):
            raise NotRealised(f"robot_init offset of joint {largest + 1} decayed to {present[largest]:.3f} rad while settling")
        eef = data.site_xpos[model.site("gripper0_grip_site").id] - reference["eef"]
        gripper = data.qpos[robot._ref_gripper_joint_pos_indexes] - reference["gripper_qpos"]
        return {
            "applied_rad": [round(float(v), 5) for v in self._applied],
            "present_rad": [round(float(v), 5) for v in present],
            "eef_displacement_m": [round(float(v), 5) for v in eef],
            "eef_distance_m": round(float(np.linalg.norm(eef)), 5),
            "gripper_qpos_change": [round(float(v), 6) for v in gripper],
        }
