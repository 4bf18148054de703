"""The perturbation applier: every layer of perturbations applied to one env, in one place.

    scene   compiled in by the adapter (``edit_scene`` / ``edit_bddl`` / ``edit_spec``); here only checked
            against the env's scene key
    model   MjModel fields (and textures) edited after every reset, on top of the pristine ones restored first
    state   after the init state is set, before settling; a sample that gives an invalid scene
            (``InvalidScene``) is re-sampled from its own generator up to ``MAX_ATTEMPTS`` times
    event   after every env step (``after_step``); their records are part of a snapshot
    pixels  on each camera image handed to the policy, with their realisation check
    policy  around the policy (``wrap_policy``), called by the runner

The env (``stress.envs.base.SimEnv``) owns one applier and calls it from ``reset``, ``step``, ``observe``,
``snapshot`` and ``restore``; the families' hooks receive the env.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any

import mujoco
import numpy as np

from perturbations.base import Realised, family, parameters_for, realise
from stress.core.errors import InvalidScene
from stress.core.spec import Layer, PerturbationSpec
from stress.core.errors import UserError

MAX_ATTEMPTS = 10  # re-samples of a state perturbation that gave an invalid scene
# MjModel fields model-layer perturbations may edit; restored from a pristine copy at every reset.
RESTORED_MODEL_FIELDS = (
    "light_diffuse", "light_ambient", "light_specular", "light_pos", "light_dir", "light_active",
    "cam_pos", "cam_quat", "cam_fovy", "cam_mode", "mat_rgba", "geom_rgba", "geom_friction", "body_mass",
    "body_inertia", "dof_damping", "dof_frictionloss",
)


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


class PerturbationApplier:
    """Applies one episode's perturbations to ``env`` (see the module docstring)."""

    def __init__(self, env, simulator, scene_specs: tuple[PerturbationSpec, ...]):
        self.env, self.simulator = env, simulator  # simulator: the env's stress.envs.base.Simulator (sampling facts)
        self.scene_specs = scene_specs
        self.scene_key = scene_key(scene_specs)
        self._pristine = {f: getattr(env.model, f).copy() for f in RESTORED_MODEL_FIELDS}
        self._changed_textures: dict[int, np.ndarray] = {}  # texture id -> its pristine pixels
        self.perturbations: list[Realised] = []
        self._events: list[Realised] = []
        self._pixels: list[Realised] = []
        self.pixel_check_pending, self._pixel_error = False, None

    # --- reset: scene check, model, state (re-sampled), resolve, checks ------------------------------------
    def reset(self, init_index: int, perturbations: tuple[PerturbationSpec, ...] = ()) -> None:
        """Set an init state, apply model/state perturbations, settle, resolve and check them.

        Scene-layer specs in ``perturbations`` must have this env's scene key (they may differ in what is
        applied per reset); without any, the env's own are used. A state perturbation whose sampled
        parameters give an invalid scene (``InvalidScene``) is re-sampled from its own generator up to
        ``MAX_ATTEMPTS`` times (explicit parameters are never re-sampled); the number of attempts is
        recorded. Raises ``InvalidScene`` when no valid sample was found, ``NotRealised`` when a
        perturbation did not take effect.
        """
        env = self.env
        n = env.n_init_states()
        if not isinstance(init_index, (int, np.integer)) or not 0 <= init_index < n:
            raise UserError(f"init state {init_index} not in {env.suite} task {env.task_id}; valid: 0-{n - 1}")
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
        env = self.env
        env._observed = None
        env._reset_sim(init_index)
        self._restore_pristine_model()
        env._set_init(init_index)
        env.step_count = env.chunk_start = 0
        # scene-layer specs: the caller's (same compiled scene, e.g. another seed), else the env's own
        scene = tuple(s for s in perturbations if family_layer(s) is Layer.SCENE) or self.scene_specs
        if scene_key(scene) != self.scene_key:
            raise ValueError(f"scene perturbations {[s.name for s in scene]} need another compiled scene than this env's")
        specs = scene + tuple(s for s in perturbations if family_layer(s) is not Layer.SCENE)
        self.perturbations = [realise(spec, attempt if family_layer(spec) is Layer.STATE else 0, env.cameras, self.simulator)
                              for spec in specs]
        by_layer = {layer: [p for p in self.perturbations if p.family.layer is layer] for layer in Layer}
        self._events = by_layer[Layer.EVENT]  # before the state layer: its validity checks take snapshots
        for p in by_layer[Layer.MODEL]:
            p.family.apply_model(env, p.params)
        for p in by_layer[Layer.STATE]:
            p.family.apply_state(env, p.params)
        mujoco.mj_forward(env.model, env.data)
        env._settle()
        env._forward()
        env._check_physics()
        # scene-dependent parameters (e.g. where the target is in the image) are fixed after settling
        for p in self.perturbations:
            p.params = p.family.resolve(p.params, env, p.cameras)
        self._pixels = by_layer[Layer.PIXELS]
        self.pixel_check_pending, self._pixel_error = bool(self._pixels), None
        for p in self.perturbations:
            if p.family.layer is not Layer.PIXELS:
                p.realisation.update(p.family.check(env, p.params))

    # --- events ----------------------------------------------------------------------------------------
    def after_step(self) -> None:
        """The event layer, after every env step."""
        for p in self._events:
            p.family.on_step(self.env, p.params, self.env.step_count, p.realisation)

    def event_records(self) -> tuple[dict[str, Any], ...]:
        """What the event perturbations recorded so far (what fired, when): part of a snapshot."""
        return tuple(copy.deepcopy(p.realisation) for p in self._events)

    def restore_event_records(self, records: tuple[dict[str, Any], ...]) -> None:
        for p, record in zip(self._events, records):
            p.realisation.clear()
            p.realisation.update(copy.deepcopy(record))

    # --- policy ----------------------------------------------------------------------------------------
    def wrap_policy(self, policy):
        """The policy layer: the policy as the episode's policy-layer perturbations change it."""
        for p in self.perturbations:
            if p.family.layer is Layer.POLICY:
                policy = p.family.wrap_policy(policy, p.params)
        return policy

    # --- model edits (textures included) ---------------------------------------------------------------
    def _restore_pristine_model(self) -> None:
        for name, value in self._pristine.items():
            getattr(self.env.model, name)[...] = value
        self._swap_textures(self._changed_textures)
        self._changed_textures = {}

    def upload_textures(self, texture_ids) -> None:
        """Upload textures to the live render context (edits of ``tex_data`` are invisible until then)."""
        context = self.env._render_context()[0]
        for tex_id in texture_ids:
            mujoco.mjr_uploadTexture(self.env.model, context, tex_id)

    def _texture_slice(self, tex_id: int) -> slice:
        model = self.env.model
        start = model.tex_adr[tex_id]
        return slice(start, start + model.tex_width[tex_id] * model.tex_height[tex_id] * model.tex_nchannel[tex_id])

    def set_texture_data(self, tex_id: int, data: np.ndarray) -> None:
        """Replace one texture's pixels (and upload it); undone at the next reset."""
        tex_data = self.env.model.tex_data
        region = self._texture_slice(tex_id)
        self._changed_textures.setdefault(tex_id, tex_data[region].copy())  # the pristine pixels
        tex_data[region] = data.reshape(-1)
        self.upload_textures([tex_id])

    def _swap_textures(self, pixels: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Write the given pixels into their textures, upload them; return what was there before."""
        tex_data = self.env.model.tex_data
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
        saved = {name: getattr(self.env.model, name).copy() for name in self._pristine}
        for name, value in self._pristine.items():
            getattr(self.env.model, name)[...] = value
        perturbed_textures = self._swap_textures(self._changed_textures)
        mujoco.mj_forward(self.env.model, self.env.data)
        try:
            yield
        finally:
            for name, value in saved.items():
                getattr(self.env.model, name)[...] = value
            self._swap_textures(perturbed_textures)
            mujoco.mj_forward(self.env.model, self.env.data)

    def image_change_vs_clean(self, cameras=None) -> dict[str, float]:
        """Mean absolute pixel change (0-255) per camera between the current model and the pristine one,
        on the same simulator state: the realisation check of visual model edits."""
        cameras = cameras or self.env.cameras
        perturbed = {camera: self.env.render(camera).astype(np.int16) for camera in cameras}
        with self.clean_model():
            clean = {camera: self.env.render(camera).astype(np.int16) for camera in cameras}
        return {camera: float(np.abs(perturbed[camera] - clean[camera]).mean()) for camera in cameras}

    # --- pixels ---------------------------------------------------------------------------------------
    def perturb_pixels(self, image: np.ndarray, camera: str) -> np.ndarray:
        for p in self._pixels:
            if camera in p.cameras:
                image = p.family.apply_pixels(image, camera, p.params)
        return image

    def check_pixel_realisation(self) -> str | None:
        """Realisation check of the pixel perturbations (renders once unless ``observe`` already did).

        Records per camera the share of pixels each perturbation changed. Returns an error string when
        a non-identity perturbation left a targeted camera unchanged.
        """
        if self.pixel_check_pending:
            self.record_pixel_realisation({camera: self.env.render(camera) for camera in self.env.cameras})
        return self._pixel_error

    def record_pixel_realisation(self, clean: dict[str, np.ndarray]) -> None:
        self.pixel_check_pending = False
        for p in self._pixels:
            changed, mean_change = {}, {}
            for camera in self.env.cameras:
                out = p.family.apply_pixels(clean[camera], camera, p.params) if camera in p.cameras else clean[camera]
                changed[camera] = float(np.mean(np.any(out != clean[camera], axis=-1)))
                mean_change[camera] = float(np.abs(out.astype(np.int16) - clean[camera]).mean())
            p.realisation["changed_fraction"] = changed
            p.realisation["mean_abs_change"] = mean_change
            missed = [c for c in p.cameras if changed[c] == 0.0]
            if missed and not p.family.is_identity(p.params) and self._pixel_error is None:
                self._pixel_error = f"not_realised: {p.spec.name} left camera {missed[0]} unchanged"
