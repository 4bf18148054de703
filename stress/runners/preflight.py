"""The pre-run inference check of every served policy (``remote``, ``openpi``, ``cosmos-deploy``): before any
episode, one real observation of the first scenario goes to the server through the backend's own client, and the
reply must be a decision the simulator can execute. A server speaking another protocol, a reply without
``actions``, with the wrong shape or with NaN: UserError (exit 2, one line naming the mismatch and what was
expected) before the run starts. During a run the same faults are episode errors (``run_episode``). deploy.py has
no handshake: its probe (one real request with this observation, ``cosmos_deploy.probe``) is also this check's request."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stress.core.errors import UserError
from stress.core.policy import Decision, Observation, PolicyFault
from stress.core.spec import ScenarioSpec
from stress.envs.cache import EnvCache
from stress.policies import policy_class

SERVED = ("remote", "openpi", "cosmos-deploy")  # the backends that talk to a policy server
_envs = EnvCache(1)  # the driver's one scene for the checks (a probe and the check after it share it)


def first_observation(spec: ScenarioSpec) -> tuple[Observation, int]:
    """The clean first observation of ``spec``'s scene (its task, init state and image size), rendered as a policy
    sees it, and the simulator's action dimension."""
    clean = replace(spec, perturbations=())
    env = _envs.get(clean)
    env.reset(clean.init_index, ())
    return env.observe(render=True), env.action_dim


def check_inference(spec: ScenarioSpec) -> Decision:
    """One decision of ``spec``'s served policy on its scenario's first observation, checked: the reply's decision,
    or UserError naming the mismatch and what was expected."""
    options = dict(spec.policy_options)
    where = f"policy server {options.get('server')}"
    obs, action_dim = first_observation(spec)
    policy = policy_class(spec.policy)(**options)
    try:
        policy.reset(obs.instruction, spec.seed, mode=spec.mode, n_candidates=spec.n_candidates, aggregation=spec.aggregation)
        # a client whose server already answered this observation (deploy.py's probe) decides from that reply: one request
        decision = getattr(policy, "first_decision", policy.act)(obs)
    except PolicyFault as exc:
        raise UserError(f"{where} failed the inference check on {spec.suite} task {spec.task_id} ({exc.kind}: {exc})") from None
    finally:
        close = getattr(policy, "close", None)
        if close is not None:
            close()
    chunks = [("actions", decision.actions)] + [(f"candidates[{i}].actions", c.actions) for i, c in enumerate(decision.candidates)]
    for name, actions in chunks:
        actions = np.asarray(actions)
        if actions.ndim != 2 or actions.shape[1] != action_dim or not len(actions):
            raise UserError(f"{where} failed the inference check on {spec.suite}: {name} has shape {actions.shape}; expected (chunk, {action_dim})")
        if not np.isfinite(actions).all():
            raise UserError(f"{where} failed the inference check on {spec.suite}: {name} holds NaN or infinite values; expected finite actions")
    return decision


def check_first(specs: list[ScenarioSpec]) -> Decision | None:
    """``check_inference`` of the first spec of each served policy, server and mode among ``specs`` (None without any)."""
    decision, seen = None, set()
    for spec in specs:
        key = (spec.policy, dict(spec.policy_options).get("server"), spec.mode)
        if spec.policy in SERVED and key not in seen:
            seen.add(key)
            decision = check_inference(spec)
    return decision
