"""The simulator protocol: what the runner, ground truth, replay, failure signatures and families use.

``SimEnv`` is the base of every MuJoCo simulator adapter (LIBERO, ALOHA, robosuite's tasks), split the way
dm_control splits Physics from Task: this class is the simulator (reset, step, observe with render-on-demand,
chunk marks, bit-exact snapshots of MuJoCo's integration state, success, cameras, projection, segmentation);
the perturbations of every layer are applied by its ``applier`` (``stress.envs.applier``) and the questions
families, signatures and experts ask of the scene are answered by its ``scene`` (``stress.envs.scene``).
An adapter supplies the rest:

    build           compile the scene (scene-layer perturbations included), set ``model``/``data``
    _reset_sim      put the simulator back to the start of an episode (controller state included)
    _set_init       set init state ``init_index`` (LIBERO: a shipped state; ALOHA: a seeded object pose)
    _settle         the steps run before the first decision (LIBERO: 10 no-ops)
    _physics_step   one control step of an action already checked for shape and finite values
    success, proprio, _render_raw(camera) -> bottom-up RGB, _render_context(camera) -> (MjrContext, MjvScene)
    _extra_state / _set_extra_state   what a snapshot needs beyond MuJoCo's state (controllers)
    failure_tracker how an episode fails, read from simulator state after every step

Class attributes an adapter declares: ``simulator`` (registry name), ``cameras`` (ours) and ``camera_names``
(ours -> MuJoCo's), ``action_dim``, ``proprio_dim``, ``settle_steps``, ``chunk_size``, ``scene_class`` (its
``SceneQuery``: the robot and object queries of the families, answered for its own robot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import mujoco
import numpy as np

from perturbations.base import Realised
from stress.core.spec import PerturbationSpec
from stress.core.errors import UserError, choice_error
from stress.core.policy import Observation
from stress.envs import simulator
from stress.envs.applier import PerturbationApplier, family_layer, scene_key  # noqa: F401  (re-exported: the adapters build with them)
from stress.envs.scene import SceneQuery

# MuJoCo warnings that mean the physics is no longer trustworthy
FATAL_WARNINGS = (mujoco.mjtWarning.mjWARN_BADQACC, mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL)


class SimulatorFault(RuntimeError):
    """The simulation became invalid (NaN state, MuJoCo instability): the episode gets an error."""


@dataclass
class Snapshot:
    """Everything needed to continue an episode bit-identically from a decision point."""

    physics: np.ndarray  # mj_getState(mjSTATE_INTEGRATION): qpos, qvel, act, warm start, controls, mocap, time
    step: int
    chunk_start: int = 0
    events: tuple[dict[str, Any], ...] = ()  # the event perturbations' records (what fired, when): part of the episode's state
    extra: dict[str, Any] = field(default_factory=dict)  # the adapter's own (controller arrays, counters)


class SimEnv:
    """One task of one simulator, reusable across init states and non-scene perturbations."""

    simulator: ClassVar[str]
    cameras: ClassVar[tuple[str, ...]]
    camera_names: ClassVar[dict[str, str]]  # ours -> MuJoCo's
    camera_geom_group: ClassVar[dict[str, int]] = {}  # geom groups seen by one camera only (visual-only bodies)
    visual_geom_groups: ClassVar[tuple[int, ...]] = (0, 1, 2)  # the groups the cameras render (MuJoCo's default)
    action_dim: ClassVar[int]
    proprio_dim: ClassVar[int]
    settle_steps: ClassVar[int] = 0
    control_hz: ClassVar[int]  # control steps per second (replay videos play at this rate)
    chunk_size: ClassVar[int]  # actions per policy query in Cosmos Policy's setting (event triggers count within it)

    model: mujoco.MjModel
    data: mujoco.MjData
    suite: str
    task_id: int
    image_size: int
    instruction: str
    max_steps: int
    target_object: str | None = None
    object_bodies: dict[str, int]  # the task's objects: name -> MuJoCo body id
    surface_textures: dict[str, tuple[int, ...]] = {}  # textures of a surface on no geom (ALOHA's skybox: "walls")
    canvas_textures: frozenset[int] = frozenset()  # blank white textures whose geom's rgba gives the colour (ALOHA's table)
    scene_class: ClassVar[type[SceneQuery]] = SceneQuery  # the adapter's answers to the scene queries

    def _init_protocol_state(self, scene_specs: tuple[PerturbationSpec, ...]) -> None:
        """Called by the adapter at the end of building (model and data exist)."""
        self.scene = self.scene_class(self)
        self.applier = PerturbationApplier(self, simulator(self.simulator), scene_specs)
        self.scene_key = self.applier.scene_key
        self.chunk_start = self.step_count = 0
        self._observed: dict[str, np.ndarray] | None = None  # the last rendered observation's images

    # --- adapter hooks ---------------------------------------------------------------------------------
    def n_init_states(self) -> int:
        raise NotImplementedError

    def _reset_sim(self, init_index: int) -> None:
        raise NotImplementedError

    def _set_init(self, init_index: int) -> None:
        raise NotImplementedError

    def _settle(self) -> None:
        pass

    def _physics_step(self, action: np.ndarray) -> None:
        raise NotImplementedError

    def success(self) -> bool:
        raise NotImplementedError

    def proprio(self) -> np.ndarray:
        raise NotImplementedError

    def _render_raw(self, camera: str) -> np.ndarray:
        raise NotImplementedError

    def _render_context(self, camera: str | None = None):
        """Make this env's GL context current and return (MjrContext, MjvScene, MjvOption)."""
        raise NotImplementedError

    def failure_tracker(self):
        """A fresh tracker of how an episode fails (``step(action)``, ``signature(success)``, ``progress(success)``,
        ``onset(success)``; stress.envs.signatures), read from simulator state after every step."""
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass

    # --- episode (the perturbations: self.applier) --------------------------------------------------------------------------------------
    def check_camera(self, camera: str) -> None:
        if camera not in self.cameras:
            raise choice_error(f"camera of {self.simulator}", camera, self.cameras)

    def reset(self, init_index: int, perturbations: tuple[PerturbationSpec, ...] = ()) -> None:
        """Set an init state with its perturbations applied (``PerturbationApplier.reset``)."""
        self.applier.reset(init_index, perturbations)

    @property
    def perturbations(self) -> list[Realised]:
        """This episode's perturbations, realised (parameters and records)."""
        return self.applier.perturbations

    def begin_chunk(self) -> None:
        """Mark a policy query: event triggers can count steps into the executed chunk."""
        self.chunk_start = self.step_count

    @property
    def chunk_step(self) -> int:
        """Steps executed since the last policy query (0 right after it)."""
        return self.step_count - self.chunk_start

    def step(self, action: np.ndarray) -> bool:
        """One control step. Returns the task's success check."""
        self._observed = None
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.action_dim,) or not np.all(np.isfinite(action)):
            raise SimulatorFault(f"invalid action {action!r} (expected {self.action_dim} finite numbers)")
        self._physics_step(action)
        self._forward()
        self.step_count += 1
        self.applier.after_step()
        self._check_physics()
        return self.success()

    def _forward(self) -> None:
        """After mj_step, poses, contacts and sensors lag qpos by one physics substep. Recomputing them makes
        everything a policy or a render sees a function of the state alone, so a restored snapshot renders
        and observes exactly like the original. The trajectory is unchanged (the next step recomputes them)."""
        mujoco.mj_forward(self.model, self.data)

    def _check_physics(self) -> None:
        data = self.data
        if not (np.all(np.isfinite(data.qpos)) and np.all(np.isfinite(data.qvel))):
            raise SimulatorFault("simulator state is NaN/inf")
        for warning in FATAL_WARNINGS:
            if data.warning[warning].number > 0:
                raise SimulatorFault(f"MuJoCo instability warning {warning.name}")

    # --- observing ------------------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of every render: square ``image_size`` unless an adapter renders another shape (ALOHA's
        stock cameras)."""
        return (self.image_size, self.image_size)

    def camera_id(self, camera: str) -> int:
        self.check_camera(camera)
        return mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera_names[camera])

    def render(self, camera: str) -> np.ndarray:
        """Clean upright image of one camera (no pixel perturbation)."""
        self.check_camera(camera)
        return np.ascontiguousarray(self._render_raw(camera)[::-1])

    def segmentation(self, camera: str) -> np.ndarray:
        """Upright map of MuJoCo geom ids seen by ``camera`` (-1: background or a non-geom), read from the
        id-coloured buffer itself."""
        size = self.image_size
        context, scene, option = self._render_context(camera)
        cam = mujoco.MjvCamera()
        cam.type, cam.fixedcamid = mujoco.mjtCamera.mjCAMERA_FIXED, self.camera_id(camera)
        mujoco.mjv_updateScene(self.model, self.data, option, None, cam, mujoco.mjtCatBit.mjCAT_ALL, scene)
        viewport = mujoco.MjrRect(0, 0, size, size)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, context)
        flags = scene.flags[mujoco.mjtRndFlag.mjRND_SEGMENT], scene.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR]
        scene.flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = scene.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 1
        try:
            mujoco.mjr_render(viewport, scene, context)
            rgb = np.empty((size, size, 3), dtype=np.uint8)
            mujoco.mjr_readPixels(rgb=rgb, depth=None, viewport=viewport, con=context)
        finally:
            scene.flags[mujoco.mjtRndFlag.mjRND_SEGMENT], scene.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = flags
        rgb = rgb.astype(np.int32)
        scene_index = rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16) - 1  # 0 = background
        lookup = np.full(scene.ngeom + 1, -1, dtype=np.int32)
        for i in range(scene.ngeom):
            geom = scene.geoms[i]
            if geom.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                lookup[i] = geom.objid
        valid = (scene_index >= 0) & (scene_index < scene.ngeom)
        ids = np.where(valid, lookup[np.clip(scene_index, 0, scene.ngeom)], -1)
        return np.ascontiguousarray(ids[::-1])

    def observe(self, render: bool = True, cameras: tuple[str, ...] | None = None) -> Observation:
        """What a policy sees; ``render`` False skips the images (privileged policies), ``cameras`` picks some."""
        images = {}
        if render:
            cameras = cameras or self.cameras
            clean = {camera: self.render(camera) for camera in cameras}
            if self.applier.pixel_check_pending and set(cameras) == set(self.cameras):  # the first query's clean render doubles as the realisation check
                self.applier.record_pixel_realisation(clean)
            images = {camera: self.applier.perturb_pixels(clean[camera], camera) for camera in cameras}
            self._observed = images
        return Observation(images=images, proprio=self.proprio(), instruction=self.instruction, step=self.step_count, privileged=self)

    def perturb_pixels(self, image: np.ndarray, camera: str) -> np.ndarray:
        """One camera's clean image as the policy sees it (the pixel perturbations; replay, ground truth)."""
        return self.applier.perturb_pixels(image, camera)

    def check_pixel_realisation(self) -> str | None:
        return self.applier.check_pixel_realisation()

    def observed_images(self) -> dict[str, np.ndarray] | None:
        """The images the last ``observe`` rendered, if it rendered every camera and nothing moved the simulator since
        (step, reset and restore forget them; else None): measurements of the current frame reuse them instead of rendering."""
        return self._observed if self._observed is not None and set(self._observed) == set(self.cameras) else None

    # --- scene queries (stress.envs.scene: env.scene) ------------------------------------------------------
    def object_position(self, name: str) -> np.ndarray:
        """World position (m) of a task object (the scene query, read off the env by tools and tests)."""
        return self.scene.object_position(name)

    def project(self, point: np.ndarray, camera: str) -> tuple[float, float] | None:
        """(row, col) of a world point in the upright image of ``camera``; None when behind the camera."""
        model, data = self.model, self.data
        cam_id = self.camera_id(camera)
        rel = data.cam_xmat[cam_id].reshape(3, 3).T @ (np.asarray(point) - data.cam_xpos[cam_id])
        if rel[2] >= 0:  # MuJoCo cameras look along -z
            return None
        height, width = self.image_shape
        focal = 0.5 * height / np.tan(np.deg2rad(model.cam_fovy[cam_id]) / 2)  # fovy is the vertical field of view
        col = width / 2 + focal * rel[0] / -rel[2]
        row = height / 2 - focal * rel[1] / -rel[2]
        return float(row), float(col)

    # --- snapshots ------------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, physics, spec)
        return Snapshot(physics, self.step_count, self.chunk_start, self.applier.event_records(), self._extra_state())

    def restore(self, snap: Snapshot) -> None:
        self._observed = None
        mujoco.mj_setState(self.model, self.data, snap.physics, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self.model, self.data)
        self.step_count, self.chunk_start = snap.step, snap.chunk_start
        self._set_extra_state(snap.extra)
        self.applier.restore_event_records(snap.events)


def named_task_index(simulator: str, task: int | str, names: tuple[str, ...]) -> int:
    """Task id of a task given by id (0, "0") or by name (one of ``names``, in task-id order); else a
    UserError naming the bad value and the valid ids with their names."""
    if isinstance(task, str) and task in names:
        return names.index(task)
    try:
        index = int(task)
    except (TypeError, ValueError):
        index = -1
    if isinstance(task, bool) or not 0 <= index < len(names):
        valid = ", ".join(f"{i} ({name})" for i, name in enumerate(names))
        raise UserError(f"unknown {simulator} task {task!r}; valid: {valid}")
    return index


@dataclass(frozen=True)
class Simulator:
    """A simulator as the registry knows it (``stress.envs``): its suites, what a task needs, and the scene
    capabilities it has, which decide the perturbation families it supports (a family's ``needs``):

        object_bodies    its task objects are MuJoCo bodies (mass, inertia, friction can be scaled)
        lights           MuJoCo lights the lighting family may change
        textures         surfaces with textures the texture family may repaint
        camera_poses     cameras the camera family may move
        movable_objects  objects on free joints the state and event families may move (``scene.movable_objects``,
                         ``scene.init_range``, ``scene.reach_problem``, ``scene.settled_view``)
        arm_joints       the arm joints, their grippers and the controller's hold (``scene.arm_joints``,
                         ``scene.gripper_qpos_indexes``, ``scene.arm_moved``)
        grip_points      the grippers' grasp points (``scene.grip_points``)
        scene_xml        the MJCF is edited before it compiles (scene-layer bodies)
        bddl_scene       the task is a LIBERO BDDL file objects can be added to
    """

    name: str
    env_class: type[SimEnv]
    suites: dict[str, int]  # suite -> its default step limit
    tasks: Any  # suite -> the tasks' instructions, in task order
    n_init_states: Any  # (suite, task) -> how many init states the task has
    value_discount: float  # what a realised value is discounted by per step (Cosmos: LIBERO 0.99, ALOHA 0.998)
    default_image_size: int = 128  # the render size a run uses unless the policy asks for another
    image_sizes: tuple[int, ...] = (64, 128, 224, 256)  # the render sizes a spec may ask for
    note: str = ""
    capabilities: frozenset[str] = frozenset()
    arm_joints: int = 0  # how many arm joints robot_init's offsets have (LIBERO's Panda: 7; ALOHA: 2 x 6)

    def supports(self, family) -> bool:
        """Whether a perturbation family (class or instance) can run here: it needs nothing this simulator lacks."""
        return family.needs <= self.capabilities

    @property
    def chunk_size(self) -> int:
        return self.env_class.chunk_size

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.env_class.cameras

    @property
    def action_dim(self) -> int:
        return self.env_class.action_dim
