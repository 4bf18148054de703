"""The runner: ScenarioSpec -> one episode -> EpisodeResult, and a run of many specs into the store.

Episode loop (per decision): mark the chunk start, snapshot the simulator when a measurement hook asks
for it, observe (rendering the cameras only if the policy uses images), ask the policy, execute the
whole action chunk open-loop, stop on success or the step budget. A simulator fault or an exception marks the episode with an ``error`` and the run goes on.

Many specs run through a backend (``make_runner``): ``LocalRunner`` here, ``ray_backend.RayRunner`` on Ray; both hand
episodes out by scene (``stress.runners.schedule``) and write every result from the driver.
"""

from __future__ import annotations

import inspect
import json
import time
import traceback
from collections import OrderedDict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any, Callable

import numpy as np

from perturbations.base import InvalidScene, NotRealised, registry, validate
from stress.core.episode import EpisodeResult
from stress.core.spec import MODES, ScenarioSpec
from stress.envs import check_init, make_env, max_steps as suite_max_steps, simulator_of
from stress.envs.base import SimEnv, SimulatorFault, scene_key
from stress.core.errors import UserError, choice_error
from stress.core.registry import Registry
from stress.policies import policy_class
from stress.core.policy import Decision, PolicyFault
from stress.measurement.groundtruth import GroundTruth, Measurement
from stress.core.metrics import action_spread
from stress.policies.planning import check_aggregation
from stress.runners.schedule import SceneScheduler, WorkerCrashed, crash_hook, dispatch

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
        raise UserError(f"policy {spec.policy!r} does not drive {sim.name} (suite {spec.suite}); it drives: {', '.join(cls.simulators)}")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for option, _ in spec.policy_options:
        if option not in accepted:
            raise UserError(f"policy option {option!r} unknown for policy {spec.policy!r}; valid: {', '.join(accepted) or 'none'}")
    if hasattr(cls, "check_options"):  # a backend's own option rules (the remote backend needs a server URL)
        cls.check_options(dict(spec.policy_options))
    if spec.mode not in MODES:
        raise choice_error("mode", spec.mode, MODES)
    if spec.mode not in cls.modes:
        raise UserError(f"policy {spec.policy!r} has no {spec.mode!r} mode; valid: {', '.join(cls.modes)}")
    if spec.max_steps is not None and (not isinstance(spec.max_steps, int) or spec.max_steps < 1):
        raise UserError(f"max_steps {spec.max_steps!r} invalid; valid: a positive integer or null (suite default)")
    if spec.image_size not in (64, 128, 224, 256):
        raise UserError(f"image_size {spec.image_size!r} invalid; valid: 64, 128, 224, 256")
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


class EnvCache:
    """Keeps the most recent env(s) of a worker: building one costs seconds, resetting it milliseconds."""

    def __init__(self, size: int = 1):
        self.size, self._envs = size, OrderedDict()

    def get(self, spec: ScenarioSpec) -> SimEnv:
        key = (spec.suite, spec.task_id, spec.image_size, scene_key(spec.perturbations))
        if key in self._envs:
            self._envs.move_to_end(key)
            return self._envs[key]
        while len(self._envs) >= self.size:
            self._envs.popitem(last=False)[1].close()
        env = make_env(spec.suite, spec.task_id, spec.image_size, spec.perturbations)
        self._envs[key] = env
        return env

    def close(self) -> None:
        # free the render contexts before the interpreter tears EGL down (avoids noisy __del__ errors)
        while self._envs:
            self._envs.popitem()[1].close()

    def drop(self, spec: ScenarioSpec) -> None:
        for key in [k for k in self._envs if k[:2] == (spec.suite, spec.task_id)]:
            self._envs.pop(key).close()


class PolicyCache:
    def __init__(self):
        self._policies = {}

    def get(self, name: str, slot: str = "episode", options: tuple = ()):
        """One instance per backend, slot and constructor options: the ground truth's continuations get
        their own slot ("continuation"), so they never touch the episode's policy state."""
        key = (name, slot, options)
        if key not in self._policies:
            self._policies[key] = policy_class(name)(**dict(options))
        return self._policies[key]


def _decision_rows(key: str, step: int, decision: Decision, measured: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """Rows for decisions.parquet (one per executed decision, -1, and per candidate); none for backends
    that predict nothing (the expert): their prediction metrics are absent, not zero."""
    if decision.predicted_value is None:
        return []
    n = max(1, len(decision.candidates))
    spread = action_spread([c.actions for c in decision.candidates]) if decision.candidates else None
    common = {"episode_key": key, "step": step, "aggregation": decision.aggregation, "n_candidates": n, "action_spread": spread}
    rows = [{**common, "candidate": -1, "chosen": True, "pred_value": decision.predicted_value, **measured.get(-1, {})}]
    for i, c in enumerate(decision.candidates):
        rows.append({**common, "candidate": i, "chosen": i == decision.chosen, "pred_value": c.predicted_value, **measured.get(i, {})})
    return rows


def _realised_values(rows: list[dict[str, Any]], chunk_ends: dict[int, int], success_step: int | None, gamma: float) -> None:
    """The value each executed decision really had (Cosmos's meaning, gamma^(steps from the chunk's end to
    success), 0 if the episode failed; gamma is the simulator's): what the predicted value is compared with."""
    for row in rows:
        if row["chosen"]:
            end = chunk_ends[row["step"]]
            row["realised_value"] = 0.0 if success_step is None else float(gamma ** max(0, success_step - end))


def run_episode(spec: ScenarioSpec, envs: EnvCache, policies: PolicyCache, on_decision: DecisionHook | None = None,
                measurement: Measurement | None = None) -> EpisodeResult:
    """Run one episode. Never raises for simulator or policy faults: they land in ``result.error``.

    ``measurement`` adds the counterfactual ground truth (``stress.measurement.groundtruth``) to the decision rows.
    ``on_decision(env, snapshot, decision)`` is called after each policy query with the simulator
    snapshot taken just before it (counterfactual measurements restore it; they must restore the
    env to that snapshot plus nothing else before returning).
    """
    result = EpisodeResult(spec=spec, max_steps=spec.max_steps or suite_max_steps(spec.suite))
    start = time.perf_counter()
    actions: list[np.ndarray] = []
    env = None
    try:
        env = envs.get(spec)
        policy = policies.get(spec.policy, options=spec.policy_options)
        max_steps = spec.max_steps or env.max_steps
        env.reset(spec.init_index, spec.perturbations)
        policy = env.applier.wrap_policy(policy)
        policy.reset(env.instruction, spec.seed, mode=spec.mode, n_candidates=spec.n_candidates, aggregation=spec.aggregation)
        hooks = [h for h in (on_decision,) if h]
        truth = None
        if measurement and (measurement.true_futures != "none" or measurement.rollouts):
            truth = GroundTruth(measurement, spec.key, max_steps, lambda: env.applier.wrap_policy(policies.get(spec.policy, "continuation", spec.policy_options)))
            hooks.append(truth)
        chunk_ends: dict[int, int] = {}
        tracker = env.failure_tracker()
        while env.step_count < max_steps and not result.success:
            env.begin_chunk()
            result.decision_steps.append(env.step_count)
            snapshot = env.snapshot() if hooks else None
            obs = env.observe(render=policy.uses_images)
            result.error = env.check_pixel_realisation()  # no extra render when obs rendered
            if result.error:
                break
            started = time.perf_counter()
            decision = policy.act(obs)
            result.policy_s += time.perf_counter() - started
            for hook in hooks:
                hook(env, snapshot, decision)
            step = env.step_count
            result.decisions += _decision_rows(spec.key, step, decision, truth.by_step.get(step, {}) if truth else {})
            chunk_ends[step] = step + len(decision.actions)
            for action in decision.actions:
                actions.append(np.asarray(action, dtype=np.float64))
                result.success = env.step(action)
                tracker.step(action)
                if result.success or env.step_count >= max_steps:
                    break
        _realised_values(result.decisions, chunk_ends, env.step_count if result.success else None, simulator_of(spec.suite).value_discount)
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
    if env is not None:
        result.perturbations = [p.record() for p in env.perturbations]
        result.steps = env.step_count
    result.success = bool(result.success) and result.error is None
    result.actions = np.array(actions).reshape(len(actions), -1) if actions else np.zeros((0, env.action_dim if env else 7))
    result.wall_s = time.perf_counter() - start
    return result


# --- running many specs ------------------------------------------------------------------------------
_worker_state: dict[str, Any] = {}


def _worker_init(env_cache: int = 1) -> None:
    import torch

    torch.set_num_threads(1)  # the pool already runs one worker per core: threads inside would oversubscribe
    _worker_state.update(envs=EnvCache(env_cache), policies=PolicyCache())


def _worker_run(spec_json: str, measurement: Measurement | None) -> EpisodeResult:
    """One episode in a worker process (a local pool process or a Ray actor), on the worker's cached env and policy."""
    if not _worker_state:
        _worker_init()
    spec = ScenarioSpec.from_json(spec_json)
    crash_hook(spec.key)
    return run_episode(spec, _worker_state["envs"], _worker_state["policies"], measurement=measurement)


def run_specs(specs: list[ScenarioSpec], store, workers: int = 1, on_result: Callable[[EpisodeResult], None] | None = None,
              measurement: Measurement | None = Measurement(), backend: str = "local", ray_address: str | None = None) -> None:
    """Run specs not yet in ``store`` and write each finished episode at once (so a crash loses nothing).
    ``measurement``: the ground truth measured at each decision (default: true futures, no rollouts)."""
    with make_runner(backend, workers, ray_address=ray_address) as runner:
        runner.run(specs, store, on_result, measurement)


def make_runner(backend: str = "local", workers: int = 1, env_cache: int = 1, ray_address: str | None = None, gpus: float = 0.0):
    """The runner of a backend (``BACKENDS``): ``local`` (this process, or a spawn process pool) or ``ray`` (actors on
    a local or joined Ray cluster, ``stress.runners.ray_backend``). Every runner has the same interface: context
    manager, ``run(specs, store, on_result, measurement)``, ``close()``."""
    return BACKENDS.get(backend)(workers, env_cache, address=ray_address, gpus=gpus)


def pending_specs(specs: list[ScenarioSpec], store) -> list[ScenarioSpec]:
    """The specs not yet stored, each key once."""
    done = store.done_keys()
    return list({s.key: s for s in specs if s.key not in done}.values())


def store_result(store, on_result: Callable[[EpisodeResult], None] | None):
    """The driver's write of a finished episode (the only writer of the store), then the caller's callback."""
    def finish(result: EpisodeResult) -> None:
        store.write_episode(result.row(), result.actions, result.decisions, result.decision_steps, frames=result.frames)
        if on_result:
            on_result(result)

    return finish


class LocalRunner:
    """Runs specs in this process (``workers`` 1) or in ``workers`` spawn processes, keeping simulators, policies and
    worker processes alive between calls: a search runs many small batches, and rebuilding a scene costs ~9 s.
    ``env_cache`` envs are kept per process (a search alternates between a few scenes). Episodes are handed out
    scene by scene (``stress.runners.schedule``): a process stays on the scenes it has built."""

    def __init__(self, workers: int = 1, env_cache: int = 1):
        self.workers, self.env_cache = workers, env_cache
        self._envs = self._policies = None
        self._pools: list[ProcessPoolExecutor | None] = [None] * workers
        self.scheduler = SceneScheduler(max(1, workers), env_cache)

    def __enter__(self) -> "LocalRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._envs is not None:
            self._envs.close()
            self._envs = None
        for i, pool in enumerate(self._pools):
            if pool is not None:
                pool.shutdown(cancel_futures=True)
                self._pools[i] = None

    def run(self, specs: list[ScenarioSpec], store, on_result: Callable[[EpisodeResult], None] | None = None,
            measurement: Measurement | None = Measurement()) -> None:
        self.scheduler.add(pending_specs(specs, store))
        finish = store_result(store, on_result)
        if self.workers <= 1:
            if self._envs is None:
                self._envs, self._policies = EnvCache(self.env_cache), PolicyCache()
            while (spec := self.scheduler.take(0, force=True)) is not None:
                result = run_episode(spec, self._envs, self._policies, measurement=measurement)
                self.scheduler.finished(0, spec, result.wall_s)
                finish(result)
            return
        dispatch(self.scheduler, lambda w, spec: self._pool(w).submit(_worker_run, spec.to_json(), measurement), _wait_one,
                 _collect, self._restart, finish, lambda spec: EpisodeResult(spec=spec, error="worker_crashed"))

    def _pool(self, worker: int) -> ProcessPoolExecutor:
        """Worker ``worker``'s process: a one-process pool each, so an episode goes to the process holding its scene."""
        if self._pools[worker] is None:
            self._pools[worker] = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=_worker_init,
                                                      initargs=(self.env_cache,))
        return self._pools[worker]

    def _restart(self, worker: int) -> None:
        # the process died (e.g. a segfault in the simulator) and broke its pool: a fresh one on the next submit
        self._pools[worker].shutdown(cancel_futures=True)
        self._pools[worker] = None


def _local_runner(workers: int, env_cache: int, address: str | None = None, gpus: float = 0.0) -> LocalRunner:
    """The local backend (``address`` and ``gpus`` are a cluster's: Ray's)."""
    return LocalRunner(workers, env_cache)


# runner backends: a factory (workers, env_cache, address=None, gpus=0.0) -> runner each; Ray's module is imported
# only when asked for (ray is an optional dependency); plug-ins add theirs through the "stress.backends" entry points
BACKENDS = Registry("backend", "stress.backends")
BACKENDS.register("local", _local_runner)
BACKENDS.register("ray", "stress.runners.ray_backend:RayRunner")


def _wait_one(futures):
    return next(iter(wait(futures, return_when=FIRST_COMPLETED)[0]))


def _collect(future) -> EpisodeResult:
    try:
        return future.result()
    except BrokenProcessPool:
        raise WorkerCrashed() from None
