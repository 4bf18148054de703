"""One episode: ScenarioSpec -> EpisodeResult (a run of many specs: ``stress.runners``).

Episode loop (per decision): mark the chunk start, snapshot the simulator when a measurement hook asks
for it, observe (rendering the cameras only if the policy uses images), ask the policy, execute the
whole action chunk open-loop, stop on success or the step budget. A simulator fault or an exception marks the episode with an ``error`` and the run goes on.

``EpisodeWorker`` is what a worker of a runner's pool (``stress.runners.pool``) holds: its env and policy caches, and
the episode run from a spec's JSON.
"""

from __future__ import annotations

import inspect
import os
import time
import traceback
from typing import Any, Callable

import numpy as np

from perturbations.base import registry, validate
from stress.core.errors import InvalidScene, NotRealised
from stress.core.episode import EpisodeResult
from stress.core.spec import MODES, ScenarioSpec
from stress.envs import check_init, max_steps as suite_max_steps, simulator_of
from stress.envs.base import SimEnv, SimulatorFault
from stress.envs.cache import EnvCache
from stress.core.errors import UserError, choice_error
from stress.policies import policy_class, policy_names, simulator_argument
from stress.policies.cache import PolicyCache
from stress.core.policy import Decision, PolicyFault
from stress.measurement.groundtruth import GroundTruth, Measurement
from stress.core.metrics import action_spread
from stress.policies.planning import check_aggregation

DecisionHook = Callable[[SimEnv, Any, Decision], None]


def check_spec(spec: ScenarioSpec) -> None:
    """Validate a spec before running it; raise UserError naming the first bad value."""
    for name in ("task_id", "init_index", "seed", "n_candidates"):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"scenario field {name} {value!r} is not an integer")
    check_init(spec.suite, spec.task_id, spec.init_index)
    sim = simulator_of(spec.suite)
    cls = policy_class(spec.policy)
    if sim.name not in cls.simulators:
        drivers = [name for name in policy_names() if sim.name in policy_class(name).simulators]
        raise UserError(f"policy {spec.policy!r} does not drive {sim.name} (suite {spec.suite}); valid there: {', '.join(drivers)}")
    # ``simulator`` is the runner's to pass (``per_simulator`` backends), not a user's option
    passed = simulator_argument(cls, sim.name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self" and p not in passed]
    for option, _ in spec.policy_options:
        if option not in accepted:
            raise UserError(f"policy option {option!r} unknown for policy {spec.policy!r}; valid: {', '.join(accepted) or 'none'}")
    if hasattr(cls, "check_options"):  # a backend's own option rules (the remote backend needs a server URL)
        cls.check_options(dict(spec.policy_options), **passed)
    if spec.mode not in MODES:
        raise choice_error("mode", spec.mode, MODES)
    if spec.mode not in cls.modes:
        raise UserError(f"policy {spec.policy!r} has no {spec.mode!r} mode; valid: {', '.join(cls.modes)}")
    if spec.max_steps is not None and (not isinstance(spec.max_steps, int) or spec.max_steps < 1):
        raise UserError(f"max_steps {spec.max_steps!r} invalid; valid: a positive integer or null (suite default)")
    if spec.image_size not in sim.image_sizes:
        raise UserError(f"image_size {spec.image_size!r} invalid; valid: {', '.join(map(str, sim.image_sizes))}")
    if spec.mode == "planning":
        if spec.n_candidates < 1:
            raise UserError(f"n_candidates {spec.n_candidates!r} invalid; valid: an integer >= 1")
        check_aggregation(spec.aggregation or "average")
    for p in spec.perturbations:
        fam = validate(p, sim.cameras)
        if not sim.supports(fam):
            raise UserError(f"perturbation {p.name!r} does not support simulator {sim.name} (suite {spec.suite}); "
                            f"valid there: {', '.join(n for n, c in registry().items() if sim.supports(c))}")
        if p.params is not None:
            fam.check_params_on(sim, p.params)


def _decision_rows(key: str, step: int, decision: Decision, measured: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """Rows for decisions.parquet (one per executed decision, -1, and per candidate); none for backends
    that predict nothing (the expert): their prediction metrics are absent, not zero."""
    if decision.predicted_value is None:
        return []
    n = max(1, len(decision.candidates))
    spread = action_spread([c.actions for c in decision.candidates]) if decision.candidates else None
    common = {"episode_key": key, "step": step, "aggregation": decision.aggregation, "n_candidates": n, "action_spread": spread}
    stds = [_ensemble_std(c.ensemble_values) for c in decision.candidates]
    chosen_std = stds[decision.chosen] if decision.chosen is not None and decision.chosen < len(stds) else None
    rows = [{**common, "candidate": -1, "chosen": True, "pred_value": decision.predicted_value, "ensemble_std": chosen_std, **measured.get(-1, {})}]
    for i, c in enumerate(decision.candidates):
        rows.append({**common, "candidate": i, "chosen": i == decision.chosen, "pred_value": c.predicted_value, "ensemble_std": stds[i],
                     **measured.get(i, {})})
    return rows


def _ensemble_std(values) -> float | None:
    """The spread of a candidate's raw value ensemble (futures x values); None without one or with one member."""
    if values is None or np.asarray(values).size < 2:
        return None
    return float(np.std(np.asarray(values, dtype=float)))


def _realised_values(rows: list[dict[str, Any]], chunk_ends: dict[int, int], success_step: int | None, gamma: float) -> None:
    """The value each executed decision really had (Cosmos's meaning, gamma^(steps from the chunk's end to
    success), 0 if the episode failed; gamma is the simulator's): what the predicted value is compared with."""
    for row in rows:
        if row["chosen"]:
            end = chunk_ends[row["step"]]
            row["realised_value"] = 0.0 if success_step is None else float(gamma ** max(0, success_step - end))


def step_limit(spec: ScenarioSpec) -> int:
    """The step budget an episode runs under: the spec's, else its suite's."""
    return spec.max_steps or suite_max_steps(spec.suite)


def crashed_result(spec: ScenarioSpec) -> EpisodeResult:
    """What is stored for an episode whose worker died on it twice (``stress.runners.schedule.dispatch``)."""
    return EpisodeResult(spec=spec, error="worker_crashed", max_steps=step_limit(spec))


def run_episode(spec: ScenarioSpec, envs: EnvCache, policies: PolicyCache, on_decision: DecisionHook | None = None,
                measurement: Measurement | None = None) -> EpisodeResult:
    """Run one episode. Never raises for simulator or policy faults: they land in ``result.error``.

    ``measurement`` adds the counterfactual ground truth (``stress.measurement.groundtruth``) to the decision rows.
    ``on_decision(env, snapshot, decision)`` is called after each policy query with the simulator
    snapshot taken just before it (counterfactual measurements restore it; they must restore the
    env to that snapshot plus nothing else before returning).
    """
    result = EpisodeResult(spec=spec, max_steps=step_limit(spec))
    start = time.perf_counter()
    actions: list[np.ndarray] = []
    decided: list[tuple[int, Decision]] = []  # (step, decision) of every policy query, rows built once measured
    chunk_ends: dict[int, int] = {}
    env, truth, finished = None, None, False
    try:
        env = envs.get(spec)
        policy = policies.get(spec.policy, options=spec.policy_options, simulator=env.simulator)
        max_steps = spec.max_steps or env.max_steps
        env.reset(spec.init_index, spec.perturbations)
        policy = env.applier.wrap_policy(policy)
        policy.reset(env.instruction, spec.seed, mode=spec.mode, n_candidates=spec.n_candidates, aggregation=spec.aggregation)
        hooks = [h for h in (on_decision,) if h]
        if measurement and (measurement.true_futures != "none" or measurement.rollouts):
            truth = GroundTruth(measurement, spec.key, max_steps, lambda: env.applier.wrap_policy(policies.get(spec.policy, "continuation", spec.policy_options, env.simulator)))
            hooks.append(truth)
        tracker = env.failure_tracker()
        while env.step_count < max_steps and not result.success:
            env.begin_chunk()
            result.decision_steps.append(env.step_count)
            snapshot = env.snapshot() if hooks else None
            obs = env.observe(render=policy.uses_images, cameras=getattr(policy, "cameras", None))  # only those it reads
            if truth:
                truth.settle(env)  # the last chunk's true future is this state (its render reused)
            result.error = env.check_pixel_realisation()  # no extra render when obs rendered
            if result.error:
                break
            started = time.perf_counter()
            decision = policy.act(obs)
            result.policy_s += time.perf_counter() - started
            for hook in hooks:
                hook(env, snapshot, decision)
            step = env.step_count
            decided.append((step, decision))
            chunk_ends[step] = step + len(decision.actions)
            executed = 0
            for action in decision.actions:
                actions.append(np.asarray(action, dtype=np.float64))
                result.success = env.step(action)
                executed += 1
                tracker.step(action)
                if result.success or env.step_count >= max_steps:
                    break
            if truth:
                truth.chunk_done(env, executed)
        if truth:
            truth.settle(env)
        finished = True
        result.failure = tracker.signature(result.success)
        result.progress = tracker.progress(result.success)
        result.failure_step = tracker.onset(result.success)
        result.measure_s = truth.seconds if truth else 0.0
        result.frames = truth.frames if truth else {}
    except SimulatorFault as exc:
        result.error = f"simulator_fault: {exc}"
    except InvalidScene as exc:
        result.error = f"invalid_scene: {exc}"
    except NotRealised as exc:
        result.error = f"not_realised: {exc}"
    except PolicyFault as exc:  # e.g. a policy server gone or a malformed reply: an error, not a task failure
        result.error = f"{exc.kind}: {exc}"
    except Exception as exc:  # a crash of one episode must not lose the run
        result.error = f"{type(exc).__name__}: {exc}"
        result.error += " | " + traceback.format_exc(limit=3).replace("\n", " ")[-400:]
        envs.drop(spec)  # the env may be in an unknown state
    for step, decision in decided:
        result.decisions += _decision_rows(spec.key, step, decision, truth.by_step.get(step, {}) if truth else {})
    if finished:
        _realised_values(result.decisions, chunk_ends, env.step_count if result.success else None, simulator_of(spec.suite).value_discount)
    if env is not None:
        result.perturbations = [p.record() for p in env.perturbations]
        result.steps = env.step_count
    result.success = bool(result.success) and result.error is None
    result.actions = np.array(actions).reshape(len(actions), -1) if actions else np.zeros((0, env.action_dim if env else 7))
    result.wall_s = time.perf_counter() - start
    return result


class EpisodeWorker:
    """A runner's worker (``stress.runners.pool``): its env and policy caches, kept between episodes.

    ``own_process``: the worker is a process of its own (a pool process, a Ray actor): torch is limited to one
    thread, the pool already running one worker per core, and the test crash hook is armed (``crash_hook``)."""

    def __init__(self, env_cache: int = 1, own_process: bool = False):
        if own_process:
            import torch  # heavy, and only the processes of a pool set its threads

            torch.set_num_threads(1)
        self.own_process = own_process
        self.envs, self.policies = EnvCache(env_cache), PolicyCache()

    def run(self, spec_json: str, measurement: Measurement | None) -> EpisodeResult:
        spec = ScenarioSpec.from_json(spec_json)
        if self.own_process:
            crash_hook(spec.key)
        return run_episode(spec, self.envs, self.policies, measurement=measurement)

    def close(self) -> None:
        self.envs.close()


CRASH_ENV = "STRESS_TEST_CRASH_DIR"  # tests: a file <dir>/<episode key> holding n > 0 makes the worker exit n times on it


def crash_hook(key: str) -> None:
    """Tests only: exit this worker process abruptly (as a simulator segfault would) when ``$STRESS_TEST_CRASH_DIR/<key>``
    holds a count > 0, counting it down. Unset (always, outside tests), it costs one environment lookup."""
    folder = os.environ.get(CRASH_ENV)
    if not folder:
        return
    path = os.path.join(folder, key)
    try:
        with open(path) as f:
            left = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return
    if left > 0:
        with open(path, "w") as f:
            f.write(str(left - 1))
        os._exit(1)
