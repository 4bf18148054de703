"""The simulator protocol: what the runner, ground truth, replay, failure signatures and families use.

``SimEnv`` is the base of every MuJoCo simulator adapter (LIBERO, ALOHA). It owns everything that does
not depend on the simulator: the perturbation plumbing by layer (model fields restored to pristine at
every reset, state hooks, the invalid-scene re-sampling, event hooks after each step, pixel hooks and
their realisation check), render-on-demand observations, chunk marks, bit-exact snapshots of MuJoCo's
integration state, projection, segmentation and texture edits. An adapter supplies the rest:

    build           compile the scene (scene-layer perturbations included), set ``model``/``data``
    _reset_sim      put the simulator back to the start of an episode (controller state included)
    _set_init       set init state ``init_index`` (LIBERO: a shipped state; ALOHA: a seeded object pose)
    _settle         the steps run before the first decision (LIBERO: 10 no-ops)
    _physics_step   one control step of an action already checked for shape and finite values
    success, proprio, _render_raw(camera) -> bottom-up RGB, _render_context(camera) -> (MjrContext, MjvScene)
    _extra_state / _set_extra_state   what a snapshot needs beyond MuJoCo's state (controllers)

Class attributes an adapter declares: ``simulator`` (registry name), ``cameras`` (ours) and ``camera_names``
(ours -> MuJoCo's), ``action_dim``, ``proprio_dim``, ``settle_steps``, ``chunk_size``. The robot and object
queries of the state and event families (``movable_objects``, ``arm_joints``, ``grip_points``, ``arm_moved``,
``reach_problem``, ``init_range``, ``settled_view``) are answered by each adapter for its own robot.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import mujoco
import numpy as np

from perturbations.base import InvalidScene, Layer, PerturbationSpec, Realised, family, parameters_for, realise
from stress.core.errors import UserError, choice_error
from stress.core.policy import Observation
from stress.envs import simulator
from stress.envs.scene import SceneQuery

MAX_ATTEMPTS = 10  # re-samples of a state perturbation that gave an invalid scene
# MjModel fields model-layer perturbations may edit; restored from a pristine copy at every reset.
RESTORED_MODEL_FIELDS = (
    "light_diffuse", "light_ambient", "light_specular", "light_pos", "light_dir", "light_active",
    "cam_pos", "cam_quat", "cam_fovy", "cam_mode", "mat_rgba", "geom_rgba", "geom_friction", "body_mass",
    "body_inertia", "dof_damping", "dof_frictionloss",
)
# MuJoCo warnings that mean the physics is no longer trustworthy
FATAL_WARNINGS = (mujoco.mjtWarning.mjWARN_BADQACC, mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL)


class SimulatorFault(RuntimeError):
    """The simulation became invalid (NaN state, MuJoCo instability): the episode gets an error."""


def family_layer(spec: PerturbationSpec) -> Layer:
    return family(spec.name).layer


def scene_key(specs) -> tuple:
    """What a compiled scene depends on: the scene-layer specs' scene keys (envs are cached by it)."""
    import json

    out = []
    for spec in specs:
        fam = family(spec.name)
        if fam.layer is Layer.SCENE:
            out.append((spec.name, json.dumps(fam.scene_key(parameters_for(spec)), sort_keys=True)))
    return tuple(out)


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
    canvas_textures: frozenset[int] = frozenset()
    scene_class: ClassVar[type[SceneQuery]] = SceneQuery  # the adapter's answers to the scene queries  # blank white textures whose geom's rgba gives the colour (ALOHA's table)

    def _init_protocol_state(self, scene_specs: tuple[PerturbationSpec, ...]) -> None:
        """Called by the adapter at the end of building (model and data exist)."""
        self.scene_specs = scene_specs
        self.scene = self.scene_class(self)
        self.scene_key = scene_key(scene_specs)
        self._pristine = {f: getattr(self.model, f).copy() for f in RESTORED_MODEL_FIELDS}
        self._changed_textures: dict[int, np.ndarray] = {}  # texture id -> its pristine pixels
        self.chunk_start = self.step_count = 0
        self.perturbations: list[Realised] = []
        self._events: list[Realised] = []
        self._pixels: list[Realised] = []
        self._observed: dict[str, np.ndarray] | None = None  # the last rendered observation's images
        self._pixel_check_pending, self._pixel_error = False, None

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

    # --- episode --------------------------------------------------------------------------------------
    def check_camera(self, camera: str) -> None:
        if camera not in self.cameras:
            raise choice_error(f"camera of {self.simulator}", camera, self.cameras)

    def reset(self, init_index: int, perturbations: tuple[PerturbationSpec, ...] = ()) -> None:
        """Set an init state, apply model/state perturbations, settle, resolve and check them.

        Scene-layer specs in ``perturbations`` must have this env's scene key (they may differ in what is
        applied per reset); without any, the env's own are used. A state perturbation whose sampled
        parameters give an invalid scene (``InvalidScene``) is re-sampled from its own generator up to
        ``MAX_ATTEMPTS`` times (explicit parameters are never re-sampled); the number of attempts is
        recorded. Raises ``InvalidScene`` when no valid sample was found, ``NotRealised`` when a
        perturbation did not take effect.
        """
        n = self.n_init_states()
        if not isinstance(init_index, (int, np.integer)) or not 0 <= init_index < n:
            raise UserError(f"init state {init_index} not in {self.suite} task {self.task_id}; valid: 0-{n - 1}")
        for attempt in range(MAX_ATTEMPTS):
            try:
                self._reset_once(int(init_index), perturbations, attempt)
                break
            except InvalidScene as exc:
                resamplable = [p for p in self.perturbations if p.family.layer is Layer.STATE and p.spec.params is None]
                if not resamplable or attempt == MAX_ATTEMPTS - 1:
                    tries = f" after {attempt + 1} samples" if resamplable else ""
                    raise InvalidScene(f"{exc}{tries}") from None
        for p in self.perturbations:
            if p.family.layer is Layer.STATE:
                p.realisation["attempts"] = attempt + 1

    def _reset_once(self, init_index: int, perturbations, attempt: int) -> None:
        self._observed = None
        self._reset_sim(init_index)
        self._restore_pristine_model()
        self._set_init(init_index)
        self.step_count = self.chunk_start = 0
        # scene-layer specs: the caller's (same compiled scene, e.g. another seed), else the env's own
        scene = tuple(s for s in perturbations if family_layer(s) is Layer.SCENE) or self.scene_specs
        if scene_key(scene) != self.scene_key:
            raise ValueError(f"scene perturbations {[s.name for s in scene]} need another compiled scene than this env's")
        specs = scene + tuple(s for s in perturbations if family_layer(s) is not Layer.SCENE)
        self.perturbations = [realise(spec, attempt if family_layer(spec) is Layer.STATE else 0, self.cameras, simulator(self.simulator))
                              for spec in specs]
        by_layer = {layer: [p for p in self.perturbations if p.family.layer is layer] for layer in Layer}
        self._events = by_layer[Layer.EVENT]  # before the state layer: its validity checks take snapshots
        for p in by_layer[Layer.MODEL]:
            p.family.apply_model(self, p.params)
        for p in by_layer[Layer.STATE]:
            p.family.apply_state(self, p.params)
        mujoco.mj_forward(self.model, self.data)
        self._settle()
        self._forward()
        self._check_physics()
        # scene-dependent parameters (e.g. where the target is in the image) are fixed after settling
        for p in self.perturbations:
            p.params = p.family.resolve(p.params, self, p.cameras)
        self._pixels = by_layer[Layer.PIXELS]
        self._pixel_check_pending, self._pixel_error = bool(self._pixels), None
        for p in self.perturbations:
            if p.family.layer is not Layer.PIXELS:
                p.realisation.update(p.family.check(self, p.params))

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
        for p in self._events:
            p.family.on_step(self, p.params, self.step_count, p.realisation)
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

    # --- model edits ------------------------------------------------------------------------------------
    def _restore_pristine_model(self) -> None:
        for name, value in self._pristine.items():
            getattr(self.model, name)[...] = value
        self._swap_textures(self._changed_textures)
        self._changed_textures = {}

    def upload_textures(self, texture_ids) -> None:
        """Upload textures to the live render context (edits of ``tex_data`` are invisible until then)."""
        context = self._render_context()[0]
        for tex_id in texture_ids:
            mujoco.mjr_uploadTexture(self.model, context, tex_id)

    def _texture_slice(self, tex_id: int) -> slice:
        model = self.model
        start = model.tex_adr[tex_id]
        return slice(start, start + model.tex_width[tex_id] * model.tex_height[tex_id] * model.tex_nchannel[tex_id])

    def set_texture_data(self, tex_id: int, data: np.ndarray) -> None:
        """Replace one texture's pixels (and upload it); undone at the next reset."""
        tex_data = self.model.tex_data
        region = self._texture_slice(tex_id)
        self._changed_textures.setdefault(tex_id, tex_data[region].copy())  # the pristine pixels
        tex_data[region] = data.reshape(-1)
        self.upload_textures([tex_id])

    def _swap_textures(self, pixels: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Write the given pixels into their textures, upload them; return what was there before."""
        tex_data = self.model.tex_data
        before = {}
        for tex_id, data in pixels.items():
            region = self._texture_slice(tex_id)
            before[tex_id] = tex_data[region].copy()
            tex_data[region] = data
        if pixels:
            self.upload_textures(sorted(pixels))
        return before

    @contextmanager
    def clean_model(self):
        """Temporarily put every model field (and changed texture) back to pristine, e.g. to render the
        clean image of the current state for a realisation check."""
        saved = {name: getattr(self.model, name).copy() for name in self._pristine}
        for name, value in self._pristine.items():
            getattr(self.model, name)[...] = value
        perturbed_textures = self._swap_textures(self._changed_textures)
        mujoco.mj_forward(self.model, self.data)
        try:
            yield
        finally:
            for name, value in saved.items():
                getattr(self.model, name)[...] = value
            self._swap_textures(perturbed_textures)
            mujoco.mj_forward(self.model, self.data)

    def image_change_vs_clean(self, cameras=None) -> dict[str, float]:
        """Mean absolute pixel change (0-255) per camera between the current model and the pristine one,
        on the same simulator state: the realisation check of visual model edits."""
        cameras = cameras or self.cameras
        perturbed = {camera: self.render(camera).astype(np.int16) for camera in cameras}
        with self.clean_model():
            clean = {camera: self.render(camera).astype(np.int16) for camera in cameras}
        return {camera: float(np.abs(perturbed[camera] - clean[camera]).mean()) for camera in cameras}

    # --- observing ------------------------------------------------------------------------------------
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

    def perturb_pixels(self, image: np.ndarray, camera: str) -> np.ndarray:
        for p in self._pixels:
            if camera in p.cameras:
                image = p.family.apply_pixels(image, camera, p.params)
        return image

    def observe(self, render: bool = True, cameras: tuple[str, ...] | None = None) -> Observation:
        """What a policy sees; ``render`` False skips the images (privileged policies), ``cameras`` picks some."""
        images = {}
        if render:
            cameras = cameras or self.cameras
            clean = {camera: self.render(camera) for camera in cameras}
            if self._pixel_check_pending and set(cameras) == set(self.cameras):  # the first query's clean render doubles as the realisation check
                self._record_pixel_realisation(clean)
            images = {camera: self.perturb_pixels(clean[camera], camera) for camera in cameras}
            self._observed = images
        return Observation(images=images, proprio=self.proprio(), instruction=self.instruction, step=self.step_count, privileged=self)

    def observed_images(self) -> dict[str, np.ndarray] | None:
        """The images the last ``observe`` rendered, if nothing moved the simulator since (step, reset and
        restore forget them; else None): measurements of the current frame reuse them instead of rendering."""
        return self._observed

    def check_pixel_realisation(self) -> str | None:
        """Realisation check of the pixel perturbations (renders once unless ``observe`` already did).

        Records per camera the share of pixels each perturbation changed. Returns an error string when
        a non-identity perturbation left a targeted camera unchanged.
        """
        if self._pixel_check_pending:
            self._record_pixel_realisation({camera: self.render(camera) for camera in self.cameras})
        return self._pixel_error

    def _record_pixel_realisation(self, clean: dict[str, np.ndarray]) -> None:
        self._pixel_check_pending = False
        for p in self._pixels:
            changed, mean_change = {}, {}
            for camera in self.cameras:
                out = p.family.apply_pixels(clean[camera], camera, p.params) if camera in p.cameras else clean[camera]
                changed[camera] = float(np.mean(np.any(out != clean[camera], axis=-1)))
                mean_change[camera] = float(np.abs(out.astype(np.int16) - clean[camera]).mean())
            p.realisation["changed_fraction"] = changed
            p.realisation["mean_abs_change"] = mean_change
            missed = [c for c in p.cameras if changed[c] == 0.0]
            if missed and not p.family.is_identity(p.params) and self._pixel_error is None:
                self._pixel_error = f"not_realised: {p.spec.name} left camera {missed[0]} unchanged"

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
        focal = 0.5 * self.image_size / np.tan(np.deg2rad(model.cam_fovy[cam_id]) / 2)
        col = self.image_size / 2 + focal * rel[0] / -rel[2]
        row = self.image_size / 2 - focal * rel[1] / -rel[2]
        return float(row), float(col)

    # --- snapshots ------------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, physics, spec)
        return Snapshot(physics, self.step_count, self.chunk_start, tuple(copy.deepcopy(p.realisation) for p in self._events),
                        self._extra_state())

    def restore(self, snap: Snapshot) -> None:
        self._observed = None
        mujoco.mj_setState(self.model, self.data, snap.physics, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self.model, self.data)
        self.step_count, self.chunk_start = snap.step, snap.chunk_start
        self._set_extra_state(snap.extra)
        for p, record in zip(self._events, snap.events):
            p.realisation.clear()
            p.realisation.update(copy.deepcopy(record))


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
