"""ScenarioSpec: everything that determines one episode. Its content hash is the episode key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from stress.core.errors import UserError

MODES = ("direct", "planning")
SEVERITIES = range(0, 6)
DEFAULT_SEVERITY = 3
CAMERA_TARGETS = ("agentview", "wrist", "both")  # a perturbation's camera field: one camera or "both" (every camera)
SPEC_FIELDS = ("suite", "task_id", "init_index", "perturbations", "policy", "mode", "n_candidates", "aggregation", "seed", "max_steps", "image_size",
               "policy_options")


# policy options that say where or how patiently a policy is reached, not what it is: left out of the episode
# key and the setting label, so a run resumes against a policy server on another host or port (a LeRobot policy:
# its directory and LeRobot's Python; what it is, is its "served" digest)
TRANSPORT_OPTIONS = frozenset({"server", "timeout_s", "policy_path", "python"})
OPTION_LABELS = {"num_denoising_steps": "steps", "value_source": "value", "checkpoint": "model"}  # short names in the 'setting' label


def perturbation_seed(run_seed: int, init_index: int) -> int:
    """The seed of a scene's perturbations: from the run's seed and the init state only, so every mode and policy
    seed of a scene sees the same perturbed scene (and a search's scenario the one `stress run` at seed 0 makes)."""
    return run_seed * 100_003 + init_index


class Layer(str, Enum):
    SCENE = "scene"
    MODEL = "model"
    STATE = "state"
    EVENT = "event"
    PIXELS = "pixels"
    POLICY = "policy"


@dataclass(frozen=True)
class PerturbationSpec:
    """What a scenario says about one perturbation. ``params`` (explicit) wins over sampling from severity."""

    name: str
    severity: int = DEFAULT_SEVERITY
    seed: int = 0
    camera: str = "both"
    params: dict[str, Any] | None = field(default=None, hash=False, compare=True)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "severity": self.severity, "seed": self.seed, "camera": self.camera}
        if self.params is not None:
            out["params"] = self.params
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PerturbationSpec":
        unknown = set(data) - {"name", "severity", "seed", "camera", "params"}
        if unknown:
            raise UserError(f"unknown perturbation field(s) {sorted(unknown)}; valid: name, severity, seed, camera, params")
        if "name" not in data:
            raise UserError("perturbation entry without 'name'")
        return cls(
            name=str(data["name"]),
            severity=data.get("severity", DEFAULT_SEVERITY),
            seed=data.get("seed", 0),
            camera=data.get("camera", "both"),
            params=data.get("params"),
        )

    def __hash__(self):
        return hash(json.dumps(self.to_dict(), sort_keys=True))


@dataclass(frozen=True)
class ScenarioSpec:
    """One episode: scene (suite, task, init state, perturbations) x policy (name, mode, seeds).

    ``max_steps`` None means the suite's own budget (LIBERO: spatial 220, object 280, goal 300, 10: 520).
    ``policy_options``: keyword arguments of the backend's constructor (e.g. ``num_denoising_steps``,
    ``value_source`` of the reference model), as sorted (name, value) pairs; the studies vary them.
    """

    suite: str
    task_id: int
    init_index: int
    perturbations: tuple[PerturbationSpec, ...] = ()
    policy: str = "expert"
    mode: str = "direct"
    n_candidates: int = 1
    aggregation: str | None = None
    seed: int = 0
    max_steps: int | None = None
    image_size: int = 128
    policy_options: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {
            "suite": self.suite,
            "task_id": self.task_id,
            "init_index": self.init_index,
            "perturbations": [p.to_dict() for p in self.perturbations],
            "policy": self.policy,
            "mode": self.mode,
            "n_candidates": self.n_candidates,
            "aggregation": self.aggregation,
            "seed": self.seed,
            "max_steps": self.max_steps,
            "image_size": self.image_size,
        }
        if self.policy_options:  # left out when empty: the keys of specs without options stay what they were
            out["policy_options"] = dict(self.policy_options)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScenarioSpec":
        if not isinstance(data, dict):
            raise UserError(f"a scenario must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - set(SPEC_FIELDS)
        if unknown:
            raise UserError(f"unknown scenario field(s) {sorted(unknown)}; valid: {', '.join(SPEC_FIELDS)}")
        missing = {"suite", "task_id", "init_index"} - set(data)
        if missing:
            raise UserError(f"scenario lacks required field(s) {sorted(missing)}")
        perturbations = data.get("perturbations", [])
        if not isinstance(perturbations, list):
            raise UserError("scenario field 'perturbations' must be a list")
        kwargs = {k: data[k] for k in SPEC_FIELDS if k in data and k not in ("perturbations", "policy_options")}
        options = data.get("policy_options") or {}
        if not isinstance(options, dict):
            raise UserError("scenario field 'policy_options' must be an object of constructor arguments")
        return cls(perturbations=tuple(PerturbationSpec.from_dict(p) for p in perturbations), policy_options=tuple(sorted(options.items())), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "ScenarioSpec":
        return cls.from_dict(json.loads(text))

    @property
    def key(self) -> str:
        """Content hash: the same key means the same episode (transport options left out)."""
        data = self.to_dict()
        if "policy_options" in data:
            data["policy_options"] = {k: v for k, v in data["policy_options"].items() if k not in TRANSPORT_OPTIONS}
            if not data["policy_options"]:
                del data["policy_options"]
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]

    @property
    def setting(self) -> str:
        """Short label of how the policy runs: 'direct' or 'best-of-8 average', plus any policy options."""
        text = "direct" if self.mode == "direct" else f"best-of-{self.n_candidates} {self.aggregation or 'average'}"
        return " ".join([text, *(f"{OPTION_LABELS.get(k, k)}={_option_label(k, v)}" for k, v in self.policy_options if k not in TRANSPORT_OPTIONS)])

    @property
    def label(self) -> str:
        """Short perturbation label: 'clean' or 'name:level+name:level'."""
        return "+".join(f"{p.name}:{p.severity}" for p in self.perturbations) or "clean"

    @property
    def severity(self) -> int:
        return max((p.severity for p in self.perturbations), default=0)

    def clean(self) -> "ScenarioSpec":
        """The same scenario without perturbations (its clean baseline)."""
        return replace(self, perturbations=())


def _option_label(name: str, value) -> str:
    # a checkpoint is named by its folder and file ('round1/reference'), not its whole path
    return "/".join(Path(value).parts[-2:]).removesuffix(".pt") if name == "checkpoint" else str(value)
