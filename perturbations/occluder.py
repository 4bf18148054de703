"""Simulator occluder: a visual-only box between a camera and the task's target object.

The box is a body of the compiled scene (``contype=0 conaffinity=0``, zero mass, no joint), so it is
physically present in every rendered frame, the true future frames included, while the physics is
untouched (the privileged expert acts identically with and without it). The agentview occluder is a
static body of the world, the wrist occluder a body welded to the wrist camera's body (it moves with
the hand and stays in front of that camera). Each sits in its camera's own geom group
(``CAMERA_GEOM_GROUP``), so only the targeted camera sees it.

The target's position is known only after the scene has settled, so ``edit_scene`` adds the bodies
parked behind their cameras and ``resolve`` places and sizes them at every reset: the box faces the
camera, on the camera-to-target ray at ``depth`` of the target's distance, shifted by ``offset``
box half-sizes; its size is searched (bisection on the box's projection over the target's pixels in a
segmentation render, then verified and refined with real renders) until the hidden share of the
target's pixels is within ``TOLERANCE`` of the level's target. The fraction is set at reset; later the
wrist box keeps its place in the wrist camera's frame, the agentview box its place in the world. A
target that is a region of an object (a drawer) is occluded through that object's pixels.

Severity = the fraction of the target object's pixels hidden in the targeted camera, measured from
segmentation renders as 1 - visible target pixels with the occluder / without it:
1: 0.2, 2: 0.4, 3: 0.6, 4: 0.8, 5: 0.95. Recorded as ``occluded_fraction`` per camera.
"""

from __future__ import annotations

import re
from typing import Any

import mujoco
import numpy as np

from perturbations.base import Perturbation, register
from stress.core.cameras import CAMERAS
from stress.core.errors import NotRealised
from stress.core.spec import Layer
from perturbations.space import Choice, Free, ListOf, ParamSpace, Real, Vector
from stress.core.cameras import CAMERA_GEOM_GROUP, CAMERA_NAMES

FRACTION_BY_SEVERITY = {1: 0.2, 2: 0.4, 3: 0.6, 4: 0.8, 5: 0.95}
TOLERANCE = 0.05  # |measured - target| occluded fraction accepted
MIN_TARGET_PIXELS = 20  # below this the fraction cannot be set within the tolerance
HALF_THICKNESS = 0.001  # m
PARK_BEHIND = 1.0  # m behind the camera: outside its view frustum
PARKED_HALF_SIZE = 1e-6  # m: a parked box casts no shadow a camera could see
CAMERA_BODY = {"agentview": None, "wrist": CAMERA_NAMES["wrist"]}  # camera the box is welded beside; None: the world
REFINE_RENDERS = 16


def body_name(camera: str) -> str:
    return f"stress_occluder_{camera}"


@register
class Occluder(Perturbation):
    name = "occluder"
    layer = Layer.SCENE
    needs = frozenset({"scene_xml"})  # a body is added to the scene's MJCF before it compiles
    per_camera = True
    preserves_physics = True
    summary = "visual-only box between the camera and the target object, sized to hide a share of its pixels"
    severity_meaning = "share of the target object's pixels hidden in the camera: 1: 0.2, 2: 0.4, 3: 0.6, 4: 0.8, 5: 0.95"
    space = ParamSpace(
        Real("fraction", 0.0, 1.0, "", "share of the target object's pixels to hide (0: no occluder)", identity=0.0, step=0.01),
        ListOf("cameras", Choice("camera", CAMERAS, "a camera", searchable=False), 1, len(CAMERAS), "cameras given an occluder body (default: both)"),
        Real("depth", 0.1, 0.9, "", "box position on the camera-to-target ray, share of the target's distance", default=0.5, step=0.02),
        Real("aspect", 0.25, 4.0, "", "box width / height", default=1.0, step=0.05),
        Vector("offset", 2, -0.9, 0.9, "half-sizes", "[dx, dy] box centre shift from the ray, in box half-sizes", default=0.0, step=0.05),
        Real("gray", 0.0, 1.0, "", "box colour, grey level", default=0.5, step=0.05),
        Free("placement", "set by resolve and recorded: per camera half_size_m, distance_m, centre_camera_m (recomputed when given)"),
    )

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        return {
            "fraction": FRACTION_BY_SEVERITY[severity],
            "cameras": list(cameras),
            "depth": float(rng.uniform(0.35, 0.65)),
            "aspect": float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
            "offset": [float(v) for v in rng.uniform(-0.5, 0.5, size=2)],
            "gray": float(rng.uniform(0.1, 0.9)),
        }

    def identity_params(self) -> dict[str, Any]:
        return {"fraction": 0.0}

    def is_identity(self, params: dict[str, Any]) -> bool:
        return float(params.get("fraction", 0.0)) == 0.0

    # --- scene ------------------------------------------------------------------------------------------
    def scene_key(self, params: dict[str, Any]) -> Any:
        # the compiled boxes depend only on which cameras get one; size, place and colour are set per reset
        if self.is_identity(params):
            return None
        return {"cameras": sorted(params.get("cameras", list(CAMERAS)))}

    def edit_scene(self, xml: str, params: dict[str, Any]) -> str:
        """Add one parked occluder body per camera in ``params['cameras']``."""
        if self.is_identity(params):
            return xml
        for camera in params.get("cameras", list(CAMERAS)):
            # zero mass, no joint, no collision: the dynamics and contacts cannot see the body
            body = (
                f'<body name="{body_name(camera)}" pos="0 0 0">'
                f'<geom name="{body_name(camera)}" type="box" size="{PARKED_HALF_SIZE} {PARKED_HALF_SIZE} {PARKED_HALF_SIZE}" pos="0 0 {PARK_BEHIND}" mass="0" '
                f'contype="0" conaffinity="0" group="{CAMERA_GEOM_GROUP[camera]}" rgba="0.5 0.5 0.5 1"/></body>'
            )
            holder = CAMERA_BODY[camera] and re.search(rf'<camera[^>]*name="{CAMERA_BODY[camera]}"[^>]*/>', xml)
            if holder:  # a sibling of the camera: welded to the camera's body, moves with it
                xml = xml[: holder.end()] + body + xml[holder.end() :]
            else:  # the world (a scene without that camera gets a parked body; resolve reports it)
                xml = xml.replace("<worldbody>", "<worldbody>" + body, 1)
        return xml

    # --- placement --------------------------------------------------------------------------------------
    def resolve(self, params: dict[str, Any], env, cameras: tuple[str, ...]) -> dict[str, Any]:
        """Place and size each targeted camera's occluder for this reset (the compiled model is reused
        across init states, so every placed field is set here, every time)."""
        if self.is_identity(params):
            return dict(params)
        placement = {}
        for camera in CAMERAS:  # every occluder body the scene has: untargeted ones stay out of sight
            _Box(env, camera).park()
        gray = params.get("gray", 0.5)
        for camera in cameras:
            if camera not in params.get("cameras", list(CAMERAS)):
                placement[camera] = {"error": f"no occluder body for camera {camera}"}
                continue
            box = _Box(env, camera)
            box.model.geom_rgba[box.geom] = (gray, gray, gray, 1.0)  # geom_rgba is restored at every reset
            placement[camera] = box.fit(params)
        return {**params, "placement": placement}

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        if self.is_identity(params):
            return {}
        target = float(params["fraction"])
        fractions, pixels = {}, {}
        for camera, placed in params["placement"].items():
            if "error" in placed:
                raise NotRealised(f"occluder in {camera}: {placed['error']}")
            fraction, clean = _Box(env, camera).measure()
            if abs(fraction - target) > TOLERANCE:
                raise NotRealised(f"occluder hides {fraction:.2f} of the target in {camera}, not {target:.2f} (+-{TOLERANCE})")
            fractions[camera], pixels[camera] = fraction, clean
        return {"occluded_fraction": fractions, "target_pixels": pixels}

    def occluded_pixels(self, env, params: dict[str, Any], camera: str) -> np.ndarray | None:
        # the box is fixed in its camera's view (world-static for agentview, welded for the wrist): its
        # pixels in the segmentation render now are its pixels in the true future too
        if self.is_identity(params) or camera not in params.get("placement", {}):
            return None
        box = _Box(env, camera)
        return env.segmentation(camera) == box.geom


class _Box:
    """One camera's occluder body on the live model: park, place, measure."""

    def __init__(self, env, camera: str):
        self.env, self.camera = env, camera
        self.model, self.data = env.model, env.data
        self.body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, body_name(camera))
        self.geom = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, body_name(camera))
        self.cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAMES[camera])
        self.welded = CAMERA_BODY[camera] is not None
        self.cam_xpos = self.data.cam_xpos[self.cam].copy()
        self.cam_xmat = self.data.cam_xmat[self.cam].reshape(3, 3).copy()

    def _set(self, centre: np.ndarray, half: tuple[float, float]) -> None:
        """Put the box centre at ``centre`` (camera frame, m), faces parallel to the image plane.

        Writes the model fields (used by every later kinematics pass) and the box's own world pose in
        the data (used by the renderer now): running mj_kinematics instead would also refresh every other
        body's pose, which the robot and the expert read between steps, and so change the episode.
        """
        model, data = self.model, self.data
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.cam_xmat.reshape(-1))
        if self.welded:  # body at the camera's pose in the camera's body: the box stays in front of it
            model.body_pos[self.body] = model.cam_pos[self.cam]
            model.body_quat[self.body] = model.cam_quat[self.cam]
            model.geom_pos[self.geom] = centre
        else:
            model.body_pos[self.body] = self.cam_xpos + self.cam_xmat @ centre
            model.body_quat[self.body] = quat
            model.geom_pos[self.geom] = 0.0
        model.geom_quat[self.geom] = (1.0, 0.0, 0.0, 0.0)
        model.geom_size[self.geom] = (half[0], half[1], min(HALF_THICKNESS, *half))
        model.geom_rbound[self.geom] = float(np.linalg.norm(model.geom_size[self.geom]))
        data.xpos[self.body] = self.cam_xpos if self.welded else model.body_pos[self.body]
        data.xquat[self.body] = quat
        data.xmat[self.body] = self.cam_xmat.reshape(-1)
        data.geom_xpos[self.geom] = self.cam_xpos + self.cam_xmat @ centre
        data.geom_xmat[self.geom] = self.cam_xmat.reshape(-1)

    def park(self) -> None:
        """Out of sight: behind the camera and too small to cast a shadow into its view."""
        if self.body >= 0:
            self._set(np.array([0.0, 0.0, PARK_BEHIND]), (PARKED_HALF_SIZE, PARKED_HALF_SIZE))

    def _target_body(self) -> int | None:
        """The target's body; for a target that is a region of an object (a drawer), that object's."""
        bodies, target = self.env.object_bodies, self.env.target_object
        owner = target if target in bodies else max((o for o in bodies if target.startswith(f"{o}_")), key=len, default=None)
        return None if owner is None else bodies[owner]

    def _target_mask(self) -> np.ndarray:
        model = self.model
        root = model.body_rootid[self._target_body()]
        geoms = np.flatnonzero(model.body_rootid[model.geom_bodyid] == root)
        return np.isin(self.env.segmentation(self.camera), geoms)

    def measure(self) -> tuple[float, int]:
        """(occluded fraction, target pixels without the occluder) with the box where it is now."""
        saved = (self.model.body_pos[self.body].copy(), self.model.body_quat[self.body].copy(), self.model.geom_pos[self.geom].copy(), self.model.geom_size[self.geom].copy())
        occluded = int(self._target_mask().sum())
        centre = saved[2] if self.welded else self.cam_xmat.T @ (saved[0] - self.cam_xpos)
        self.park()
        clean = int(self._target_mask().sum())
        self._set(centre, tuple(saved[3][:2]))
        return (1.0 - occluded / clean if clean else 0.0), clean

    def fit(self, params: dict[str, Any]) -> dict[str, Any]:
        """Size the box so that it hides ``params['fraction']`` of the target's pixels."""
        env = self.env
        height, width = env.image_shape
        if self.body < 0 or self.cam < 0:
            return {"error": "scene has no occluder body or camera"}
        if self.welded and self.model.body_parentid[self.body] != self.model.cam_bodyid[self.cam]:
            return {"error": "occluder body is not attached to the camera's body"}
        if self._target_body() is None:
            return {"error": f"target {env.target_object!r} has no body"}
        target = float(params["fraction"])
        mask = self._target_mask()  # the box is parked: clean view
        clean = int(mask.sum())
        if clean < MIN_TARGET_PIXELS:
            return {"error": f"target shows {clean} px (< {MIN_TARGET_PIXELS})"}
        rel = self.cam_xmat.T @ (self.data.xpos[self._target_body()] - self.cam_xpos)
        if rel[2] >= 0:
            return {"error": "target behind the camera"}
        depth, aspect = float(params.get("depth", 0.5)), float(params.get("aspect", 1.0))
        dx, dy = params.get("offset", [0.0, 0.0])
        on_ray = rel * depth  # a point of the camera-to-target ray at `depth` of the target's distance
        z = -on_ray[2] - HALF_THICKNESS  # the face towards the camera
        focal = 0.5 * height / np.tan(np.deg2rad(self.model.cam_fovy[self.cam]) / 2)  # fovy: the vertical field of view
        rows, cols = np.nonzero(mask)
        rows, cols = rows + 0.5, cols + 0.5  # pixel centres (rasterisation rule)

        def shape(scale: float) -> tuple[np.ndarray, tuple[float, float]]:
            half = (scale * np.sqrt(aspect), scale / np.sqrt(aspect))
            return on_ray + np.array([dx * half[0], dy * half[1], 0.0]), half

        def predicted(scale: float) -> float:
            """Share of the clean target pixels inside the box's projection (pinhole camera)."""
            centre, (w, h) = shape(scale)
            c0, r0 = width / 2 + focal * centre[0] / z, height / 2 - focal * centre[1] / z
            inside = (np.abs(cols - c0) < focal * w / z) & (np.abs(rows - r0) < focal * h / z)
            return float(inside.mean())

        def rendered(scale: float) -> float:
            self._set(*shape(scale))
            return 1.0 - int(self._target_mask().sum()) / clean

        # the smallest box whose projection covers the target share (nested boxes: monotonic in scale)
        low, high = 0.0, 4.0 * z * max(height, width) / focal * max(aspect, 1 / aspect)
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (low, mid) if predicted(mid) >= target else (mid, high)
        scale = high if abs(predicted(high) - target) <= abs(predicted(low) - target) else low
        measured = rendered(scale)
        # the projection model ignores what hides the target in front of the box: refine with renders
        below, above = 0.0, np.inf  # rendered-fraction bracket of the scale
        best = (abs(measured - target), scale)
        for _ in range(REFINE_RENDERS):
            if abs(measured - target) <= TOLERANCE / 2:
                break
            below, above = (scale, above) if measured < target else (below, scale)
            scale = (below + above) / 2 if np.isfinite(above) else scale * 1.5
            measured = rendered(scale)
            best = min(best, (abs(measured - target), scale))
        # an off-centre box is not nested as it grows, so the fraction need not be monotonic: keep the best
        scale = best[1]
        self._set(*shape(scale))
        centre, half = shape(scale)
        return {"half_size_m": [float(half[0]), float(half[1])], "distance_m": float(-centre[2]), "centre_camera_m": [float(v) for v in centre]}
