"""ScenarioSpec: everything that determines one episode. Its content hash is the episode key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from perturbations.base import PerturbationSpec
from stress.errors import UserError

MODES = ("direct", "planning")
SPEC_FIELDS = ("suite", "task_id", "init_index", "perturbations", "policy", "mode", "n_candidates", "aggregation", "seed", "max_steps", "image_size")


@dataclass(frozen=True)
class ScenarioSpec:
    """One episode: scene (suite, task, init state, perturbations) x policy (name, mode, seeds).

    ``max_steps`` None means the suite's own budget (LIBERO: spatial 220, object 280, goal 300, 10: 520).
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

    def to_dict(self) -> dict[str, Any]:
        return {
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
        kwargs = {k: data[k] for k in SPEC_FIELDS if k in data and k != "perturbations"}
        return cls(perturbations=tuple(PerturbationSpec.from_dict(p) for p in perturbations), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "ScenarioSpec":
        return cls.from_dict(json.loads(text))

    @property
    def key(self) -> str:
        """Content hash: the same key means the same episode."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

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
