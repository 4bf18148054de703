"""Privileged scripted pick-and-place expert for LIBERO (libero_spatial ``on``, libero_object ``in``) and
robosuite's own tasks (suite ``robosuite``: Lift ``lift``, PickPlaceCan ``in`` a bin region, Stack ``on``).

Strategy
--------
The expert reads the scene through ``obs.privileged`` (a robosuite-based env: ``LiberoEnv``, ``RobosuiteEnv``;
its ``goal``, ``object_bodies`` and, where it has target regions, ``region_box``) and the scene queries the env
provides (``env.scene``, a ``PandaScene``): object poses, their collision geometry (MuJoCo geom AABBs
transformed into world / body frames), the end-effector pose and velocity, finger contacts. It never looks at
images.

A grasp is planned from geometry:
  * bowls are grasped by the rim: the fingers straddle the wall on the side of the bowl with the most
    free space around it, the closing axis radial, so no yaw is needed (fingers close along world y);
  * other objects (grocery items) are grasped over their body-frame box centre, across the narrowest
    horizontal side, the gripper yawed (mod pi, the shortest way) so the fingers close along it; tall
    items are held by their top (the fingers are short: the palm sits 2.6 cm above the grip site), flat
    ones as low as the floor allows.

A phase machine then drives the OSC_POSE delta controller: approach above the grasp point (yaw-aligning on
the way), descend, close, lift to a carry height that clears the placement target, move so the *object*
(not the hand) is above the target (plate centre / basket region), lower, open, retreat.

Each decision returns a chunk of ``CHUNK`` actions executed open-loop. To make them land, the chunk is
planned against a per-axis linear model of the OSC response (fitted on this controller: per step the
hand moves ``C_POS*u + C_ACT*a`` and its velocity-per-step becomes ``C_VEL*u + C_VEL_ACT*a``), starting from
the measured pose and velocity; the phase machine advances on the *predicted* state, so a chunk can span
several phases. At each new decision the measured state corrects the drift, and the phase is validated:
  * the fingers only close in a chunk that *started* measurably aligned over the grasp point (xy < 1.2 cm,
    yaw < 0.15 rad): the model drifts most while turning, and an off-target close knocks items over;
  * a phase that made no progress over a whole chunk is blocked by contact (fingertips on the floor, an
    item on the basket rim): descend then closes, lower then releases;
  * a lost or missed grasp (both fingers no longer touch the object) sends the expert back to the
    approach; a finished place that did not satisfy the goal re-plans from scratch;
  * an object already held in a closed hand during the approach (another policy grasped it while the
    expert only labels its states, as in DAgger) moves the expert on to the lift.

Action noise (``action_noise`` > 0) is Gaussian on the six arm dimensions, drawn from the policy's own
generator seeded by ``reset``; with noise 0 the expert is deterministic.
"""

from __future__ import annotations

from typing import ClassVar

import mujoco
import numpy as np

from stress.core.policy import Decision, Observation

CHUNK = 16
POS_SCALE, ROT_SCALE = 0.05, 0.5  # controller output_max: metres / radians per unit action
# Per-step linear model of the OSC response (position, m); rotation uses the same with ROT_GAIN.
C_POS, C_ACT, C_VEL, C_VEL_ACT = 0.67, 0.004, 0.40, 0.0071
STEADY = C_POS * C_VEL_ACT / (1 - C_VEL) + C_ACT  # metres per step at a = 1
ROT_GAIN = 0.82 * ROT_SCALE / POS_SCALE  # rotation responds ~20 % slower than position, per unit action
ROT_LIMIT = 0.5  # rotation speed saturates above this (0.049 rad/step at 0.5, only 0.066 at 1)
K_P, K_D = 0.8, 0.8  # feedback on predicted error / velocity, in steps-to-go units
R_DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # gripper down, fingers along y
FINGERTIP = 0.011  # fingertips reach this far below the grip site
PALM = 0.022  # the palm is ~0.026 above the grip site: an object's top must stay below it
CLOSE_STEPS, OPEN_STEPS = 12, 8  # the Panda fingers need ~10 / ~8 steps to close / open
HOVER = 0.08  # approach height above the grasp point
LIFT = 0.12  # how high a "lift" goal carries the object above where it was grasped (robosuite's Lift: 4 cm)
OPEN_WIDTH = 0.072  # finger opening (m, qpos left - right) below which the gripper is closing or holding; fully open ~0.079


def _rotvec(rot: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix."""
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, rot.reshape(-1))
    vec = np.empty(3)
    mujoco.mju_quat2Vel(vec, quat, 1.0)
    return vec


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _wrap(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _axis_angle(vec: np.ndarray) -> np.ndarray:
    """Rotation matrix of an axis-angle vector."""
    quat = np.empty(4)
    mujoco.mju_axisAngle2Quat(quat, vec / (np.linalg.norm(vec) + 1e-12), np.linalg.norm(vec))
    rot = np.empty(9)
    mujoco.mju_quat2Mat(rot, quat)
    return rot.reshape(3, 3)


def _yaw_of(rot: np.ndarray) -> float:
    """Yaw of the gripper: 0 when the fingers close along world y (rot's x axis is the closing axis)."""
    return float(np.arctan2(-rot[0, 0], rot[1, 0]))


class ExpertPolicy:
    """Scripted privileged pick-and-place (see module docstring)."""

    name: ClassVar[str] = "expert"
    modes: ClassVar[tuple[str, ...]] = ("direct",)
    simulators: ClassVar[tuple[str, ...]] = ("libero", "robosuite")  # its grasp planner reads a robosuite 1.4 scene
    uses_images: ClassVar[bool] = False

    def __init__(self, action_noise: float = 0.0, seed: int = 0):
        self.action_noise = float(action_noise)
        self.reset("", seed)

    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation: str | None = None) -> None:
        self.instruction = instruction
        self._rng = np.random.default_rng(seed)
        self._phase = "approach"
        self._count = 0
        self._grasp: dict | None = None
        self._placing: dict | None = None
        self._lift_xy = np.zeros(2)
        self._aligned = self._stalled = False
        self._last_pos, self._last_phase = np.full(3, np.inf), ""

    # --- planning ---------------------------------------------------------------------------------------
    def _task(self, env) -> tuple[str, str, str]:
        predicate, obj, target = (list(env.goal[0][:3]) + [""])[:3]  # "lift" has no target
        return predicate.lower(), obj, target

    def _plan_grasp(self, scene, obj: str) -> dict:
        """Grasp point (grip-site position) and gripper yaw for the object's current pose."""
        lo, hi = scene.world_box(obj)
        centre = (lo + hi) / 2
        if "bowl" in obj:
            # the fingers straddle the wall: grip site just inside the outer radius, below the rim
            radius = 0.5 * min(hi[0] - lo[0], hi[1] - lo[1]) - 0.01
            point = max((centre + side * np.array([0.0, radius, 0.0]) for side in (1.0, -1.0)), key=lambda p: self._clearance(scene, obj, p, lo[2]))
            point[2] = hi[2] - PALM
            return {"point": point, "yaw": 0.0, "hover": self._hover(point, hi)}
        blo, bhi, pos, rot = scene.body_box(obj)
        point = pos + rot @ ((blo + bhi) / 2)
        # the narrowest horizontal body axis is the closing direction
        extent = bhi - blo
        horizontal = [i for i in range(3) if abs(rot[2, i]) < 0.7]
        axis = min(horizontal, key=lambda i: extent[i])
        direction = rot[:, axis]
        yaw = float(np.arctan2(-direction[0], direction[1]))
        if max(extent[i] for i in horizontal) - extent[axis] < 0.005:  # round: no preferred side
            yaw = _yaw_of(scene.eef()[1])
        yaw = _yaw_of(scene.eef()[1]) + _wrap(2 * (yaw - _yaw_of(scene.eef()[1]))) / 2  # fingers are symmetric: shortest turn mod pi
        # as deep as the palm allows (tall items are held by the top), fingertips clear of the floor
        point[2] = max(hi[2] - PALM, lo[2] + FINGERTIP + 0.004)
        return {"point": point, "yaw": yaw, "hover": self._hover(point, hi)}

    @staticmethod
    def _hover(point: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Approach point above the grasp: fingertips well above the object's top (the hand sags ~2 cm
        below the model's prediction in fast lateral moves)."""
        return np.array([*point[:2], max(point[2] + HOVER, hi[2] + FINGERTIP + 0.04)])

    def _clearance(self, scene, obj: str, point: np.ndarray, floor: float) -> float:
        """Horizontal distance from a point to the nearest other object standing above ``floor``."""
        best = 1.0
        for other in scene.env.object_bodies:
            if other == obj or not len(scene.geoms(other)):
                continue
            lo, hi = scene.world_box(other)
            if hi[2] < floor + 0.01:  # what the object stands on is no obstacle
                continue
            gap = np.maximum(0.0, np.maximum(lo[:2] - point[:2], point[:2] - hi[:2]))
            best = min(best, float(np.linalg.norm(gap)))
        return best

    def _place(self, scene, predicate: str, obj: str, target: str, eef: np.ndarray) -> dict:
        """Carry and release grip-site positions that put the object above / on the target."""
        olo, _ = scene.world_box(obj)
        opos = scene.object_position(obj)
        hand_above_bottom = eef[2] - olo[2]
        if predicate == "lift":  # straight up from where it was grasped, and hold it there
            carry = self._grasp["point"][2] + LIFT
            return {"xy": self._lift_xy.copy(), "carry": carry, "release": carry, "speed": 1.0, "hold": True}
        goal = scene.object_position(target)
        xy = goal[:2] - (opos[:2] - eef[:2])  # move the object, not the hand, over the target
        region = getattr(scene.env, "region_box", lambda name: None)(target)
        if region is not None:  # a target region with its own box (robosuite's bin compartment)
            tlo, thi = region
        elif target in scene.env.object_bodies:
            tlo, thi = scene.world_box(target)
        else:  # a region site: its container is the object it is named after (basket_1_contain_region)
            owner = next(o for o in scene.env.object_bodies if target.startswith(o))
            tlo, thi = scene.world_box(owner)
        if predicate == "in":
            release = tlo[2] + 0.04  # inside the container, well clear of its floor
            carry = thi[2] + 0.04
        else:
            release = thi[2] + 0.012  # just above the support: a short, gentle drop
            carry = thi[2] + 0.06
        carry = max(carry, olo[2] + 0.03)  # always lift a little first
        speed = 1.0 if predicate == "in" else 0.5  # a container forgives a fast descent, a plate less so
        return {"xy": xy, "carry": carry + hand_above_bottom, "release": release + hand_above_bottom, "speed": speed}

    # --- acting -----------------------------------------------------------------------------------------
    def act(self, obs: Observation) -> Decision:
        env = obs.privileged
        scene = env.scene  # the adapter's scene queries (stress.envs.robosuite_base.PandaScene)
        predicate, obj, target = self._task(env)
        pos, rot = scene.eef()
        vel, ang = scene.velocity()
        # a phase that made no progress over a whole chunk is blocked by contact (the floor, a rim)
        self._stalled = self._phase == self._last_phase and bool(np.linalg.norm(pos - self._last_pos) < 0.004)
        self._last_pos, self._last_phase = pos.copy(), self._phase
        self._validate(scene, obj, env, pos, obs.proprio)
        if self._grasp is None:
            self._grasp = self._plan_grasp(scene, obj)
        # closing is only allowed in a chunk that starts measurably aligned over the grasp point: the
        # model drifts most while turning, and fingers closing off-target knock tall items over
        self._aligned = bool(
            np.linalg.norm(pos[:2] - self._grasp["point"][:2]) < 0.012 and abs(_wrap(_yaw_of(scene.eef()[1]) - self._grasp["yaw"])) < 0.15
        )
        if self._phase in ("lift", "transport", "lower"):
            self._placing = self._place(scene, predicate, obj, target, pos)
        elif self._phase not in ("release", "retreat"):
            self._placing = None

        # rollout on the predicted state: p position, u velocity per step, e rotation error, w spin per step
        p, u, w = pos.copy(), vel * scene.control_timestep, ang * scene.control_timestep
        actions = []
        for _ in range(CHUNK):
            goal, yaw, grip, limit = self._target(p, u, rot)
            e = _rotvec(_rot_z(yaw) @ R_DOWN @ rot.T)
            a = np.zeros(7)
            a[:3] = np.clip((K_P * (goal - p) - K_D * u) / STEADY, -limit, limit)
            a[3:6] = np.clip((K_P * e - K_D * w) / (STEADY * ROT_GAIN), -ROT_LIMIT, ROT_LIMIT)
            a[6] = grip
            # advance the model
            p = p + C_POS * u + C_ACT * a[:3]
            u = C_VEL * u + C_VEL_ACT * a[:3]
            turn = C_POS * w + C_ACT * ROT_GAIN * a[3:6]
            w = C_VEL * w + C_VEL_ACT * ROT_GAIN * a[3:6]
            rot = _axis_angle(turn) @ rot
            actions.append(a)
        actions = np.array(actions)
        if self.action_noise > 0:
            actions[:, :6] += self._rng.normal(0.0, self.action_noise, size=(len(actions), 6))
        return Decision(actions=np.clip(actions, -1.0, 1.0), info={"phase": self._phase})

    def _validate(self, scene, obj: str, env, pos: np.ndarray, proprio: np.ndarray) -> None:
        """Correct the phase from the measured state at a decision point."""
        if self._phase in ("lift", "transport", "lower") and not scene.grasped(obj):
            self._phase, self._grasp = "approach", None  # missed or dropped: grasp again
        elif self._phase in ("approach", "descend") and proprio[0] - proprio[1] < OPEN_WIDTH and scene.grasped(obj):
            # the object is in a closed hand that this expert did not close: it is labelling another policy's
            # rollout (DAgger). Carry on from the lift; re-approaching would teach that policy to let go
            self._phase, self._lift_xy = "lift", pos[:2].copy()
        elif self._phase == "retreat" and self._count >= CHUNK and not env.success():
            self._phase, self._grasp = "approach", None  # placed but the goal does not hold: retry
        elif self._phase == "approach":
            self._grasp = None  # re-plan from the object's current pose

    def _target(self, p: np.ndarray, u: np.ndarray, rot: np.ndarray):
        """Phase machine on the predicted state: (position goal, yaw goal, gripper, speed limit)."""
        grasp, place = self._grasp, self._placing
        still = np.linalg.norm(u) < 0.002
        phase = self._phase
        if phase == "approach":
            if np.linalg.norm(p[:2] - grasp["point"][:2]) < 0.008 and abs(_wrap(_yaw_of(rot) - grasp["yaw"])) < 0.1:
                phase = "descend"
        if phase == "descend" and self._aligned and (np.linalg.norm(p - grasp["point"]) < 0.006 and still or self._stalled):
            phase, self._count = "close", 0
        if phase == "close" and self._count >= CLOSE_STEPS:
            phase = "lift"
        if phase == "lift" and place is not None and p[2] > place["carry"] - 0.03:
            phase = "transport"
        if phase == "transport" and place is not None and not place.get("hold") and np.linalg.norm(p[:2] - place["xy"]) < 0.008 and still:
            phase = "lower"
        if phase == "lower" and place is not None and (abs(p[2] - place["release"]) < 0.006 or self._stalled):
            phase, self._count = "release", 0
        if phase == "release" and self._count >= OPEN_STEPS:
            phase, self._count = "retreat", 0
        if phase != self._phase:
            self._phase = phase
            self._lift_xy = p[:2].copy()
        self._count += 1

        yaw = grasp["yaw"]
        if phase == "approach":
            return grasp["hover"], yaw, -1.0, 1.0
        if phase == "descend":  # go down only once above the grasp point, else fix xy first
            off = np.linalg.norm(p[:2] - grasp["point"][:2]) > 0.01
            return np.array([*grasp["point"][:2], p[2] if off else grasp["point"][2]]), yaw, -1.0, 0.6
        if phase == "close":
            return grasp["point"], yaw, 1.0, 0.6
        if place is None:  # lift began inside this chunk: go straight up until the next decision
            return grasp["point"] + [0.0, 0.0, 0.1], yaw, 1.0, 1.0
        if phase == "lift":
            return np.array([*self._lift_xy, place["carry"]]), yaw, 1.0, 1.0
        if phase == "transport":
            return np.array([*place["xy"], place["carry"]]), yaw, 1.0, 1.0
        if phase == "lower":
            return np.array([*place["xy"], place["release"]]), yaw, 1.0, place["speed"]
        if phase == "release":
            return np.array([*place["xy"], place["release"]]), yaw, -1.0, 0.5
        return np.array([*p[:2], place["release"] + 0.1]), yaw, -1.0, 1.0
