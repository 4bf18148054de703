"""The perturbation unit: declared, seeded, serialisable; one family per module.

A family subclasses :class:`Perturbation`, declares its ``name``, ``layer``, its parameter space once
(``space``, perturbations/space.py: validation, docs and search derive from it) and what each severity
level means (a point or region of that space), samples explicit parameters from ``(severity, seed)``
with its own generator, and implements only the hook of its layer. :class:`PerturbationSpec` is what a scenario stores; the
simulator adapter turns it into a :class:`Realised` perturbation (parameters + realisation record).

Layers:
    scene   before the MuJoCo model is compiled (XML edit)         -> ``edit_scene``
    model   after every (re)build, on MjModel fields               -> ``apply_model``
    state   after the init state is set, before settling           -> ``apply_state``
    event   after each env step, at its trigger                    -> ``on_step``
    pixels  on each camera image handed to the policy              -> ``apply_pixels``
    policy  on the policy call                                     -> ``wrap_policy``
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from pkgutil import iter_modules
from typing import Any, ClassVar

import numpy as np

from perturbations.space import ParamSpace
from stress.core.cameras import CAMERAS
from stress.core.errors import NotRealised, UserError
from stress.core.registry import Registry
from stress.core.spec import DEFAULT_SEVERITY, SEVERITIES, Layer, PerturbationSpec


@dataclass
class Realised:
    """A perturbation as applied in one episode: its family, explicit parameters and realisation record."""

    spec: PerturbationSpec
    family: "Perturbation"
    params: dict[str, Any]
    realisation: dict[str, Any] = field(default_factory=dict)
    simulator_cameras: tuple[str, ...] = CAMERAS  # every camera of the simulator it is applied in

    @property
    def cameras(self) -> tuple[str, ...]:
        """The cameras it targets: "both" (the default) means every camera of the simulator."""
        return self.simulator_cameras if self.spec.camera == "both" else (self.spec.camera,)

    def record(self) -> dict[str, Any]:
        """JSON-able record stored with the episode."""
        return {**self.spec.to_dict(), "layer": self.family.layer.value, "params": self.params, "realisation": self.realisation}


class Perturbation:
    """Base class of a perturbation family. Subclasses set the class attributes and their layer's hook."""

    name: ClassVar[str]
    layer: ClassVar[Layer]
    summary: ClassVar[str]
    severity_meaning: ClassVar[str]  # what levels 1..5 mean physically
    space: ClassVar[ParamSpace]  # every explicit parameter: kind, bounds, unit, identity, search grid, meaning
    per_camera: ClassVar[bool] = False  # True: honours the spec's camera target
    # True for visual-only families (lights, textures, camera pose, visual-only bodies): the privileged
    # expert, which ignores pixels, must act identically under them (tests/test_physics_preserving.py).
    # Every pixels-layer family preserves physics by construction.
    preserves_physics: ClassVar[bool] = False
    # the scene capabilities it needs (stress.envs.base.Simulator.capabilities: "lights", "textures",
    # "movable_objects", "arm_joints", ...); the simulators it runs on are those that have them all
    needs: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def keeps_physics(cls) -> bool:
        return cls.layer is Layer.PIXELS or cls.preserves_physics

    # --- pure part -------------------------------------------------------------------------------------
    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        """Explicit parameters for ``severity`` >= 1, drawn only from ``rng``."""
        raise NotImplementedError

    def sample_on(self, simulator, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        """``sample`` on a given simulator (``stress.envs.base.Simulator``: its facts, such as ``chunk_size``
        and ``arm_joints``; None: LIBERO's). A family whose parameters' shape or range depends on the robot
        (ALOHA's two 6-joint arms and 50-step chunks vs LIBERO's 7-joint Panda and 16-step chunks) overrides
        this; LIBERO's draws must stay those of ``sample`` (tests/data/sampled_params.json)."""
        return self.sample(severity, rng, cameras)

    def identity_params(self) -> dict[str, Any]:
        """Parameters of level 0 (no change)."""
        return {}

    def check_params(self, params: dict[str, Any]) -> None:
        """Raise UserError naming the bad value and the valid range. A family extends this only with what
        its declaration cannot say (keys allowed per mode, keys required together)."""
        self.space.validate(self.name, params)

    def space_for(self, simulator_cameras: tuple[str, ...]) -> ParamSpace:
        """The parameter space on a simulator with these cameras (the search's axes): ``space`` unless the
        family's parameters are named after the cameras (``camera``, which also checks them in ``check_params_on``)."""
        return self.space

    def is_identity(self, params: dict[str, Any]) -> bool:
        return params == self.identity_params()

    def check_params_on(self, simulator, params: dict[str, Any]) -> None:
        """Raise UserError when explicit ``params`` cannot apply on ``simulator`` (``stress.envs.Simulator``),
        e.g. a vector sized for another robot; checked with the spec, before any episode runs."""

    # --- hooks (a family implements the one of its layer) ------------------------------------------
    # ``env`` is the simulator adapter (stress.envs.base.SimEnv: LiberoEnv, AlohaEnv): ``env.model`` /
    # ``env.data``, ``env.target_object``, ``env.object_position(name)``, ``env.project(xyz, camera)``,
    # ``env.render(camera)``, ``env.segmentation(camera)``, ``env.image_size``, ``env.image_shape`` (height, width), and the robot and object
    # queries of the state and event families (``movable_objects``, ``arm_joints``, ``grip_points`` ...).
    def resolve(self, params: dict[str, Any], env, cameras: tuple[str, ...]) -> dict[str, Any]:
        """After settling: turn scene-dependent parameters (e.g. 'centred on the target') into concrete ones."""
        return params

    def edit_scene(self, xml: str, params: dict[str, Any]) -> str:
        """Scene layer: edit the compiled scene's MJCF XML (e.g. add a visual-only body)."""
        return xml

    def edits_xml(self, params: dict[str, Any]) -> bool:
        """Whether ``edit_scene`` changes the compiled scene for these parameters (then the env rebuilds)."""
        return type(self).edit_scene is not Perturbation.edit_scene and not self.is_identity(params)

    def scene_key(self, params: dict[str, Any]) -> Any:
        """The part of the parameters the compiled scene depends on (JSON-able). Envs are built and cached
        per scene key; the rest of the parameters is applied at every reset (e.g. where a body goes)."""
        return params

    def edit_bddl(self, bddl: str, params: dict[str, Any]) -> str:
        """Scene layer: edit the task's BDDL text (e.g. add distractor objects); shipped init states are
        then mapped joint by joint by name, new objects keep LIBERO's placement."""
        return bddl

    def apply_model(self, env, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def apply_state(self, env, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def on_step(self, env, params: dict[str, Any], step: int, record: dict[str, Any]) -> None:
        """Event layer: called after every env step; ``record`` is this perturbation's realisation record
        (what fired, when, with what effect), stored with the episode."""
        raise NotImplementedError

    def apply_pixels(self, image: np.ndarray, camera: str, params: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def wrap_policy(self, policy, params: dict[str, Any]):
        raise NotImplementedError

    def occluded_pixels(self, env, params: dict[str, Any], camera: str) -> np.ndarray | None:
        """Where this perturbation hides the scene in ``camera``'s frames (image-size HxW bool), for the
        world model's error split into the occluded region and the rest; None: it hides nothing there."""
        return None

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        """Realisation check after settling (non-pixel layers; pixels have a generic one in the env).

        Returns the realisation record (e.g. the displacement actually achieved, the occluded fraction,
        the image change vs the clean render); raises NotRealised if the perturbation did not take
        effect, InvalidScene if the resulting scene is invalid.
        """
        return {}


# --- helpers shared by families ---------------------------------------------------------------------
MIN_IMAGE_CHANGE = 0.5  # mean abs pixel change (0-255) below which a visual model edit did not take effect


def require_image_change(env, family_name: str) -> dict[str, Any]:
    """Realisation check of a visual model edit: the mean image change vs the clean render of the same state."""
    change = env.applier.image_change_vs_clean()
    if max(change.values()) < MIN_IMAGE_CHANGE:
        raise NotRealised(f"{family_name} changed the images by {max(change.values()):.3f} < {MIN_IMAGE_CHANGE} (mean abs, 0-255)")
    return {"image_change": change}


# modules of this package that hold no family
HELPER_MODULES = frozenset({"base", "space", "docs"})


def _import_families() -> None:
    """Import every family module of this package by name (each registers its family with ``@register``), so
    adding a family is one module. By name, not by importing the package: its ``__init__`` re-exports this module."""
    for module in iter_modules([str(Path(__file__).parent)]):
        if module.name not in HELPER_MODULES and not module.name.startswith("_"):
            import_module(f"{__package__}.{module.name}")


# the perturbation families: the built-in modules here, plug-ins through the "stress.families" entry points
FAMILIES: Registry[type[Perturbation]] = Registry("perturbation", "stress.families", builtins=_import_families, sort=True)


def register(cls: type[Perturbation]) -> type[Perturbation]:
    """Class decorator adding a family to the registry (the contract tests iterate over it)."""
    return FAMILIES.register(cls.name, cls)


def registry() -> dict[str, type[Perturbation]]:
    """Every family by name, sorted."""
    return dict(FAMILIES.items())


def family(name: str) -> Perturbation:
    cls = FAMILIES.get(name)
    if cls.name != name:  # a plug-in's entry point must carry its family's name: specs and seeds use it
        raise UserError(f"perturbation {name!r} is the family {cls.name!r} ({cls.__module__}); name its entry point {cls.name!r}")
    return cls()


def validate(spec: PerturbationSpec, simulator_cameras: tuple[str, ...] = CAMERAS) -> Perturbation:
    """Check a spec against its family (and the cameras of the simulator it is for); raise UserError on the
    first bad value."""
    fam = family(spec.name)
    if not isinstance(spec.severity, int) or isinstance(spec.severity, bool) or spec.severity not in SEVERITIES:
        raise UserError(f"severity {spec.severity!r} of {spec.name!r} out of range; valid: 0-5")
    if not isinstance(spec.seed, int) or isinstance(spec.seed, bool):
        raise UserError(f"seed {spec.seed!r} of {spec.name!r} is not an integer")
    targets = (*simulator_cameras, "both")
    if spec.camera not in targets:
        raise UserError(f"unknown camera {spec.camera!r} for {spec.name!r}; valid: {', '.join(targets)}")
    if spec.params is not None:
        if not isinstance(spec.params, dict):
            raise UserError(f"params of {spec.name!r} must be an object, got {type(spec.params).__name__}")
        fam.check_params(spec.params)
    return fam


def family_rng(spec: PerturbationSpec) -> np.random.Generator:
    """The perturbation's own generator: seeded by (family name, severity, seed), never the global RNG."""
    digest = hashlib.sha256(f"{spec.name}:{spec.severity}:{spec.seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def parameters_for(spec: PerturbationSpec, attempt: int = 0, simulator_cameras: tuple[str, ...] = CAMERAS,
                   simulator=None) -> dict[str, Any]:
    """Explicit parameters of a spec: given ones, identity at level 0, else sampled from (severity, seed).

    ``attempt`` k > 0 gives the k-th re-sample (the same generator drawn further), used when a sample
    produced an invalid scene. ``simulator``: the ``stress.envs.base.Simulator`` the spec is sampled for
    (its facts shape robot-dependent samples; None: LIBERO's).
    """
    fam = validate(spec, simulator_cameras)
    cameras = simulator_cameras if spec.camera == "both" else (spec.camera,)
    if spec.params is not None:
        return dict(spec.params)
    if spec.severity == 0:
        return fam.identity_params()
    rng = family_rng(spec)
    for _ in range(attempt + 1):
        params = fam.sample(spec.severity, rng, cameras) if simulator is None else fam.sample_on(simulator, spec.severity, rng, cameras)
    fam.check_params(params)
    return params


def realise(spec: PerturbationSpec, attempt: int = 0, simulator_cameras: tuple[str, ...] = CAMERAS, simulator=None) -> Realised:
    """A spec with its explicit parameters (scene-dependent ones are resolved by the env after settling)."""
    return Realised(spec=spec, family=family(spec.name), params=parameters_for(spec, attempt, simulator_cameras, simulator),
                    simulator_cameras=simulator_cameras)


def parse_cli(text: str) -> PerturbationSpec:
    """``NAME[:LEVEL]`` from the command line."""
    name, _, level = text.partition(":")
    family(name)
    severity = DEFAULT_SEVERITY
    if level:
        try:
            severity = int(level)
        except ValueError:
            raise UserError(f"severity {level!r} in --perturb {text!r} is not an integer; valid: 0-5") from None
    spec = PerturbationSpec(name=name, severity=severity)
    validate(spec)
    return spec
