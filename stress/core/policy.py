"""The policy protocol every backend honours: ``reset()``, ``act(obs) -> Decision``.

A Decision always carries the action chunk to execute. Backends with a world model and a value head
(the reference model, Cosmos Policy) also fill the predicted future images, the value and, in planning
mode, every candidate they considered; the expert leaves those empty, so prediction metrics are absent
for it, not zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

ACTION_DIM = 7  # OSC_POSE delta: dx dy dz (scaled by 0.05 m), droll dpitch dyaw (scaled by 0.5 rad), gripper (-1 open, +1 close)


@dataclass
class Observation:
    """What a policy sees at one decision.

    images: camera name ("agentview", "wrist") -> HxWx3 uint8, upright (vertically flipped from the raw
        MuJoCo render, the orientation Cosmos Policy expects), pixel perturbations applied. Empty when
        the policy declared ``uses_images = False``.
    proprio: 9-D float: gripper qpos (2), end-effector position (3, m), end-effector quaternion (4, xyzw).
    privileged: simulator access for privileged policies (the expert); image-based policies must ignore it.
    """

    images: dict[str, np.ndarray]
    proprio: np.ndarray
    instruction: str
    step: int
    privileged: Any = None


@dataclass
class Candidate:
    """One best-of-N candidate: its action chunk and what the model predicted for it."""

    actions: np.ndarray
    predicted_value: float | None = None
    predicted_future: dict[str, np.ndarray] | None = None
    seed: int | None = None
    ensemble_values: np.ndarray | None = None  # the raw value ensemble (futures x values, flattened) behind predicted_value


@dataclass
class Decision:
    """One policy query. ``actions`` (K x D float: D = 7 on LIBERO, 14 on ALOHA) is executed open-loop, all K
    steps; the env checks D."""

    actions: np.ndarray
    predicted_value: float | None = None
    predicted_future: dict[str, np.ndarray] | None = None
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int | None = None
    aggregation: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.actions = np.asarray(self.actions, dtype=np.float64)
        if self.actions.ndim != 2 or len(self.actions) == 0 or self.actions.shape[1] == 0:
            raise ValueError(f"Decision.actions must be (K>0, D>0); got {self.actions.shape}")


class PolicyFault(RuntimeError):
    """A policy call that failed for a reason outside the scenario (a server gone, a malformed reply): the runner
    stores the episode as an error ``"<kind>: <message>"``, never as a task failure."""

    kind = "policy_fault"


class PolicyUnavailable(PolicyFault):
    """The policy could not be reached or did not answer in time. Transient: ``--resume`` runs the episode again."""

    kind = "policy_unavailable"


class Policy(Protocol):
    name: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]  # "direct", and "planning" for backends with a planner
    uses_images: ClassVar[bool]
    simulators: ClassVar[tuple[str, ...]]  # the simulators (stress.envs registry names) it can drive
    # optional: ``cameras``, the cameras it reads (known after ``reset``; a served policy's handshake says them); the
    # episode renders only those. Absent or None: every camera of the simulator

    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation: str | None = None) -> None:
        """Start an episode. ``mode`` is "direct" or "planning" (best-of-``n_candidates``, candidates
        scored with ``aggregation``, see ``stress.policies.planning``)."""
        ...

    def act(self, obs: Observation) -> Decision: ...
