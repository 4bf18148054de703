"""Camera pose and field of view (model layer, per camera): agentview orbited about the point it looks
at, moved closer or further, zoomed; the wrist camera turned and shifted on the hand, zoomed.

Edits ``model.cam_pos``, ``model.cam_quat`` and ``model.cam_fovy`` of the targeted camera(s) only;
the env restores them at every reset. Cameras have no physical presence, so physics is unchanged.

Agentview (a fixed camera on the world body): the pivot is where its optical axis meets the horizontal
plane through the task's target object (roughly the table centre). ``yaw`` orbits the camera about the
vertical through the pivot, ``pitch`` raises (+) or lowers (-) it about the pivot, ``distance_scale``
moves it along the pivot line; the camera keeps looking at the pivot. Wrist (mounted on the hand):
``rotation`` turns it about its own axes (a rotation vector in degrees, camera frame: x right, y up,
z backwards), ``translation`` shifts it in the camera frame (metres). ``fovy`` is the new vertical
field of view in degrees (LIBERO: agentview 45, wrist 75).

Severity (magnitudes; signs and directions are drawn from the family's generator):

    level  agentview yaw / pitch   distance       fovy change   wrist rotation   wrist shift   wrist fovy
    1       5 deg /  3 deg         x0.96 | 1.04   +-2 deg        2 deg          0.5 cm        +-3 deg
    2      10 deg /  6 deg         x0.93 | 1.08   +-4 deg        4 deg          1.0 cm        +-6 deg
    3      15 deg /  9 deg         x0.89 | 1.12   +-6 deg        6 deg          1.5 cm        +-9 deg
    4      22 deg / 12 deg         x0.85 | 1.18   +-9 deg        9 deg          2.0 cm        +-12 deg
    5      30 deg / 15 deg         x0.80 | 1.25   +-12 deg      12 deg          3.0 cm        +-15 deg

On ALOHA the parameter groups are named after its cameras: ``top`` (the scene camera, orbited like
agentview; fovy 78) and ``left_wrist`` / ``right_wrist`` (on the hands, turned and shifted like the wrist
camera; fovy 20). Field-of-view changes and wrist rotations are scaled by the camera's fovy over its
LIBERO counterpart's (a 12 deg turn of a 20 deg view would leave little of it). gym-aloha's cameras are
``targetbody`` look-at cameras (MuJoCo recomputes their orientation, ignoring ``cam_quat``; ``top`` looks
straight down, so yaw about the vertical would not move it): a perturbed one is first frozen as a fixed
camera at its current orientation (``cam_mode``, restored at every reset), then edited as on LIBERO.

Realisation: per targeted camera the mean absolute pixel change (0-255) against the clean render of
the same state, and the pose actually achieved in the world (position shift in m, rotation in degrees,
fovy change); a targeted camera whose image did not change is not realised.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import mujoco
import numpy as np

from perturbations.base import Perturbation, register
from stress.core.cameras import CAMERAS
from stress.core.errors import InvalidScene, NotRealised
from stress.core.spec import Layer
from perturbations.space import Group, ParamSpace, Real, Vector
from stress.core.errors import UserError

# every simulator's cameras (LIBERO's first): their stock fovy and the LIBERO camera whose rig they share
BASE_FOVY = {"agentview": 45.0, "wrist": 75.0, "top": 78.0, "left_wrist": 20.0, "right_wrist": 20.0}
RIG = {"agentview": "agentview", "wrist": "wrist", "top": "agentview", "left_wrist": "wrist", "right_wrist": "wrist"}
SIMULATOR_OF = {"agentview": "LIBERO", "wrist": "LIBERO", "top": "ALOHA", "left_wrist": "ALOHA", "right_wrist": "ALOHA"}
# level -> (yaw deg, pitch deg, distance change, agentview fovy change, wrist rotation deg, wrist shift m, wrist fovy change)
LEVELS = {
    1: (5.0, 3.0, 0.04, 2.0, 2.0, 0.005, 3.0),
    2: (10.0, 6.0, 0.08, 4.0, 4.0, 0.010, 6.0),
    3: (15.0, 9.0, 0.12, 6.0, 6.0, 0.015, 9.0),
    4: (22.0, 12.0, 0.18, 9.0, 9.0, 0.020, 12.0),
    5: (30.0, 15.0, 0.25, 12.0, 12.0, 0.030, 15.0),
}
MAX_YAW, MAX_PITCH, MAX_ROTATION, MAX_TRANSLATION = 180.0, 60.0, 90.0, 0.2
MIN_ELEVATION, MAX_ELEVATION = 5.0, 89.0  # degrees above the pivot's horizontal plane


def _quat(axis, angle_rad: float) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, np.asarray(axis, dtype=float), angle_rad)
    return quat


def _mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, a, b)
    return out


def _matrix(quat: np.ndarray) -> np.ndarray:
    out = np.zeros(9)
    mujoco.mju_quat2Mat(out, quat)
    return out.reshape(3, 3)



def _signed(rng: np.random.Generator, magnitude: float) -> float:
    return float(magnitude if rng.integers(2) else -magnitude)


def _direction(rng: np.random.Generator, magnitude: float) -> list[float]:
    vec = rng.normal(size=3)
    return [float(v) for v in magnitude * vec / np.linalg.norm(vec)]


@register
class Camera(Perturbation):
    name = "camera"
    layer = Layer.MODEL
    per_camera = True
    preserves_physics = True
    needs = frozenset({"camera_poses"})
    summary = "camera pose and field of view: agentview orbited/zoomed about the table, wrist camera turned/shifted on the hand"
    severity_meaning = (
        "agentview yaw 5/10/15/22/30 deg, pitch 3/6/9/12/15 deg, distance x0.96-1.04 .. x0.8-1.25, fovy +-2..12 deg; "
        "wrist rotation 2/4/6/9/12 deg, shift 0.5/1/1.5/2/3 cm, fovy +-3..15 deg"
    )
    space = None  # set below: LIBERO's cameras (docs and the declared default); space_for gives each simulator's

    def space_for(self, simulator_cameras: tuple[str, ...]) -> ParamSpace:
        return camera_space(tuple(simulator_cameras))

    def check_params(self, params: dict[str, Any]) -> None:
        # any simulator's cameras here; check_params_on narrows them to the spec's simulator's
        camera_space(tuple(BASE_FOVY)).validate(self.name, params)

    def check_params_on(self, simulator, params: dict[str, Any]) -> None:
        camera_space(tuple(simulator.cameras)).validate(self.name, params)

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        yaw, pitch, distance, fovy, rotation, shift, wrist_fovy = LEVELS[severity]
        params: dict[str, Any] = {}
        for camera in (c for c in BASE_FOVY if c in cameras):  # a fixed order: LIBERO's draws are unchanged
            scale = BASE_FOVY[camera] / BASE_FOVY[RIG[camera]]  # exactly 1 on LIBERO
            if RIG[camera] == "agentview":
                params[camera] = {
                    "yaw": _signed(rng, yaw),
                    "pitch": _signed(rng, pitch),
                    "distance_scale": 1.0 + distance if rng.integers(2) else 1.0 / (1.0 + distance),
                    "fovy": BASE_FOVY[camera] + _signed(rng, fovy * scale),
                }
            else:
                params[camera] = {
                    "rotation": _direction(rng, rotation * scale),
                    "translation": _direction(rng, shift),
                    "fovy": BASE_FOVY[camera] + _signed(rng, wrist_fovy * scale),
                }
        return params

    def changed_cameras(self, params: dict[str, Any]) -> tuple[str, ...]:
        """The cameras whose parameters differ from the identity (a camera given at identity is left alone,
        as an absent one: moving it there and back could change its pose by rounding)."""
        out = []
        for group in camera_space(tuple(c for c in BASE_FOVY if c in params)).params:
            values = params.get(group.name) or {}
            for f in group.fields:
                identity = [f.identity] * f.length if isinstance(f, Vector) else f.identity
                if f.name in values and values[f.name] != identity:
                    out.append(group.name)
                    break
        return tuple(out)

    def is_identity(self, params: dict[str, Any]) -> bool:
        return not self.changed_cameras(params)

    def apply_model(self, env, params: dict[str, Any]) -> None:
        model = env.model  # cam_* fields are restored to pristine before this hook runs
        for camera in self.changed_cameras(params):
            if camera not in env.cameras:  # explicit params validated for another simulator
                raise UserError(f"camera parameters for {camera!r} on {env.simulator}; valid: {', '.join(env.cameras)}")
            cam = env.camera_id(camera)
            _freeze(model, env.data, cam)
            if RIG[camera] == "agentview":
                self._orbit(env, model, cam, params[camera])
                continue
            values = params[camera]
            rotation = np.deg2rad(np.asarray(values.get("rotation", [0.0, 0.0, 0.0]), dtype=float))
            angle = float(np.linalg.norm(rotation))
            quat = model.cam_quat[cam].copy()
            # the shift is in the camera frame as it was mounted, then the camera turns about itself
            model.cam_pos[cam] += _matrix(quat) @ np.asarray(values.get("translation", [0.0, 0.0, 0.0]), dtype=float)
            if angle:
                model.cam_quat[cam] = _mul(quat, _quat(rotation / angle, angle))
            if "fovy" in values:
                model.cam_fovy[cam] = values["fovy"]

    @staticmethod
    def _orbit(env, model, cam: int, values: dict[str, Any]) -> None:
        if model.cam_bodyid[cam] != 0:
            raise InvalidScene("scene camera is not fixed to the world; cannot orbit it")
        pos, quat = model.cam_pos[cam].copy(), model.cam_quat[cam].copy()
        rot = _matrix(quat)
        forward, right = -rot[:, 2], rot[:, 0]  # MuJoCo cameras look along -z, x is image right
        height = env.object_position(env.target_object)[2]
        if forward[2] >= -1e-6 or pos[2] <= height:
            raise InvalidScene("scene camera does not look down at the target's height; cannot orbit it")
        pivot = pos + forward * (height - pos[2]) / forward[2]
        # pitch turns about the camera's horizontal right axis; negative angle raises a camera that looks down
        right_h = np.array([right[0], right[1], 0.0])
        turn = _mul(_quat([0.0, 0.0, 1.0], np.deg2rad(values.get("yaw", 0.0))),
                    _quat(right_h / np.linalg.norm(right_h), -np.deg2rad(values.get("pitch", 0.0))))
        offset = np.zeros(3)
        mujoco.mju_rotVecQuat(offset, pos - pivot, turn)
        elevation = np.degrees(np.arcsin(offset[2] / np.linalg.norm(offset)))
        # (no pitch: the stock elevation stands, e.g. ALOHA's top camera looking straight down, 90 deg)
        if values.get("pitch", 0.0) and not MIN_ELEVATION <= elevation <= MAX_ELEVATION:
            raise InvalidScene(f"agentview elevation {elevation:.1f} deg after pitch; valid: {MIN_ELEVATION:g}-{MAX_ELEVATION:g}")
        model.cam_pos[cam] = pivot + offset * values.get("distance_scale", 1.0)
        model.cam_quat[cam] = _mul(turn, quat)
        if "fovy" in values:
            model.cam_fovy[cam] = values["fovy"]

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        cameras = self.changed_cameras(params)
        if not cameras:
            return {}
        data, model = env.data, env.model
        ids = {camera: env.camera_id(camera) for camera in cameras}
        perturbed = {c: (data.cam_xpos[i].copy(), data.cam_xmat[i].reshape(3, 3).copy(), float(model.cam_fovy[i])) for c, i in ids.items()}
        with env.applier.clean_model():
            clean = {c: (data.cam_xpos[i].copy(), data.cam_xmat[i].reshape(3, 3).copy(), float(model.cam_fovy[i])) for c, i in ids.items()}
        change = env.applier.image_change_vs_clean(cameras)
        record = {"image_change": change, "pose_change": {}}
        for camera in cameras:
            (pos, mat, fovy), (pos0, mat0, fovy0) = perturbed[camera], clean[camera]
            cos = np.clip((np.trace(mat0.T @ mat) - 1.0) / 2.0, -1.0, 1.0)
            record["pose_change"][camera] = {
                "position_m": float(np.linalg.norm(pos - pos0)),
                "rotation_deg": float(np.degrees(np.arccos(cos))),
                "fovy_deg": fovy - fovy0,
            }
            if change[camera] == 0.0:
                raise NotRealised(f"camera perturbation left camera {camera} unchanged")
        return record


def _freeze(model, data, cam: int) -> None:
    """Make a look-at camera (mode targetbody/targetbodycom: MuJoCo recomputes its orientation, ignoring
    ``cam_quat``) a fixed one at its current orientation relative to its body; ``cam_mode`` is restored at
    every reset. Any other camera (fixed, or tracking a body at a fixed orientation) is left alone."""
    if model.cam_mode[cam] not in (int(mujoco.mjtCamLight.mjCAMLIGHT_TARGETBODY), int(mujoco.mjtCamLight.mjCAMLIGHT_TARGETBODYCOM)):
        return
    body_quat, cam_quat = np.zeros(4), np.zeros(4)
    mujoco.mju_mat2Quat(cam_quat, data.cam_xmat[cam])
    mujoco.mju_negQuat(body_quat, data.xquat[model.cam_bodyid[cam]])
    model.cam_quat[cam] = _mul(body_quat, cam_quat)
    model.cam_mode[cam] = int(mujoco.mjtCamLight.mjCAMLIGHT_FIXED)


def _orbit_group(camera: str) -> Group:
    fovy = BASE_FOVY[camera]
    return Group(camera, (
        Real("yaw", -MAX_YAW, MAX_YAW, "deg", "orbit about the vertical through the pivot", identity=0.0, step=2.0),
        Real("pitch", -MAX_PITCH, MAX_PITCH, "deg", "raise (+) or lower (-) about the pivot", identity=0.0, step=1.0),
        Real("distance_scale", 0.25, 4.0, "", "factor on the distance to the pivot", identity=1.0, step=0.02),
        Real("fovy", 0.0, 180.0, "deg", f"vertical field of view ({SIMULATOR_OF[camera]}: {fovy:g})", identity=fovy, step=2.0, low_open=True, high_open=True),
    ), f"{camera}, orbited about its pivot (where its optical axis meets the target's height); each field optional")


def _mount_group(camera: str) -> Group:
    fovy = BASE_FOVY[camera]
    return Group(camera, (
        Vector("rotation", 3, -MAX_ROTATION, MAX_ROTATION, "deg", "[rx, ry, rz] rotation vector in the camera frame (x right, y up, z backwards)", identity=0.0, step=2.0),
        Vector("translation", 3, -MAX_TRANSLATION, MAX_TRANSLATION, "m", "[dx, dy, dz] shift in the camera frame", identity=0.0, step=0.005),
        Real("fovy", 0.0, 180.0, "deg", f"vertical field of view ({SIMULATOR_OF[camera]}: {fovy:g})", identity=fovy, step=2.0, low_open=True, high_open=True),
    ), f"{camera} camera, turned and shifted on the hand; each field optional")


@cache
def camera_space(cameras: tuple[str, ...]) -> ParamSpace:
    """The parameters on a simulator with these cameras: one optional group per camera, named after it."""
    unknown = [c for c in cameras if c not in BASE_FOVY]
    if unknown:
        raise UserError(f"camera perturbation has no rig for camera {unknown[0]!r}; valid: {', '.join(BASE_FOVY)}")
    return ParamSpace(*(_orbit_group(c) if RIG[c] == "agentview" else _mount_group(c) for c in cameras))


Camera.space = camera_space(CAMERAS)
