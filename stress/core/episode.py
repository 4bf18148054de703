"""One episode's result and the two stored tables' rows, each column declared once (name, Arrow type, value)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from stress.core.cameras import STORED_CAMERAS
from stress.core.spec import ScenarioSpec


@dataclass
class EpisodeResult:
    spec: ScenarioSpec
    success: bool = False
    steps: int = 0
    wall_s: float = 0.0
    error: str | None = None
    perturbations: list[dict[str, Any]] = field(default_factory=list)
    actions: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    decision_steps: list[int] = field(default_factory=list)  # env step at each policy query
    decisions: list[dict[str, Any]] = field(default_factory=list)
    measure_s: float = 0.0  # of wall_s, the time spent on ground-truth measurements
    policy_s: float = 0.0  # of wall_s, the time spent inside policy.act (latency = policy_s / decisions)
    failure: str | None = None  # failure signature (stress.envs.signatures); None when the episode errored
    progress: float | None = None  # 0-1 how far it got (stress.envs.signatures); None when the episode errored
    failure_step: int | None = None  # env step at which that failure began (stress.envs.signatures onset), where it has one
    frames: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # measured decisions' agentview frames (groundtruth)
    max_steps: int | None = None  # the step budget it ran under (the spec's, else the suite's); set by the runner

    def row(self) -> dict[str, Any]:
        """The episode's row of ``episodes.parquet`` (columns: ``EPISODE_SCHEMA``)."""
        return {name: value(self) for name, _, value in _EPISODE_COLUMNS}


def _unless_error(name: str):
    return lambda r: getattr(r, name) if r.error is None else None


# name, Arrow type, value of an EpisodeResult: the one definition of an episode row
_EPISODE_COLUMNS = (
    ("episode_key", pa.string(), lambda r: r.spec.key),
    ("suite", pa.string(), lambda r: r.spec.suite),
    ("task_id", pa.int32(), lambda r: r.spec.task_id),
    ("init_index", pa.int32(), lambda r: r.spec.init_index),
    ("policy", pa.string(), lambda r: r.spec.policy),
    ("mode", pa.string(), lambda r: r.spec.mode),
    ("perturbation", pa.string(), lambda r: r.spec.label),  # label: 'clean' or 'name:level+...'
    # JSON list of realised parameters and realisation records
    ("perturbations", pa.string(), lambda r: json.dumps(r.perturbations, sort_keys=True, default=float)),
    # the level sampled from; with explicit params (a search's scenarios) only a label: the axis furthest from rest, 0-5
    ("severity", pa.int32(), lambda r: r.spec.severity),
    ("seed", pa.int64(), lambda r: r.spec.seed),
    ("success", pa.bool_(), lambda r: r.success),
    ("steps", pa.int32(), lambda r: r.steps),
    ("wall_s", pa.float64(), lambda r: r.wall_s),
    ("measure_s", pa.float64(), lambda r: r.measure_s),  # of wall_s, spent on ground-truth measurements
    ("policy_s", pa.float64(), lambda r: r.policy_s),  # of wall_s, spent inside the policy (per decision: policy_s / decisions)
    ("decisions", pa.int32(), lambda r: len(r.decision_steps)),
    ("setting", pa.string(), lambda r: r.spec.setting),  # how the policy ran: 'direct', 'best-of-8 average', plus policy options
    ("failure", pa.string(), _unless_error("failure")),  # failure signature: success, never_grasped, dropped, ...
    ("progress", pa.float64(), _unless_error("progress")),  # 0-1 how far the episode got, 1 = solved
    ("max_steps", pa.int32(), lambda r: r.max_steps or r.spec.max_steps),  # the step budget it ran under
    ("failure_step", pa.int32(), _unless_error("failure_step")),  # env step at which the failure began; null where none
    ("error", pa.string(), lambda r: r.error),
    ("spec", pa.string(), lambda r: r.spec.to_json()),  # the ScenarioSpec as JSON
)
EPISODE_SCHEMA = pa.schema([(name, kind) for name, kind, _ in _EPISODE_COLUMNS])

DECISION_SCHEMA = pa.schema(
    [
        ("episode_key", pa.string()),
        ("step", pa.int32()),
        ("candidate", pa.int32()),  # -1 for the executed (direct) decision
        ("chosen", pa.bool_()),
        ("pred_value", pa.float64()),
        ("aggregation", pa.string()),
        ("n_candidates", pa.int32()),
        # counterfactual ground truth (stress.measurement.groundtruth); null where not measured
        ("true_outcome", pa.float64()),  # success (1/0) of this chunk continued by the direct policy
        ("realised_value", pa.float64()),  # executed rows: gamma^(steps from the chunk's end to success), 0 on failure
        ("future_psnr", pa.float64()),  # predicted vs true future, mean over cameras
        ("future_ssim", pa.float64()),
        ("baseline_psnr", pa.float64()),  # current frame vs true future (copy-frame baseline)
        ("baseline_ssim", pa.float64()),
        *[(f"{m}_{c}", pa.float64()) for c in STORED_CAMERAS for m in ("future_psnr", "future_ssim", "baseline_psnr", "baseline_ssim")],
        # with an occluding pixel perturbation: PSNR inside the occluded pixels and outside them
        *[(f"{m}_psnr_{part}", pa.float64()) for m in ("future", "baseline") for part in ("occluded", "visible")],
        ("action_spread", pa.float64()),  # planning: mean pairwise distance of the N candidate chunks
        ("ensemble_std", pa.float64()),  # std of the candidate's raw value ensemble (executed row: the chosen one's); null without one
    ]
)
