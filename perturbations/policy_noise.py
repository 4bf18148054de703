"""Policy-layer numerical perturbations: seed jitter, action noise, action latency, denoising steps, precision.

``wrap_policy`` returns a :class:`NoisyPolicy` around the episode's policy (same ``name``, ``modes``,
``uses_images``; ``reset`` / ``act`` protocol):

* seed jitter: ``seed_offset`` is added to the seed the runner gives ``reset`` (mod 2^31);
* action noise: Gaussian (std ``action_noise_std``, in action units: 1 = 5 cm or 0.5 rad per step) on the
  six arm dimensions of every action the policy returns, clipped to the valid [-1, 1]; drawn from the
  wrapper's own generator, re-seeded with ``noise_seed`` at every ``reset``;
* action latency: execution is delayed by ``latency_steps`` k control steps (50 ms each at 20 Hz). The
  wrapper keeps a FIFO of k pending actions, primed with the no-op ``[0, 0, 0, 0, 0, 0, -1]``: each chunk
  of K actions is appended and the K oldest are executed, so the executed sequence is the policy's own
  sequence shifted by exactly k steps, across chunk boundaries, whatever the chunk length;
* denoising steps and precision, for backends that have them: ``policy.num_denoising_steps`` becomes
  ``max(1, round(default * denoising_steps_scale))`` and ``policy.precision`` becomes ``precision``
  (``float32`` or ``bfloat16``) for the duration of each ``reset``/``act`` call only, then the backend's
  own values are put back (the runner caches policies across episodes, so nothing may leak).

Noise is applied to the policy's actions before the delay line, so the latency no-ops stay exact no-ops.

Realisation: per knob, whether it took effect on this policy and the value applied (``from``/``to`` for
the backend attributes). A knob whose attribute the policy does not have is recorded as not applicable;
when every requested knob is inapplicable, ``wrap_policy`` raises ``NotRealised``. ``check(env, params)``
runs before the policy is wrapped and cannot see it: it returns a ``knobs`` dict that ``wrap_policy`` of
the same family instance fills in afterwards, so the episode record holds the outcome.

Severity levels (every level sets all knobs; ``seed_offset`` and ``noise_seed`` are drawn from the seed):

======  ===============  ===============  ======================  =========
level   action noise     latency          denoising steps scale   precision
======  ===============  ===============  ======================  =========
1       0.02 (1 mm)      1 step (50 ms)   0.75                    (as is)
2       0.05 (2.5 mm)    2 (100 ms)       0.5                     (as is)
3       0.10 (5 mm)      3 (150 ms)       0.35                    bfloat16
4       0.20 (10 mm)     5 (250 ms)       0.25                    bfloat16
5       0.30 (15 mm)     8 (400 ms)       0.1                     bfloat16
======  ===============  ===============  ======================  =========

Action noise in millimetres is the std of the commanded position change per step (rotation: x 0.5 rad).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from contextlib import contextmanager
from typing import Any

import numpy as np

from perturbations.base import Perturbation, register
from stress.core.errors import NotRealised
from stress.core.spec import Layer
from perturbations.space import Choice, ParamSpace, Real
from stress.core.policy import Decision

NOOP = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
NOISE = {1: 0.02, 2: 0.05, 3: 0.10, 4: 0.20, 5: 0.30}
LATENCY = {1: 1, 2: 2, 3: 3, 4: 5, 5: 8}
DENOISING = {1: 0.75, 2: 0.5, 3: 0.35, 4: 0.25, 5: 0.1}
PRECISIONS = ("float32", "bfloat16")
SEED_MOD = 2**31
SPACE = ParamSpace(
    Real("seed_offset", 0, math.inf, "", "added to the policy seed (mod 2^31)", identity=0, integer=True),
    Real("action_noise_std", 0.0, 1.0, "action units", "Gaussian std on the 6 arm action dims (1 = 5 cm or 0.5 rad per step)", identity=0.0, step=0.01),
    Real("noise_seed", 0, math.inf, "", "seed of the action-noise generator (re-seeded every episode)", default=0, integer=True),
    Real("latency_steps", 0, 50, "steps", "execution delay in control steps (50 ms each); the first k steps are no-ops", identity=0, step=1, integer=True),
    Real("denoising_steps_scale", 0.0, 1.0, "", "factor on the backend's num_denoising_steps (rounded, >= 1)", identity=1.0, step=-0.01, low_open=True),
    Choice("precision", (None, "float32", "bfloat16"), "backend inference precision (null: the backend's own)"),
)
KNOBS = ("seed_offset", "action_noise_std", "latency_steps", "denoising_steps_scale", "precision")
DEFAULTS = {knob: SPACE.defaults()[knob] for knob in KNOBS}  # each knob's no-change value


class NoisyPolicy:
    """A policy with numerical perturbations (see the module docstring); honours the policy protocol."""

    def __init__(self, policy, params: dict[str, Any], realisation: dict[str, Any]):
        self.policy = policy
        self.name, self.modes, self.uses_images = policy.name, policy.modes, policy.uses_images
        self.seed_offset = int(params.get("seed_offset", 0))
        self.noise_std = float(params.get("action_noise_std", 0.0))
        self.noise_seed = int(params.get("noise_seed", 0))
        self.latency = int(params.get("latency_steps", 0))
        self.realisation = realisation
        self._overrides: dict[str, Any] = {}
        for knob, value in params.items():
            if knob not in KNOBS or value == DEFAULTS[knob]:
                continue
            if knob == "denoising_steps_scale":
                self._override(knob, "num_denoising_steps", lambda steps: max(1, round(steps * float(value))))
            elif knob == "precision":
                self._override(knob, "precision", lambda _: value)
            else:
                realisation[knob] = {"applied": True, "value": value}
        self._rng = np.random.default_rng(self.noise_seed)
        self._pending: deque[np.ndarray] = deque()

    def _override(self, knob: str, attribute: str, new_value) -> None:
        if not hasattr(self.policy, attribute):
            self.realisation[knob] = {"applied": False, "reason": f"policy {self.policy.name!r} has no {attribute}"}
            return
        old = getattr(self.policy, attribute)
        new = new_value(old)
        plain = lambda v: v if isinstance(v, (int, float, str)) else str(v)  # e.g. a torch dtype, stored as JSON
        self.realisation[knob] = {"applied": new != old, "attribute": attribute, "from": plain(old), "to": plain(new)}
        if new != old:
            self._overrides[attribute] = new

    @contextmanager
    def _overridden(self):
        """The backend's attributes set for one call, then put back (the runner reuses the policy object)."""
        saved = {attribute: getattr(self.policy, attribute) for attribute in self._overrides}
        try:
            for attribute, value in self._overrides.items():
                setattr(self.policy, attribute, value)
            yield
        finally:
            for attribute, value in saved.items():
                setattr(self.policy, attribute, value)

    def reset(self, instruction: str, seed: int, **planning) -> None:
        with self._overridden():
            self.policy.reset(instruction, (int(seed) + self.seed_offset) % SEED_MOD, **planning)
        self._rng = np.random.default_rng(self.noise_seed)
        self._pending = deque(NOOP.copy() for _ in range(self.latency))

    def act(self, obs) -> Decision:
        with self._overridden():
            decision = self.policy.act(obs)
        actions = np.array(decision.actions, dtype=np.float64)
        if self.noise_std > 0.0:
            actions[:, :6] = np.clip(actions[:, :6] + self._rng.normal(0.0, self.noise_std, size=(len(actions), 6)), -1.0, 1.0)
        if self.latency:
            self._pending.extend(actions)
            actions = np.array([self._pending.popleft() for _ in range(len(actions))])
        return dataclasses.replace(decision, actions=actions, info={**decision.info, "policy_noise": {"latency_steps": self.latency}})


@register
class PolicyNoise(Perturbation):
    name = "policy_noise"
    layer = Layer.POLICY
    summary = "policy seed jitter, action noise, action latency, denoising-step count and precision"
    severity_meaning = (
        "all knobs together: action noise std 0.02/0.05/0.1/0.2/0.3 (action units), latency 1/2/3/5/8 steps "
        "(50 ms each), denoising steps x 0.75/0.5/0.35/0.25/0.1, bfloat16 from level 3, a random seed offset"
    )
    space = SPACE

    def __init__(self):
        self._knobs: dict[str, Any] = {}  # filled by wrap_policy, recorded through check's return value

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        params = {
            "seed_offset": int(rng.integers(1, SEED_MOD)),
            "action_noise_std": NOISE[severity],
            "noise_seed": int(rng.integers(0, SEED_MOD)),
            "latency_steps": LATENCY[severity],
            "denoising_steps_scale": DENOISING[severity],
        }
        if severity >= 3:
            params["precision"] = "bfloat16"
        return params

    def is_identity(self, params: dict[str, Any]) -> bool:
        return all(params.get(knob, default) == default for knob, default in DEFAULTS.items())

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        # the policy is wrapped after this check: hand over the dict wrap_policy fills in (same instance)
        return {} if self.is_identity(params) else {"knobs": self._knobs}

    def wrap_policy(self, policy, params: dict[str, Any]):
        if self.is_identity(params):
            return policy
        self._knobs.clear()  # the same dict check() returned: cleared, not replaced
        wrapped = NoisyPolicy(policy, params, self._knobs)
        if not any(knob["applied"] for knob in self._knobs.values()):
            raise NotRealised(f"policy_noise: no knob applies to policy {policy.name!r}: " + "; ".join(f"{k}: {v.get('reason', 'unchanged')}" for k, v in self._knobs.items()))
        return wrapped
