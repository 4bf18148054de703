"""LIBERO's benchmarks (``stress bench --only render,overhead,snapshot,groundtruth,families``; stress.bench.named).

All loops replay the same expert episode on the same scene so only the measured thing differs:

- render-on-demand: both cameras rendered once per 16-step chunk (one policy query), vs the usual
  eval-loop habit of rendering both cameras after every step;
- runner overhead: ``run_episode`` (hooks, recording) and storing the episode (Parquet + actions), vs a
  bare reset/act/step loop with the same policy; again with a pixel perturbation, whose realisation check
  renders both cameras once (a policy that uses images pays nothing extra: its first observation is reused);
- snapshot + restore of the simulator at a decision point;
- the cost of counterfactual ground truth: a best-of-8 planning episode of the reference model (64 steps,
  4 decisions) without measurements, with the executed chunk's true future, with every candidate's, and
  with every candidate of one decision also rolled out to the end;
- peak resident memory of this one-env process;
- the cost of applying each model/pixels family per episode.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from perturbations.base import parameters_for, registry
from stress.core.spec import Layer, PerturbationSpec, ScenarioSpec
from stress.measurement.groundtruth import Measurement
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.runners.episode import run_episode
from stress.store import RunStore

CHUNK = 16  # actions per policy query, as Cosmos Policy executes on LIBERO


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def family_costs(env, init: int, steps: int, episode_s: float) -> dict:
    """Cost of applying each model/pixels family over one episode, vs the render-on-demand episode time.

    Model edits are applied once per reset; pixel edits once per camera image handed to the policy
    (two cameras per 16-step chunk). The realisation check (renders) is reported separately.
    """
    decisions = -(-steps // CHUNK)
    costs = {}
    for name, cls in registry().items():
        if cls.layer not in (Layer.MODEL, Layer.PIXELS):
            continue
        spec = PerturbationSpec(name, 3, seed=0)
        start = time.perf_counter()
        env.reset(init, (spec,))
        reset_s = time.perf_counter() - start
        realised = env.perturbations[0]
        if cls.layer is Layer.MODEL:
            with env.applier.clean_model():
                apply_s = min(_timed(lambda: realised.family.apply_model(env, parameters_for(spec))) for _ in range(3))
        else:
            image = env.render("agentview")
            per_image = min(_timed(lambda: realised.family.apply_pixels(image, "agentview", realised.params)) for _ in range(5))
            apply_s = per_image * 2 * decisions
        costs[name] = {
            "layer": cls.layer.value,
            "apply_ms_per_episode": 1000 * apply_s,
            "percent_of_episode": 100 * apply_s / episode_s,
            "reset_and_check_ms": 1000 * reset_s,
        }
    return costs


def ground_truth_repeats(suite: str, task: int, init: int, repeats: int) -> dict:
    """A best-of-8 planning episode of the reference model (64 steps) without and with each measurement, ``repeats``
    times in turn: seconds per repeat for each, and the decisions per episode."""
    envs, policies = EnvCache(), PolicyCache()
    spec = ScenarioSpec(suite=suite, task_id=task, init_index=init, policy="reference", mode="planning", n_candidates=8,
                        aggregation="average", max_steps=64)
    try:
        run_episode(spec, envs, policies)  # warm-up: env build, model load
        raw: dict = {"plain_s": [], "executed_s": [], "all_s": [], "rollout_s": []}
        for _ in range(repeats):
            for name, measurement in (("plain_s", None), ("executed_s", Measurement("executed")), ("all_s", Measurement("all")),
                                      ("rollout_s", Measurement("executed", rollouts=1))):
                result = run_episode(spec, envs, policies, measurement=measurement)
                raw[name].append(result.wall_s)
                raw["decisions"] = len(result.decision_steps)
    finally:
        envs.close()
    return raw


class Scene:
    """One LIBERO scene and the expert's recorded episode on it: the loops the benchmarks time (each returns seconds)."""

    def __init__(self, suite: str, task: int, init: int):
        self.init, self.envs, self.policies = init, EnvCache(), PolicyCache()
        self.clean = ScenarioSpec(suite=suite, task_id=task, init_index=init)
        self.perturbed = ScenarioSpec(suite=suite, task_id=task, init_index=init, perturbations=(PerturbationSpec("occlusion", 3, seed=0),))
        recorded = run_episode(self.clean, self.envs, self.policies)
        self.env, self.actions, self.steps = self.envs.get(self.clean), recorded.actions, len(recorded.actions)
        self._tmp = tempfile.TemporaryDirectory()
        self.store = RunStore.create(Path(self._tmp.name), "bench", [self.clean, self.perturbed], {})

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.envs.close()
        self._tmp.cleanup()

    def _replay(self, render_every_step: bool) -> float:
        env, start = self.env, time.perf_counter()
        env.reset(self.init)
        for i, action in enumerate(self.actions):
            if render_every_step or i % CHUNK == 0:
                env.observe(render=True)
            env.step(action)
        return time.perf_counter() - start

    def replay_on_demand(self) -> float:
        return self._replay(False)

    def replay_every_step(self) -> float:
        return self._replay(True)

    def bare_loop(self) -> float:
        env, policy, start = self.env, self.policies.get("expert"), time.perf_counter()
        env.reset(self.init)
        policy.reset(env.instruction, 0)
        done = False
        while env.step_count < env.max_steps and not done:
            for action in policy.act(env.observe(render=False)).actions:
                done = env.step(action)
                if done or env.step_count >= env.max_steps:
                    break
        return time.perf_counter() - start

    def _runner(self, spec: ScenarioSpec) -> float:
        start = time.perf_counter()
        result = run_episode(spec, self.envs, self.policies)
        self.store.write_episode(result.row(), result.actions, result.decisions, result.decision_steps)
        return time.perf_counter() - start

    def runner_clean(self) -> float:
        return self._runner(self.clean)

    def runner_occluded(self) -> float:
        return self._runner(self.perturbed)

    def snapshot_restore_ms(self, n: int) -> list[float]:
        self.env.reset(self.init)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            self.env.restore(self.env.snapshot())
            times.append(1000 * (time.perf_counter() - start))
        return times
