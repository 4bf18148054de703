"""LIBERO adapter: shipped init states, settle steps, render-on-demand, snapshots, perturbation hooks.

One ``LiberoEnv`` wraps one LIBERO task (a compiled MuJoCo scene). It is reset to any shipped init
state, runs the 10 no-op settle steps LIBERO evaluations use, and renders the two cameras only when
``observe(render=True)`` is called (once per policy query), which is what makes a CPU episode ~8x
cheaper than the usual render-every-step loop. Images are handed out upright (vertically flipped from
MuJoCo's bottom-up buffer), the orientation Cosmos Policy's LIBERO code feeds its model.

Perturbation hooks, by layer (perturbations/base.py):
    scene   XML edit before compile; a scene-edited env is a different env (cached by the runner)
    model   applied after every reset, on top of the pristine model fields restored first
    state   after ``set_init_state`` and before settling
    event   after every env step
    pixels  on each rendered camera image
"""

from __future__ import annotations

import copy

import hashlib
import io
import json
import os
import warnings
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from perturbations.base import CAMERAS, InvalidScene, Layer, PerturbationSpec, Realised, family, parameters_for, realise
from stress.envs.cameras import CAMERA_GEOM_GROUP, CAMERA_NAMES
from stress.envs.libero_setup import cache_dir, import_libero
from stress.envs.physics import SimulatorFault, check_physics, project
from stress.errors import UserError, choice_error
from stress.policies.base import Observation

SUITE_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
SUITES = tuple(SUITE_MAX_STEPS)
SETTLE_STEPS = 10
MAX_ATTEMPTS = 10  # re-samples of a state perturbation that gave an invalid scene
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
# MjModel fields model-layer perturbations may edit; restored from a pristine copy at every reset.
RESTORED_MODEL_FIELDS = (
    "light_diffuse", "light_ambient", "light_specular", "light_pos", "light_dir", "light_active",
    "cam_pos", "cam_quat", "cam_fovy", "mat_rgba", "geom_rgba", "geom_friction", "body_mass",
    "body_inertia", "dof_damping", "dof_frictionloss",
)


def family_layer(spec: PerturbationSpec) -> Layer:
    return family(spec.name).layer


@cache
def _benchmark(suite: str):
    """LIBERO's benchmark object of a suite (it prints its task order to stdout when built: silenced)."""
    import_libero()
    from libero.libero import benchmark

    with redirect_stdout(io.StringIO()):
        return benchmark.get_benchmark_dict()[suite]()


@cache
def suite_tasks(suite: str) -> tuple[str, ...]:
    """Instructions of a suite's tasks, in LIBERO's task order."""
    if suite not in SUITES:
        raise choice_error("suite", suite, SUITES)
    bench = _benchmark(suite)
    return tuple(bench.get_task(i).language for i in range(bench.n_tasks))


def check_task(suite: str, task_id: int) -> None:
    n = len(suite_tasks(suite))
    if not 0 <= task_id < n:
        raise UserError(f"task {task_id} not in suite {suite}; valid: 0-{n - 1}")


@cache
def init_states(suite: str, task_id: int) -> np.ndarray:
    """The shipped init states of a task (usually 50 flattened MuJoCo states)."""
    check_task(suite, task_id)
    return np.asarray(_benchmark(suite).get_task_init_states(task_id))


def scene_key(specs) -> tuple:
    """What a compiled scene depends on: the scene-layer specs' scene keys (envs are cached by it)."""
    out = []
    for spec in specs:
        fam = family(spec.name)
        if fam.layer is Layer.SCENE:
            out.append((spec.name, json.dumps(fam.scene_key(parameters_for(spec)), sort_keys=True)))
    return tuple(out)


def _make_control_env(bddl: Path, image_size: int, offscreen: bool):
    from libero.libero.envs.env_wrapper import ControlEnv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ControlEnv(
            bddl_file_name=str(bddl),
            camera_heights=image_size,
            camera_widths=image_size,
            has_renderer=False,
            has_offscreen_renderer=offscreen,
            use_camera_obs=False,  # we render on demand instead of every step
            hard_reset=False,
            ignore_done=True,  # the episode length is ours (suite max steps)
        )


@cache
def _joint_layout(bddl: Path) -> tuple[tuple[str, int, int, int, int], ...]:
    """(joint name, qpos address, nq, dof address, nv) of every joint of the original scene, in order."""
    control = _make_control_env(bddl, 64, offscreen=False)
    model = control.env.sim.model._model
    sizes = {mujoco.mjtJoint.mjJNT_FREE: (7, 6), mujoco.mjtJoint.mjJNT_BALL: (4, 3)}
    layout = []
    for j in range(model.njnt):
        nq, nv = sizes.get(model.jnt_type[j], (1, 1))
        layout.append((mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j), int(model.jnt_qposadr[j]), nq, int(model.jnt_dofadr[j]), nv))
    control.close()
    return tuple(layout)


@dataclass
class Snapshot:
    """Everything needed to continue an episode bit-identically from a decision point."""

    physics: np.ndarray
    timestep: int
    cur_time: float
    step: int
    controller: dict[str, Any]
    chunk_start: int = 0
    events: tuple[dict[str, Any], ...] = ()  # the event perturbations' records (what fired, when): part of the episode's state


class LiberoEnv:
    """One LIBERO task, reusable across init states and non-scene perturbations."""

    def __init__(self, suite: str, task_id: int, image_size: int = 128, scene: tuple[PerturbationSpec, ...] = ()):
        check_task(suite, task_id)
        libero = import_libero()
        task = _benchmark(suite).get_task(task_id)
        bddl = Path(libero.get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        self.suite, self.task_id, self.image_size = suite, task_id, image_size
        self.instruction = task.language
        self.max_steps = SUITE_MAX_STEPS[suite]
        self.scene_specs = tuple(s for s in scene if family_layer(s) is Layer.SCENE)  # the rest is per reset
        scene_params = [(family(spec.name), parameters_for(spec)) for spec in self.scene_specs]
        edited_bddl = self._edited_bddl(bddl, scene_params)
        # shipped init states are flat [time, qpos, qvel] of the original model: map them by joint name
        # when the BDDL edit added objects (their joints keep LIBERO's placement, seeded per init index)
        self._state_layout = _joint_layout(bddl) if edited_bddl != bddl else None
        self._control = _make_control_env(edited_bddl, image_size, offscreen=True)
        self.raw = self._control.env  # the robosuite/LIBERO domain env (privileged access)
        self.scene_key = scene_key(self.scene_specs)
        if any(fam.edits_xml(params) for fam, params in scene_params):
            self._rebuild_with_scene_edits(scene_params)
        self._reset_with_fixture_seed(0)
        self._pristine = {f: getattr(self.raw.sim.model, f).copy() for f in RESTORED_MODEL_FIELDS}
        # controller/gripper state carries over between episodes (e.g. the gripper's last command):
        # restoring it at each reset makes an episode independent of the one before
        self._pristine_controller = self._controller_state()
        self._changed_textures: dict[int, np.ndarray] = {}  # texture id -> its pristine pixels
        self.chunk_start = 0
        goal = self.raw.parsed_problem["goal_state"]
        self.goal = [list(map(str, g)) for g in goal]
        self.target_object = self.goal[0][1] if self.goal and len(self.goal[0]) > 1 else self.raw.obj_of_interest[0]
        self.perturbations: list[Realised] = []
        self._events: list[Realised] = []
        self._pixels: list[Realised] = []
        self._observed: dict[str, np.ndarray] | None = None  # the last rendered observation's images
        self.step_count = 0

    # --- building --------------------------------------------------------------------------------------
    @staticmethod
    def _edited_bddl(bddl: Path, scene_params) -> Path:
        """Apply the scene families' BDDL edits to a copy in the cache folder (the original stays untouched)."""
        text = bddl.read_text()
        edited = text
        for fam, params in scene_params:
            edited = fam.edit_bddl(edited, params)
        if edited == text:
            return bddl
        digest = hashlib.sha256(edited.encode()).hexdigest()[:16]
        path = cache_dir() / "bddl" / f"{bddl.stem}-{digest}.bddl"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(edited)
            tmp.replace(path)
        return path

    def _rebuild_with_scene_edits(self, scene_params) -> None:
        def process(xml: str) -> str:
            for fam, params in scene_params:
                xml = fam.edit_scene(xml, params)
            return xml

        self.raw.set_xml_processor(process)
        self.raw.hard_reset = True
        self._control.reset()
        self.raw.hard_reset = False

    def _map_init_state(self, state: np.ndarray) -> np.ndarray:
        """A shipped init state of the original scene as a state of this (edited) scene."""
        if self._state_layout is None:
            return state
        model, data = self.raw.sim.model._model, self.raw.sim.data._data
        out = np.concatenate([[data.time], data.qpos, data.qvel])
        nq_original = sum(n for _, _, n, _, _ in self._state_layout)
        for name, qadr, nq, vadr, nv in self._state_layout:
            joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if joint < 0:
                raise InvalidScene(f"scene edit removed joint {name!r} that the init state sets")
            out[1 + model.jnt_qposadr[joint] : 1 + model.jnt_qposadr[joint] + nq] = state[1 + qadr : 1 + qadr + nq]
            v_new = 1 + model.nq + model.jnt_dofadr[joint]
            out[v_new : v_new + nv] = state[1 + nq_original + vadr : 1 + nq_original + vadr + nv]
        out[0] = state[0]
        return out

    # --- episode --------------------------------------------------------------------------------------
    def reset(self, init_index: int, perturbations: tuple[PerturbationSpec, ...] = ()) -> None:
        """Set a shipped init state, apply model/state perturbations, settle, resolve and check them.

        Scene-layer specs in ``perturbations`` must have this env's scene key (they may differ in what is
        applied per reset); without any, the env's own are used. A state perturbation whose sampled
        parameters give an invalid scene (``InvalidScene``) is re-sampled from its own generator up to
        ``MAX_ATTEMPTS`` times (explicit parameters are never re-sampled); the number of attempts is
        recorded. Raises ``InvalidScene`` when no valid sample was found, ``NotRealised`` when a
        perturbation did not take effect.
        """
        states = init_states(self.suite, self.task_id)
        if not 0 <= init_index < len(states):
            raise UserError(f"init state {init_index} not in {self.suite} task {self.task_id}; valid: 0-{len(states) - 1}")
        for attempt in range(MAX_ATTEMPTS):
            try:
                self._reset_once(states[init_index], init_index, perturbations, attempt)
                break
            except InvalidScene as exc:
                resamplable = [p for p in self.perturbations if p.family.layer is Layer.STATE and p.spec.params is None]
                if not resamplable or attempt == MAX_ATTEMPTS - 1:
                    tries = f" after {attempt + 1} samples" if resamplable else ""
                    raise InvalidScene(f"{exc}{tries}") from None
        for p in self.perturbations:
            if p.family.layer is Layer.STATE:
                p.realisation["attempts"] = attempt + 1

    def _reset_once(self, state: np.ndarray, init_index: int, perturbations, attempt: int) -> None:
        self._observed = None
        self._reset_with_fixture_seed(init_index)
        self._set_controller_state(self._pristine_controller)
        self._restore_pristine_model()
        self._control.set_init_state(self._map_init_state(state))
        self.step_count = self.chunk_start = 0
        # scene-layer specs: the caller's (same compiled scene, e.g. another seed), else the env's own
        scene = tuple(s for s in perturbations if family_layer(s) is Layer.SCENE) or self.scene_specs
        if scene_key(scene) != self.scene_key:
            raise ValueError(f"scene perturbations {[s.name for s in scene]} need another compiled scene than this env's")
        specs = scene + tuple(s for s in perturbations if family_layer(s) is not Layer.SCENE)
        self.perturbations = [realise(spec, attempt if family_layer(spec) is Layer.STATE else 0) for spec in specs]
        by_layer = {layer: [p for p in self.perturbations if p.family.layer is layer] for layer in Layer}
        self._events = by_layer[Layer.EVENT]  # before the state layer: its validity checks take snapshots
        for p in by_layer[Layer.MODEL]:
            p.family.apply_model(self, p.params)
        for p in by_layer[Layer.STATE]:
            p.family.apply_state(self, p.params)
        self.raw.sim.forward()
        for _ in range(SETTLE_STEPS):
            self.raw.step(NOOP_ACTION)
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

    def _restore_pristine_model(self) -> None:
        model = self.raw.sim.model
        for name, value in self._pristine.items():
            getattr(model, name)[...] = value
        self._swap_textures(self._changed_textures)
        self._changed_textures = {}

    def upload_textures(self, texture_ids) -> None:
        """Upload textures to the live render context (robosuite's TextureModder never does on mujoco 3)."""
        context = self._render_context()
        model = self.raw.sim.model._model
        for tex_id in texture_ids:
            mujoco.mjr_uploadTexture(model, context.con, tex_id)

    def _texture_slice(self, tex_id: int) -> slice:
        model = self.raw.sim.model._model
        start = model.tex_adr[tex_id]
        return slice(start, start + model.tex_width[tex_id] * model.tex_height[tex_id] * model.tex_nchannel[tex_id])

    def set_texture_data(self, tex_id: int, data: np.ndarray) -> None:
        """Replace one texture's pixels (and upload it); undone at the next reset."""
        tex_data = self.raw.sim.model._model.tex_data
        region = self._texture_slice(tex_id)
        self._changed_textures.setdefault(tex_id, tex_data[region].copy())  # the pristine pixels
        tex_data[region] = data.reshape(-1)
        self.upload_textures([tex_id])

    def _swap_textures(self, pixels: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Write the given pixels into their textures, upload them; return what was there before."""
        tex_data = self.raw.sim.model._model.tex_data
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
        model = self.raw.sim.model
        saved = {name: getattr(model, name).copy() for name in self._pristine}
        for name, value in self._pristine.items():
            getattr(model, name)[...] = value
        perturbed_textures = self._swap_textures(self._changed_textures)
        mujoco.mj_forward(model._model, self.raw.sim.data._data)
        try:
            yield
        finally:
            for name, value in saved.items():
                getattr(model, name)[...] = value
            self._swap_textures(perturbed_textures)
            mujoco.mj_forward(model._model, self.raw.sim.data._data)

    def image_change_vs_clean(self, cameras=CAMERAS) -> dict[str, float]:
        """Mean absolute pixel change (0-255) per camera between the current model and the pristine one,
        on the same simulator state: the realisation check of visual model edits."""
        perturbed = {camera: self.render(camera).astype(np.int16) for camera in cameras}
        with self.clean_model():
            clean = {camera: self.render(camera).astype(np.int16) for camera in cameras}
        return {camera: float(np.abs(perturbed[camera] - clean[camera]).mean()) for camera in cameras}

    def begin_chunk(self) -> None:
        """Mark a policy query: event triggers can count steps into the executed chunk."""
        self.chunk_start = self.step_count

    @property
    def chunk_step(self) -> int:
        """Steps executed since the last policy query (0 right after it)."""
        return self.step_count - self.chunk_start

    def _reset_with_fixture_seed(self, init_index: int) -> None:
        """LIBERO re-samples fixture placements (cabinet, stove: model body_pos, not in the init state)
        from the *global* numpy RNG at every reset, so its own evals depend on episode order. We seed
        that draw with the init index and put the caller's global RNG state back afterwards."""
        saved = np.random.get_state()
        np.random.seed(init_index)
        try:
            self._control.reset()
        finally:
            np.random.set_state(saved)

    def step(self, action: np.ndarray) -> bool:
        """One control step (20 Hz). Returns LIBERO's goal check."""
        self._observed = None
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,) or not np.all(np.isfinite(action)):
            raise SimulatorFault(f"invalid action {action!r}")
        self.raw.step(np.clip(action, -1.0, 1.0))
        self._forward()
        self.step_count += 1
        for p in self._events:
            p.family.on_step(self, p.params, self.step_count, p.realisation)
        self._check_physics()
        return self.success()

    def _forward(self) -> None:
        """After mj_step, poses, contacts and sensors lag qpos by one physics substep. Recomputing them makes
        everything a policy or a render sees a function of the state alone, so a restored snapshot renders
        and observes exactly like the original. The trajectory is unchanged: robosuite forwards before
        every substep anyway."""
        mujoco.mj_forward(self.raw.sim.model._model, self.raw.sim.data._data)

    def success(self) -> bool:
        return bool(self.raw._check_success())

    def _check_physics(self) -> None:
        check_physics(self.raw.sim.data._data)

    # --- observing ------------------------------------------------------------------------------------
    def proprio(self) -> np.ndarray:
        obs = self.raw._get_observations()
        return np.concatenate([obs["robot0_gripper_qpos"], obs["robot0_eef_pos"], obs["robot0_eef_quat"]]).astype(np.float32)

    def _render_context(self, camera: str | None = None):
        # robosuite never makes a context current before rendering; with two envs in one process the
        # other env's context would be drawn into, so make ours current first
        context = self.raw.sim._render_context_offscreen
        context.gl_ctx.make_current()
        for name, group in CAMERA_GEOM_GROUP.items():
            context.vopt.geomgroup[group] = int(name == camera)
        return context

    def render(self, camera: str) -> np.ndarray:
        """Clean upright image of one camera (no pixel perturbation)."""
        self._render_context(camera)
        raw = self.raw.sim.render(self.image_size, self.image_size, camera_name=CAMERA_NAMES[camera])
        return np.ascontiguousarray(raw[::-1])

    def segmentation(self, camera: str) -> np.ndarray:
        """Upright map of MuJoCo geom ids seen by ``camera`` (-1: background or a non-geom).

        Reads the id-coloured buffer itself: robosuite 1.4's decoder overflows uint8 under numpy 2.
        """
        size = self.image_size
        context = self._render_context(camera)
        cam_id = self.raw.sim.model.camera_name2id(CAMERA_NAMES[camera])
        context.render(size, size, camera_id=cam_id, segmentation=True)
        rgb = np.empty((size, size, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(rgb=rgb, depth=None, viewport=mujoco.MjrRect(0, 0, size, size), con=context.con)
        rgb = rgb.astype(np.int32)
        scene_index = rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16) - 1  # 0 = background
        lookup = np.full(context.scn.ngeom + 1, -1, dtype=np.int32)
        for i in range(context.scn.ngeom):
            geom = context.scn.geoms[i]
            if geom.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                lookup[i] = geom.objid
        valid = (scene_index >= 0) & (scene_index < context.scn.ngeom)
        ids = np.where(valid, lookup[np.clip(scene_index, 0, context.scn.ngeom)], -1)
        return np.ascontiguousarray(ids[::-1])

    def perturb_pixels(self, image: np.ndarray, camera: str) -> np.ndarray:
        for p in self._pixels:
            if camera in p.cameras:
                image = p.family.apply_pixels(image, camera, p.params)
        return image

    def observe(self, render: bool = True) -> Observation:
        images = {}
        if render:
            clean = {camera: self.render(camera) for camera in CAMERAS}
            if self._pixel_check_pending:  # the first query's clean render doubles as the realisation check
                self._record_pixel_realisation(clean)
            images = {camera: self.perturb_pixels(clean[camera], camera) for camera in CAMERAS}
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
            self._record_pixel_realisation({camera: self.render(camera) for camera in CAMERAS})
        return self._pixel_error

    def _record_pixel_realisation(self, clean: dict[str, np.ndarray]) -> None:
        self._pixel_check_pending = False
        for p in self._pixels:
            changed, mean_change = {}, {}
            for camera in CAMERAS:
                out = p.family.apply_pixels(clean[camera], camera, p.params) if camera in p.cameras else clean[camera]
                changed[camera] = float(np.mean(np.any(out != clean[camera], axis=-1)))
                mean_change[camera] = float(np.abs(out.astype(np.int16) - clean[camera]).mean())
            p.realisation["changed_fraction"] = changed
            p.realisation["mean_abs_change"] = mean_change
            missed = [c for c in p.cameras if changed[c] == 0.0]
            if missed and not p.family.is_identity(p.params) and self._pixel_error is None:
                self._pixel_error = f"not_realised: {p.spec.name} left camera {missed[0]} unchanged"

    # --- scene queries ---------------------------------------------------------------------------------
    def object_position(self, name: str) -> np.ndarray:
        sim = self.raw.sim
        if name in self.raw.obj_body_id:
            return np.array(sim.data.body_xpos[self.raw.obj_body_id[name]])
        site = self.raw.object_sites_dict.get(name)
        if site is not None:
            return np.array(sim.data.site_xpos[sim.model.site_name2id(name)])
        raise KeyError(name)

    def project(self, point: np.ndarray, camera: str) -> tuple[float, float] | None:
        """(row, col) of a world point in the upright image of ``camera``; None when behind the camera."""
        return project(self.raw.sim.model._model, self.raw.sim.data._data, CAMERA_NAMES[camera], point, self.image_size)

    # --- snapshots ------------------------------------------------------------------------------------
    def _stateful_parts(self):
        robot = self.raw.robots[0]
        return {"controller": robot.controller, "gripper": robot.gripper}

    def snapshot(self) -> Snapshot:
        model, data = self.raw.sim.model._model, self.raw.sim.data._data
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(model, spec))
        mujoco.mj_getState(model, data, physics, spec)
        return Snapshot(physics, self.raw.timestep, self.raw.cur_time, self.step_count, self._controller_state(),
                        self.chunk_start, tuple(copy.deepcopy(p.realisation) for p in self._events))

    def _controller_state(self) -> dict[str, Any]:
        """Arrays and scalars of the controller and gripper (e.g. the gripper's smoothed command)."""
        return {
            f"{part}.{key}": np.copy(value) if isinstance(value, np.ndarray) else value
            for part, obj in self._stateful_parts().items()
            for key, value in vars(obj).items()
            if isinstance(value, (np.ndarray, bool, int, float, type(None)))
        }

    def _set_controller_state(self, state: dict[str, Any]) -> None:
        parts = self._stateful_parts()
        for key, value in state.items():
            part, attr = key.split(".", 1)
            setattr(parts[part], attr, np.copy(value) if isinstance(value, np.ndarray) else value)

    def restore(self, snap: Snapshot) -> None:
        self._observed = None
        model, data = self.raw.sim.model._model, self.raw.sim.data._data
        mujoco.mj_setState(model, data, snap.physics, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(model, data)
        self.raw.timestep, self.raw.cur_time, self.step_count = snap.timestep, snap.cur_time, snap.step
        self._set_controller_state(snap.controller)
        self.chunk_start = snap.chunk_start
        for p, record in zip(self._events, snap.events):
            p.realisation.clear()
            p.realisation.update(copy.deepcopy(record))

    def close(self) -> None:
        # free our GL objects with our context current: robosuite frees them in __del__, whenever the
        # garbage collector runs, i.e. in whatever context is current then (another env's)
        context = self.raw.sim._render_context_offscreen
        if context is not None and context.gl_ctx._context:
            context.gl_ctx.make_current()
            context.con.free()
            context.gl_ctx.free()
        self._control.close()
