"""State-layer robot init: offsets on the arm joints at the start of the episode (LIBERO's Panda: 7; ALOHA: 12).

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

On ALOHA the offsets are 12 (the left arm's waist .. wrist_rotate, then the right arm's), sampled in the same
bands (``sample_on``); the position actuators' ctrl is set to the new pose so the arms hold it (``env.scene.arm_moved``),
contacts are checked at the start and after a probe settle (``env.scene.settled_view``), and the grasp-point
displacement is recorded per arm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perturbations.base import Perturbation, register
from stress.core.errors import InvalidScene, NotRealised
from stress.core.spec import Layer
from perturbations.object_pose import body_root_name, movable_objects, pose, settled_reference
from perturbations.space import ParamSpace, Vector
from stress.core.errors import UserError

N_JOINTS = 7  # the Panda's arm (LIBERO)
ALOHA_JOINTS = 12  # ALOHA: the left arm's 6 joints (waist .. wrist_rotate), then the right arm's
OFFSET_RAD = {1: (0.03, 0.05), 2: (0.05, 0.10), 3: (0.10, 0.20), 4: (0.20, 0.30), 5: (0.30, 0.40)}
MAX_OFFSET = 1.0
DISTURB_TOL_M = 0.005
MIN_PRESENT = 0.25  # share of the requested offset (largest joint) that must survive the settle steps


@register
class RobotInit(Perturbation):
    name = "robot_init"
    layer = Layer.STATE
    needs = frozenset({"arm_joints"})
    summary = "offsets on the seven arm joints at the start of the episode"
    severity_meaning = (
        "|offset| per arm joint, random signs: 1: 0.03-0.05 rad, 2: 0.05-0.1 rad, 3: 0.1-0.2 rad, "
        "4: 0.2-0.3 rad, 5: 0.3-0.4 rad"
    )
    space = ParamSpace(
        Vector("offsets", N_JOINTS, -MAX_OFFSET, MAX_OFFSET, "rad",
               "added to the arm joints of the init state (clipped to the joint limits): LIBERO's Panda joints 1-7; "
               "ALOHA: the left arm's 6 joints (waist .. wrist_rotate), then the right arm's",
               identity=0.0, step=0.02, other_lengths=(("aloha", ALOHA_JOINTS),)),
    )

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...], joints: int = N_JOINTS) -> dict[str, Any]:
        magnitude = rng.uniform(*OFFSET_RAD[severity], size=joints)
        signs = rng.choice([-1.0, 1.0], size=joints)
        return {"offsets": [round(float(v), 5) for v in signs * magnitude]}

    def sample_on(self, simulator, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        return self.sample(severity, rng, cameras, simulator.arm_joints)

    def is_identity(self, params: dict[str, Any]) -> bool:
        return not any(params.get("offsets", []))

    def check_params_on(self, simulator, params: dict[str, Any]) -> None:
        self._check_length(params, simulator.name, simulator.arm_joints)

    @staticmethod
    def _check_length(params: dict[str, Any], simulator: str, joints: int) -> None:
        if "offsets" in params and len(params["offsets"]) != joints:
            raise UserError(f"robot_init offsets has {len(params['offsets'])} numbers; valid on {simulator}: {joints} (one per arm joint)")

    def apply_state(self, env, params: dict[str, Any]) -> None:
        if self.is_identity(params):
            return
        # realise() makes a fresh family instance per episode (and per re-sample): state kept on self
        # between apply_state and check belongs to this episode only
        model, data = env.model, env.data
        joints = env.scene.arm_joints()
        self._check_length(params, env.simulator, len(joints))
        offsets = np.asarray(params["offsets"], dtype=float)
        self._reference = settled_reference(env)
        qpos_idx, qvel_idx = model.jnt_qposadr[joints], model.jnt_dofadr[joints]
        start = data.qpos[qpos_idx].copy()
        low, high = model.jnt_range[joints, 0], model.jnt_range[joints, 1]
        target = np.clip(start + offsets, low, high)
        self._applied = target - start  # after clipping to the joint limits
        data.qpos[qpos_idx] = target
        data.qvel[qvel_idx] = 0.0
        env.scene.arm_moved(self._applied)  # the controller holds the new posture (LIBERO: the OSC's goals)

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        if self.is_identity(params):
            return {}
        self._refuse_arm_contact(env)  # at the episode's start
        with env.scene.settled_view():  # LIBERO: the start is after its settle steps; ALOHA: after a probe settle
            self._refuse_arm_contact(env)
            return self._check_settled(env)

    @staticmethod
    def _refuse_arm_contact(env) -> None:
        model, data = env.model, env.data
        robot = {int(model.body_rootid[model.jnt_bodyid[j]]) for j in env.scene.arm_joints()}  # one root per arm
        for c in data.contact[: data.ncon]:
            roots = model.body_rootid[model.geom_bodyid[[c.geom1, c.geom2]]]
            # an arm against something else, the other arm included (self-contacts are filtered by MuJoCo)
            if roots[0] != roots[1] and (roots[0] in robot or roots[1] in robot):
                raise InvalidScene(f"the offset arm touches {body_root_name(env, c.geom2 if roots[0] in robot else c.geom1)}")

    def _check_settled(self, env) -> dict[str, Any]:
        model, data = env.model, env.data
        reference = self._reference
        for name in movable_objects(env):
            moved = float(np.linalg.norm(pose(env, name)[0] - reference["objects"][name][0]))
            if moved > DISTURB_TOL_M:
                raise InvalidScene(f"the offset arm knocked {name} by {moved * 100:.1f} cm while settling")
        present = data.qpos[model.jnt_qposadr[env.scene.arm_joints()]] - reference["arm_qpos"]
        largest = int(np.argmax(np.abs(self._applied)))
        if abs(present[largest]) < MIN_PRESENT * abs(self._applied[largest]):
            raise NotRealised(f"robot_init offset of joint {largest + 1} decayed to {present[largest]:.3f} rad while settling")
        eef = env.scene.grip_points() - reference["eef"]  # one row per gripper
        distances = [float(np.linalg.norm(row)) for row in eef]
        gripper = data.qpos[env.scene.gripper_qpos_indexes()] - reference["gripper_qpos"]
        rows = [[round(float(v), 5) for v in row] for row in eef]
        return {
            "applied_rad": [round(float(v), 5) for v in self._applied],
            "present_rad": [round(float(v), 5) for v in present],
            "eef_displacement_m": rows[0] if len(rows) == 1 else rows,  # ALOHA: left, right
            "eef_distance_m": round(max(distances), 5),
            "gripper_qpos_change": [round(float(v), 6) for v in gripper],
        }
