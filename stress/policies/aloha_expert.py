"""Privileged scripted expert for ALOHA in simulation (``transfer_cube``, ``insertion``).

Strategy
--------
The joint-position env cannot be scripted in Cartesian space directly, so the expert plans in gym-aloha's
*mocap* end-effector model (``bimanual_viperx_ee_*.xml``: each gripper welded to a mocap body) and hands
the recorded joint trajectory to the joint-position env, the route ALOHA's own scripted data took (ACT,
Zhao et al. 2023, MIT licence; the phase timings below follow its published scripted policy, the code is
ours):

1. read the objects' initial poses from the simulator (``obs.privileged``: the ``AlohaEnv``);
2. build a timed waypoint schedule per arm (tool point, gripper orientation, gripper opening) from them;
3. drive the mocap bodies along the schedule (position linear, orientation slerp, opening linear), one
   50 Hz step at a time, and record both arms' joint positions plus the commanded openings;
4. return that trajectory as ``CHUNK``-step chunks of 14-D joint positions, indexed by the env's step.

MuJoCo 3 fix: the mocap weld's rotational pull is weaker on MuJoCo 3 than on 2.3.7 (google-deepmind/mujoco
#1483, tonyzhaozh/act#45), so the gripper twists under the cube's weight and drops it: scripted success
falls from 10/10 to 2/20 (transfer) and 0/20 (insertion). Setting the weld ``torquescale`` to 5
(``eq_data[:, 10]``) restores a stiff grip orientation and the recorded trajectories replay at 50/50.

The weld's reference pose (from qpos0) puts the mocap body ~13.5 cm ahead of ``gripper_link`` along the
gripper's pointing axis, between the fingertips: a mocap position is where the fingers grasp, so
waypoints are object positions plus small offsets.

The plan is open loop (the expert is a physics sanity baseline and a data source, not a closed-loop
controller): it is made once per episode from the objects' poses at reset and then replayed whatever
happens. Deterministic: the same init state gives the same actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import ClassVar

import mujoco
import numpy as np

from stress.core.aloha import CHUNK, MAX_STEPS, SUBSTEPS, asset_path
from stress.core.policy import Decision, Observation

EE_XML = {"transfer_cube": "bimanual_viperx_end_effector_transfer_cube.xml",
          "insertion": "bimanual_viperx_end_effector_insertion.xml"}
WELD_TORQUESCALE = 5.0  # the MuJoCo 3 fix (see the module docstring); 1 is MuJoCo's default
ARM_JOINTS = 6
LEFT_QPOS, RIGHT_QPOS = slice(0, 6), slice(8, 14)  # arm joints in qpos (each arm: 6 joints + 2 finger slides)
OPEN, CLOSED = 1.0, 0.0  # normalised gripper opening, gym-aloha's convention
PITCH_DOWN = np.deg2rad(60)  # grasp from above at 60 deg: the wrist reaches the whole table range without flipping


def _quat(axis, angle: float) -> np.ndarray:
    q = np.empty(4)
    mujoco.mju_axisAngle2Quat(q, np.asarray(axis, dtype=np.float64), angle)
    return q


def _mul(*quats: np.ndarray) -> np.ndarray:
    out = quats[0]
    for q in quats[1:]:
        res = np.empty(4)
        mujoco.mju_mulQuat(res, out, q)
        out = res
    return out


def _slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    """Rotation a fraction ``s`` of the way from ``q0`` to ``q1`` (shortest arc)."""
    q1 = q1 if np.dot(q0, q1) >= 0 else -q1
    delta = np.empty(3)
    mujoco.mju_subQuat(delta, q1, q0)  # q1 = q0 * exp(delta), delta in q0's frame
    out = q0.copy()
    mujoco.mju_quatIntegrate(out, delta, s)
    return out


# Gripper orientations in the world: ``base`` turns the gripper's pointing axis (its local +x) towards the
# table centre (left arm: +x, right arm: -x), then pitch (about the gripper's y: positive points the
# fingers down) and roll (about its pointing axis).
BASE = {"left": np.array([1.0, 0.0, 0.0, 0.0]), "right": _quat([0, 0, 1], np.pi)}


def gripper_quat(arm: str, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    return _mul(BASE[arm], _quat([0, 1, 0], pitch), _quat([1, 0, 0], roll))


@dataclass(frozen=True)
class Waypoint:
    """Where one arm should be at control step ``t``: tool point (m, world), gripper orientation (world
    quaternion of ``gripper_link``), gripper opening (0 closed .. 1 open)."""

    t: int
    pos: tuple[float, float, float]
    quat: tuple[float, float, float, float]
    grip: float


def _wp(t: int, pos, quat, grip: float) -> Waypoint:
    return Waypoint(t, tuple(float(v) for v in pos), tuple(float(v) for v in quat), float(grip))


def interpolate(waypoints: list[Waypoint], t: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Pose and opening at step ``t``: linear in position and opening, slerp in orientation; held after the
    last waypoint."""
    if t >= waypoints[-1].t:
        last = waypoints[-1]
        return np.array(last.pos), np.array(last.quat), last.grip
    for a, b in zip(waypoints, waypoints[1:]):
        if a.t <= t < b.t:
            s = (t - a.t) / (b.t - a.t)
            pos = (1 - s) * np.array(a.pos) + s * np.array(b.pos)
            return pos, _slerp(np.array(a.quat), np.array(b.quat), s), (1 - s) * a.grip + s * b.grip
    raise ValueError(f"step {t} before the first waypoint")


def plan_transfer(box: np.ndarray, start: dict[str, Waypoint]) -> dict[str, list[Waypoint]]:
    """Right arm picks the cube from above and carries it to a meeting point in mid-air; the left arm,
    rolled 90 deg so its fingers close vertically (the right fingers hold the cube's side faces), comes in
    level, closes on the top and bottom faces, then the right hand opens and both arms back off."""
    meet = np.array([0.0, 0.5, 0.25])
    pick = gripper_quat("right", PITCH_DOWN)
    receive = gripper_quat("left", 0.0, np.pi / 2)
    right = [
        start["right"],
        _wp(90, box + [0, 0, 0.08], pick, OPEN),  # above the cube
        _wp(130, box + [0, 0, -0.015], pick, OPEN),  # fingers around it, just above the table
        _wp(170, box + [0, 0, -0.015], pick, CLOSED),  # grasp
        _wp(200, meet + [0.05, 0, 0], pick, CLOSED),  # lift towards the meeting point
        _wp(220, meet, pick, CLOSED),
        _wp(310, meet, pick, OPEN),  # let go while the left hand closes
        _wp(360, meet + [0.1, 0, 0], pick, OPEN),  # back off to the right
    ]
    left = [
        start["left"],
        _wp(100, meet + [-0.1, 0, -0.02], receive, OPEN),  # wait beside the meeting point
        _wp(260, meet + [0.02, 0, -0.02], receive, OPEN),  # slide in around the held cube
        _wp(310, meet + [0.02, 0, -0.02], receive, CLOSED),  # take it
        _wp(360, meet + [-0.1, 0, -0.02], receive, CLOSED),  # pull it away from the right hand
    ]
    return {"left": left, "right": right}


def plan_insertion(peg: np.ndarray, socket: np.ndarray, start: dict[str, Waypoint]) -> dict[str, list[Waypoint]]:
    """Both arms grasp from above at the same time (left: socket, right: peg), lift them to face each other
    along x at a meeting height, then close in until the peg enters the socket and touches its pin."""
    meet = np.array([0.0, 0.5, 0.15])
    lift = 0.00715  # the peg rides this much higher than the socket's centre in the right hand
    grasp = {"left": gripper_quat("left", PITCH_DOWN), "right": gripper_quat("right", PITCH_DOWN)}
    plans = {}
    for arm, obj, side, height in (("left", socket, -1.0, 0.0), ("right", peg, 1.0, lift)):
        q = grasp[arm]
        plans[arm] = [
            start[arm],
            _wp(120, obj + [0, 0, 0.08], q, OPEN),  # above the object
            _wp(170, obj + [0, 0, -0.03], q, OPEN),  # fingers around it
            _wp(220, obj + [0, 0, -0.03], q, CLOSED),  # grasp
            _wp(285, meet + [side * 0.1, 0, height], q, CLOSED),  # lift, facing each other
            _wp(340, meet + [side * 0.05, 0, height], q, CLOSED),  # insert
        ]
    return plans


@cache
def _ee_model(task: str) -> mujoco.MjModel:
    model = mujoco.MjModel.from_xml_path(str(asset_path(EE_XML[task])))
    welds = model.eq_type == mujoco.mjtEq.mjEQ_WELD
    model.eq_data[welds, 10] = WELD_TORQUESCALE
    return model


def _pose(pos: np.ndarray, quat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(pos, dtype=np.float64), np.asarray(quat, dtype=np.float64)


class EndEffectorPlanner:
    """gym-aloha's mocap end-effector model of a task (with the weld fix), used to turn waypoint schedules
    into joint trajectories."""

    def __init__(self, task: str):
        self.task = task
        self.model = _ee_model(task)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.grippers = {arm: m.body(f"vx300s_{arm}/gripper_link").id for arm in ("left", "right")}
        self.mocap = {arm: int(m.body_mocapid[m.body(f"mocap_{arm}").id]) for arm in ("left", "right")}
        # weld reference pose (gripper_link in the mocap frame), per arm, from eq_data[3:10]
        self.rel = {}
        for e in np.flatnonzero(m.eq_type == mujoco.mjtEq.mjEQ_WELD):
            arm = "left" if m.eq_obj1id[e] == m.body("mocap_left").id else "right"
            self.rel[arm] = _pose(m.eq_data[e, 3:6], m.eq_data[e, 6:10])

    def _mocap_pose(self, arm: str, tool: np.ndarray, grip_quat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mocap pose that holds ``gripper_link`` at orientation ``grip_quat`` with the mocap point at ``tool``:
        gripper = mocap * rel, so mocap quat = gripper quat * rel^-1."""
        rel_pos, rel_quat = self.rel[arm]
        inv = np.empty(4)
        mujoco.mju_negQuat(inv, rel_quat)
        return tool, _mul(grip_quat, inv)

    def start(self, objects: np.ndarray) -> dict[str, Waypoint]:
        """Reset to gym-aloha's start pose with the objects at ``objects`` (free-joint qpos, concatenated);
        return each arm's current pose as the first waypoint."""
        from gym_aloha.constants import START_ARM_POSE, normalize_puppet_gripper_position

        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[:16] = START_ARM_POSE
        d.qpos[16 : 16 + len(objects)] = objects
        mujoco.mj_forward(m, d)
        opening = float(normalize_puppet_gripper_position(START_ARM_POSE[6]))
        start = {}
        for arm, body in self.grippers.items():
            # the mocap point of the current gripper pose: gripper = mocap * rel  =>  mocap = gripper * rel^-1
            rel_pos, rel_quat = self.rel[arm]
            inv_pos, inv_quat = np.empty(3), np.empty(4)
            mujoco.mju_negPose(inv_pos, inv_quat, rel_pos, rel_quat)
            pos, quat = np.empty(3), np.empty(4)
            mujoco.mju_mulPose(pos, quat, d.xpos[body], d.xquat[body], inv_pos, inv_quat)
            start[arm] = _wp(0, pos, d.xquat[body], opening)
        return start

    def run(self, plans: dict[str, list[Waypoint]], steps: int) -> np.ndarray:
        """Drive the mocap bodies along ``plans`` for ``steps`` control steps; return the joint-position
        actions (steps x 14) for the joint-position env: per arm the joints reached after the step and the
        opening commanded for it."""
        from gym_aloha.constants import unnormalize_puppet_gripper_position

        m, d = self.model, self.data
        actions = np.empty((steps, 14))
        for t in range(steps):
            grips = {}
            for i, arm in enumerate(("left", "right")):
                tool, quat, grips[arm] = interpolate(plans[arm], t)
                d.mocap_pos[self.mocap[arm]], d.mocap_quat[self.mocap[arm]] = self._mocap_pose(arm, tool, quat)
                finger = unnormalize_puppet_gripper_position(grips[arm])
                d.ctrl[2 * i : 2 * i + 2] = finger, -finger
            mujoco.mj_step(m, d, SUBSTEPS)
            actions[t, 0:6], actions[t, 6] = d.qpos[LEFT_QPOS], grips["left"]
            actions[t, 7:13], actions[t, 13] = d.qpos[RIGHT_QPOS], grips["right"]
        return actions


def plan_episode(task: str, objects: np.ndarray, steps: int = MAX_STEPS) -> np.ndarray:
    """The expert's joint trajectory (steps x 14) for a task whose objects start at ``objects``
    (free-joint qpos: the box; or the peg then the socket)."""
    planner = EndEffectorPlanner(task)
    start = planner.start(objects)
    if task == "transfer_cube":
        plans = plan_transfer(objects[:3], start)
    else:
        plans = plan_insertion(objects[:3], objects[7:10], start)
    return planner.run(plans, steps)


class AlohaExpertPolicy:
    """Privileged open-loop ALOHA expert: plans the episode in the mocap model at its first query, then
    returns ``CHUNK``-step slices of the joint trajectory at the env's current step."""

    name: ClassVar[str] = "aloha-expert"
    modes: ClassVar[tuple[str, ...]] = ("direct",)
    uses_images: ClassVar[bool] = False
    simulators: ClassVar[tuple[str, ...]] = ("aloha",)  # it reads AlohaEnv's object poses
    seeded: ClassVar[bool] = False  # its plan depends on the scene only: the seed changes nothing (stress card says so)

    def __init__(self, chunk: int = CHUNK):
        self.chunk = chunk
        self._plan: np.ndarray | None = None
        self._planned_for: tuple | None = None

    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation: str | None = None) -> None:
        if mode != "direct":
            raise ValueError(f"the aloha expert has no {mode!r} mode")
        # the plan depends only on the scene, not on the seed: keep it when the same scene comes back
        # (e.g. a counterfactual restart from a snapshot of the same episode)

    def act(self, obs: Observation) -> Decision:
        env = obs.privileged
        objects = env.initial_object_qpos  # the poses the episode started from: the open-loop plan's input
        key = (env.task, objects.tobytes())
        if self._planned_for != key:
            self._plan, self._planned_for = plan_episode(env.task, objects, env.max_steps), key
        step = min(obs.step, len(self._plan) - 1)
        chunk = self._plan[step : step + self.chunk]
        if len(chunk) < self.chunk:  # past the plan's end: hold its last pose
            chunk = np.vstack([chunk, np.repeat(self._plan[-1:], self.chunk - len(chunk), axis=0)])
        return Decision(actions=chunk, info={"planned_steps": len(self._plan)})
