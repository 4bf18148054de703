"""State-layer object pose: move objects beyond the range the shipped init states cover, or swap two.

``shift`` moves one object (the task's target by default, plus optional ``others`` by the same offset)
by a translation in the table plane and a yaw about the world z axis, relative to the pose the shipped
init state gives it. The 50 shipped init states of a task cover a small box of positions per object (LIBERO
samples them in a few-cm region) and a fixed yaw; the severity says how far *outside* that box the
object ends:

    level            1          2        3        4        5
    outside the box  0.5-1.5 cm 2-3 cm   4-5 cm   6-7 cm   8-10 cm   (Euclidean distance in the table plane)
    yaw beyond range 2-5 deg    5-10 deg 10-20 deg 20-35 deg 35-60 deg

A sample draws a direction (0-360 deg in the table plane, 0 = +x, away from the robot), the distance
outside the box and the signed yaw excess; ``apply_state`` turns them into concrete ``dx``, ``dy`` (m)
and ``dyaw`` (deg) for the scene at hand (the box is computed from ``init_states(suite, task)`` at the
object's free-joint qpos address) and writes them into the parameters, so the record holds the values
actually applied. Explicit ``dx``/``dy``/``dyaw`` are applied as given. ``swap`` exchanges the table
positions (x, y) of the target and another movable object, each keeping its own height and orientation.

The pose is written through the object's free joint (velocity zeroed); the env then runs its settle
steps. Before the shift, the same settle is run once on a snapshot of the unshifted scene (then
restored), which gives the reference every check compares with: LIBERO's init states hold objects a few
cm above their support and let them drop, so "resting where it should" only means something against the
settled, unperturbed scene. ``check`` rejects (``InvalidScene``, re-sampled by the env) a scene where a
moved object interpenetrates anything by more than 5 mm, does not rest at its reference height (fell off
the table, landed on another object), tipped over, slid more than 1.5 cm away from where the parameters
put it, pushed another object by more than 1 cm, where the task is already solved, or where the target is
out of the robot's reach (the scene's ``reach_problem``: the Panda's workspace); a yaw more than 15 deg off the requested one also
counts (the object was knocked while landing). Realisation: the displacement achieved after settling
(m, deg) versus the unshifted settled scene, and the distance outside the shipped box.

On ALOHA (the cube; the peg, or the socket by name) the same sampling and checks apply through the adapter's
queries: the box is gym-aloha's sampling box (``env.scene.init_range``), and since ALOHA's episodes start with the
objects mid-air (no settle steps) the reference and the checks read the scene after a 1 s probe settle with
the arms holding still, on a snapshot put back afterwards (``env.scene.settled_view``); the episode itself starts
from the shifted pose, which is what the open-loop expert plans from. Reach: the arm that grasps the object
(``env.scene.reach_problem``).
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from perturbations.base import Perturbation, register
from stress.core.errors import InvalidScene, NotRealised
from stress.core.spec import Layer
from perturbations.space import Choice, Free, ListOf, ParamSpace, Real
from stress.core.errors import UserError

OUTSIDE_M = {1: (0.005, 0.015), 2: (0.02, 0.03), 3: (0.04, 0.05), 4: (0.06, 0.07), 5: (0.08, 0.10)}
YAW_OUTSIDE_DEG = {1: (2.0, 5.0), 2: (5.0, 10.0), 3: (10.0, 20.0), 4: (20.0, 35.0), 5: (35.0, 60.0)}
MODES = ("shift", "swap")
MAX_SHIFT_M = 0.5
SEARCH_SHIFT_M = 0.15  # the search grid's reach: beyond it nearly every shift leaves the table or the robot's reach (docs/search.md)
PENETRATION_M = 0.005  # deeper than resting contacts ever get (those are < 1 mm)
HEIGHT_TOL_M = 0.01  # settled height vs the reference: a bowl on the plate rim sits > 1 cm higher
TILT_TOL_DEG = 20.0
YAW_TOL_DEG = 15.0  # spun while landing: knocked against something
PLACE_TOL_M = 0.015  # where the parameters put the object vs where it settled
DISTURB_TOL_M = 0.01  # other objects pushed by the shifted one while it settles


# --- helpers shared with the other state/event families -----------------------------------------------
def movable_objects(env) -> list[str]:
    return env.scene.movable_objects()


def object_name(env, name: str) -> str:
    """``target`` -> the task's target object; other names must be movable objects of the scene."""
    name = env.target_object if name == "target" else name
    if name not in movable_objects(env):
        raise UserError(f"object {name!r} not a movable object of this scene; valid: target, {', '.join(movable_objects(env))}")
    return name


def free_joint(env, name: str) -> tuple[int, int]:
    """(qpos address, dof address) of an object's free joint."""
    model = env.model
    body = env.object_bodies[name]
    for j in range(model.body_jntadr[body], model.body_jntadr[body] + model.body_jntnum[body]):
        if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
            return int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j])
    raise UserError(f"object {name!r} has no free joint: it cannot be moved")


def pose(env, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(position, 3x3 rotation) of an object's body."""
    data, body = env.data, env.object_bodies[name]
    return data.xpos[body].copy(), data.xmat[body].reshape(3, 3).copy()


def quat_to_mat(quat: np.ndarray) -> np.ndarray:
    mat = np.empty(9)
    mujoco.mju_quat2Mat(mat, np.asarray(quat, dtype=np.float64))
    return mat.reshape(3, 3)


def relative_yaw_deg(rot: np.ndarray, ref: np.ndarray) -> float:
    """Rotation about world z taking ``ref`` to ``rot`` (exact for a pure yaw)."""
    rel = rot @ ref.T
    return float(np.degrees(np.arctan2(rel[1, 0] - rel[0, 1], rel[0, 0] + rel[1, 1])))


def tilt_deg(rot: np.ndarray, ref: np.ndarray) -> float:
    """Angle between the world's vertical seen in the body frames (blind to yaw: body axes need not be
    upright, LIBERO's cans lie on their side in their mesh frame)."""
    return float(np.degrees(np.arccos(np.clip(rot[2] @ ref[2], -1.0, 1.0))))


def settled_reference(env) -> dict[str, Any]:
    """The scene after the env's settle steps *without* the state perturbation, as the checks judge it
    (``env.scene.settled_view``): run them on a snapshot, read every movable object's pose, the arm and the
    grippers' grasp points, then put the snapshot back."""
    snap = env.snapshot()
    env._settle()
    with env.scene.settled_view():
        qpos = env.data.qpos
        ref = {
            "objects": {name: pose(env, name) for name in movable_objects(env)},
            "arm_qpos": qpos[env.model.jnt_qposadr[env.scene.arm_joints()]].copy(),
            "gripper_qpos": qpos[env.scene.gripper_qpos_indexes()].copy(),
            "eef": env.scene.grip_points(),
        }
    env.restore(snap)
    return ref


def body_root_name(env, geom: int) -> str:
    model = env.model
    return mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, model.body_rootid[model.geom_bodyid[geom]]) or "world"


def deepest_contacts(env, roots: set[int]) -> list[tuple[float, int, int]]:
    """(penetration depth m, geom1, geom2) of every contact touching a body tree rooted in ``roots``."""
    model, data = env.model, env.data
    out = []
    for c in data.contact[: data.ncon]:
        if model.body_rootid[model.geom_bodyid[c.geom1]] in roots or model.body_rootid[model.geom_bodyid[c.geom2]] in roots:
            out.append((float(-c.dist), int(c.geom1), int(c.geom2)))
    return sorted(out, reverse=True)


def object_name_check(key: str):
    """Free-parameter check of an object name: only the scene at hand knows which names exist."""

    def check(family: str, value) -> None:
        if not isinstance(value, str):
            raise UserError(f"{family} {key} {value!r} invalid; valid: an object name or 'target'")

    return check


# --- geometry of the shipped range ---------------------------------------------------------------------
def shipped_range(env, name: str) -> dict[str, Any]:
    """Box of the object's (x, y) over the task's init states, and their yaw range (deg) relative to the
    object's current pose, as the scene knows it (``env.scene.init_range``: LIBERO's shipped states, gym-aloha's
    sampling box); a scene that knows none gives the one-point range of the object's current pose."""
    declared = env.scene.init_range(name)
    if declared is not None:
        return declared
    position = pose(env, name)[0]
    return {"lo": position[:2].copy(), "hi": position[:2].copy(), "yaw": (0.0, 0.0)}


def distance_outside(point: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    return float(np.linalg.norm(np.maximum(0.0, np.maximum(lo - point, point - hi))))


def shift_to_outside(start: np.ndarray, direction_deg: float, outside: float, lo, hi) -> np.ndarray:
    """Displacement along ``direction_deg`` that puts ``start`` at distance ``outside`` from the box."""
    u = np.array([np.cos(np.radians(direction_deg)), np.sin(np.radians(direction_deg))])
    low, high = 0.0, outside + float(np.linalg.norm(hi - lo)) + distance_outside(start, lo, hi) + 1e-9
    for _ in range(60):  # the distance to a convex box grows monotonically along the ray once outside
        mid = 0.5 * (low + high)
        low, high = (mid, high) if distance_outside(start + mid * u, lo, hi) < outside else (low, mid)
    return high * u


def yaw_beyond(excess: float, yaw_range: tuple[float, float]) -> float:
    """Yaw offset (deg) ending ``|excess|`` beyond the shipped yaw range, on the side of its sign."""
    if excess == 0.0:
        return 0.0
    return yaw_range[1] + excess if excess > 0 else yaw_range[0] + excess


def set_pose(env, name: str, position: np.ndarray, quat: np.ndarray) -> None:
    qadr, vadr = free_joint(env, name)
    data = env.data
    data.qpos[qadr : qadr + 3] = position
    data.qpos[qadr + 3 : qadr + 7] = quat
    data.qvel[vadr : vadr + 6] = 0.0



@register
class ObjectPose(Perturbation):
    name = "object_pose"
    layer = Layer.STATE
    needs = frozenset({"movable_objects"})
    summary = "object moved (translation + yaw) beyond the shipped init-state range, or two objects swapped"
    severity_meaning = (
        "distance outside the box of shipped positions / yaw beyond the shipped yaw: "
        "1: 0.5-1.5 cm / 2-5 deg, 2: 2-3 cm / 5-10 deg, 3: 4-5 cm / 10-20 deg, 4: 6-7 cm / 20-35 deg, 5: 8-10 cm / 35-60 deg"
    )
    space = ParamSpace(
        Choice("mode", MODES, "shift: move the object; swap: exchange the x, y of object and swap_with", searchable=False),
        Free("object", "'target' (the task's target object, default) or a movable object's name", check=object_name_check("object")),
        ListOf("others", Free("name", "a movable object's name", check=object_name_check("others")), 0, None,
               "shift: further movable objects moved by the same offset"),
        Real("dx", -MAX_SHIFT_M, MAX_SHIFT_M, "m", "shift along world x from the shipped pose (given dx, dy or dyaw win over the sampled form)", identity=0.0, step=0.01,
             search_low=-SEARCH_SHIFT_M, search_high=SEARCH_SHIFT_M),
        Real("dy", -MAX_SHIFT_M, MAX_SHIFT_M, "m", "shift along world y from the shipped pose", identity=0.0, step=0.01,
             search_low=-SEARCH_SHIFT_M, search_high=SEARCH_SHIFT_M),
        Real("dyaw", -180.0, 180.0, "deg", "rotation about world z", identity=0.0, step=2.0),
        Real("direction_deg", 0.0, 360.0, "deg", "sampled form: direction of the shift in the table plane (0 = +x, 90 = +y)", default=0.0),
        Real("outside_m", 0.0, MAX_SHIFT_M, "m", "sampled form: distance outside the box of shipped positions", default=0.0),
        Real("yaw_outside_deg", -180.0, 180.0, "deg", "sampled form: signed yaw beyond the shipped yaw range", default=0.0),
        Free("swap_with", "swap: the other movable object (default: the nearest one that is not the goal's receptacle)", check=object_name_check("swap_with")),
    )

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        return {
            "mode": "shift",
            "object": "target",
            "direction_deg": float(rng.uniform(0.0, 360.0)),
            "outside_m": float(rng.uniform(*OUTSIDE_M[severity])),
            "yaw_outside_deg": float(rng.choice([-1.0, 1.0]) * rng.uniform(*YAW_OUTSIDE_DEG[severity])),
        }

    def is_identity(self, params: dict[str, Any]) -> bool:
        if params.get("mode", "shift") == "swap":
            return False
        explicit = ("dx" in params or "dy" in params or "dyaw" in params) or "outside_m" not in params
        return explicit and params.get("dx", 0.0) == 0.0 and params.get("dy", 0.0) == 0.0 and params.get("dyaw", 0.0) == 0.0

    def apply_state(self, env, params: dict[str, Any]) -> None:
        """Resolve the concrete offsets for this scene (written into ``params``) and set the new poses."""
        if self.is_identity(params):
            return
        name = params["object"] = object_name(env, params.get("object", "target"))
        # realise() makes a fresh family instance per episode (and per re-sample), so what apply_state
        # keeps on self for check() belongs to this episode only
        self._reference = settled_reference(env)
        data = env.data
        shipped = {n: data.qpos[free_joint(env, n)[0] :][:7].copy() for n in movable_objects(env)}
        box = self._box = shipped_range(env, name)
        if params.get("mode", "shift") == "swap":
            other = params["swap_with"] = self._swap_partner(env, name, params.get("swap_with"), shipped)
            moves = {name: shipped[other][:2] - shipped[name][:2], other: shipped[name][:2] - shipped[other][:2]}
            params["dx"], params["dy"], params["dyaw"] = *(round(float(v), 5) for v in moves[name]), 0.0
            turns = {name: 0.0, other: 0.0}
        else:
            if "dx" in params or "dy" in params or "dyaw" in params:
                offset, dyaw = np.array([params.get("dx", 0.0), params.get("dy", 0.0)], dtype=float), float(params.get("dyaw", 0.0))
            else:
                offset = shift_to_outside(shipped[name][:2], params.get("direction_deg", 0.0), params["outside_m"], box["lo"], box["hi"])
                dyaw = yaw_beyond(params.get("yaw_outside_deg", 0.0), box["yaw"])
                dyaw = float((dyaw + 180.0) % 360.0 - 180.0)
            params["dx"], params["dy"], params["dyaw"] = round(float(offset[0]), 5), round(float(offset[1]), 5), round(dyaw, 4)
            group = [name] + [object_name(env, o) for o in params.get("others", [])]
            moves = {n: np.array([params["dx"], params["dy"]]) for n in group}
            turns = {n: params["dyaw"] for n in group}
        for n, move in moves.items():
            qpos = shipped[n]
            turn = np.empty(4)
            mujoco.mju_axisAngle2Quat(turn, np.array([0.0, 0.0, 1.0]), np.radians(turns[n]))
            quat = np.empty(4)
            mujoco.mju_mulQuat(quat, turn, qpos[3:])
            set_pose(env, n, qpos[:3] + np.array([move[0], move[1], 0.0]), quat)
        self._moves, self._turns = moves, turns

    @staticmethod
    def _swap_partner(env, name: str, other: str | None, shipped: dict[str, np.ndarray]) -> str:
        if other is not None:
            other = object_name(env, other)
            if other == name:
                raise UserError(f"object_pose swap_with {other!r} is the moved object itself; valid: another movable object")
            return other
        receptacles = {g[2] for g in env.goal if len(g) > 2}
        candidates = [n for n in movable_objects(env) if n != name and n not in receptacles]
        if not candidates:
            raise UserError(f"object_pose swap: no other movable object than {name!r} in this scene")
        return min(candidates, key=lambda n: float(np.linalg.norm(shipped[n][:2] - shipped[name][:2])))

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        if self.is_identity(params):
            return {}
        with env.scene.settled_view():  # LIBERO: the settled episode start as is; ALOHA: after a probe settle
            return self._check_settled(env, params)

    def _check_settled(self, env, params: dict[str, Any]) -> dict[str, Any]:
        reference, moved = self._reference["objects"], self._moves
        model = env.model
        roots = {int(model.body_rootid[env.object_bodies[n]]) for n in moved}
        contacts = deepest_contacts(env, roots)
        if contacts and contacts[0][0] > PENETRATION_M:
            depth, g1, g2 = contacts[0]
            raise InvalidScene(f"{body_root_name(env, g1)} interpenetrates {body_root_name(env, g2)} by {depth * 1000:.0f} mm")
        achieved = {}
        for n in movable_objects(env):
            pos, rot = pose(env, n)
            ref_pos, ref_rot = reference[n]
            shift = pos[:2] - ref_pos[:2]
            if n not in moved:
                if np.linalg.norm(shift) > DISTURB_TOL_M:
                    raise InvalidScene(f"moving {', '.join(moved)} pushed {n} by {np.linalg.norm(shift) * 100:.1f} cm")
                continue
            if abs(pos[2] - ref_pos[2]) > HEIGHT_TOL_M:
                raise InvalidScene(f"{n} does not rest on its support: settled {100 * (pos[2] - ref_pos[2]):+.1f} cm from its reference height")
            if tilt_deg(rot, ref_rot) > TILT_TOL_DEG:
                raise InvalidScene(f"{n} tipped over ({tilt_deg(rot, ref_rot):.0f} deg)")
            error = float(np.linalg.norm(shift - moved[n]))
            if error > PLACE_TOL_M:
                raise InvalidScene(f"{n} settled {error * 100:.1f} cm away from where the shift put it")
            turned = relative_yaw_deg(rot, ref_rot)
            if abs((turned - self._turns[n] + 180.0) % 360.0 - 180.0) > YAW_TOL_DEG:
                raise InvalidScene(f"{n} turned {turned:.0f} deg while settling instead of {self._turns[n]:.0f}")
            achieved[n] = {
                "displacement_m": [round(float(v), 5) for v in shift],
                "distance_m": round(float(np.linalg.norm(shift)), 5),
                "yaw_deg": round(turned, 3),
                "error_m": round(error, 5),
            }
        if env.success():
            raise InvalidScene("the task is already solved in the shifted scene")
        target = params["object"]
        problem = env.scene.reach_problem(target, pose(env, target)[0])
        if problem:
            raise InvalidScene(problem)
        if all(a["distance_m"] < 5e-4 and abs(a["yaw_deg"]) < 0.5 for a in achieved.values()):
            raise NotRealised(f"object_pose moved nothing ({target} stayed put)")
        box = self._box
        # the shipped box is of init-state positions, the same x, y the objects settle at (they only drop)
        return {
            "achieved": achieved,
            "outside_m": round(distance_outside(pose(env, target)[0][:2], box["lo"], box["hi"]), 5),
            "shipped_box_m": [box["lo"].round(4).tolist(), box["hi"].round(4).tolist()],
            "deepest_contact_mm": round(1000 * contacts[0][0], 2) if contacts else 0.0,
        }
