"""``stress bench``: render-on-demand speed-up, runner overhead, snapshot cost and peak memory.

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
- peak resident memory of this one-env process.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

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


def _family_costs(env, init: int, steps: int, episode_s: float) -> dict:
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


def _ground_truth_costs(suite: str, task: int, init: int, envs, policies) -> dict:
    spec = ScenarioSpec(suite=suite, task_id=task, init_index=init, policy="reference", mode="planning", n_candidates=8,
                        aggregation="average", max_steps=64)
    run_episode(spec, envs, policies)  # warm-up: env build, model load
    timed = {}
    for name, measurement in (("plain", None), ("executed", Measurement("executed")), ("all", Measurement("all")),
                              ("rollout", Measurement("executed", rollouts=1))):
        result = run_episode(spec, envs, policies, measurement=measurement)
        timed[name] = (result.wall_s, len(result.decision_steps))
    decisions = timed["plain"][1]
    return {"plain_s": timed["plain"][0], "executed_future_s": timed["executed"][0], "all_futures_s": timed["all"][0],
            "rollout_s": timed["rollout"][0], "decisions": decisions,
            "true_future_ms_per_candidate": 1000 * (timed["all"][0] - timed["plain"][0]) / (decisions * 8)}


def run_bench(suite: str, task: int, init: int, repeats: int, out: Path) -> dict:
    console = Console(stderr=True)
    envs, policies = EnvCache(), PolicyCache()
    clean = ScenarioSpec(suite=suite, task_id=task, init_index=init)
    console.print("recording the expert episode ...")
    recorded = run_episode(clean, envs, policies)
    env, actions = envs.get(clean), recorded.actions
    steps = len(actions)

    def replay(render_every_step: bool) -> None:
        env.reset(init)
        for i, action in enumerate(actions):
            if render_every_step or i % CHUNK == 0:
                env.observe(render=True)
            env.step(action)

    policy = policies.get("expert")

    def bare_loop() -> None:
        env.reset(init)
        policy.reset(env.instruction, 0)
        done = False
        while env.step_count < env.max_steps and not done:
            for action in policy.act(env.observe(render=False)).actions:
                done = env.step(action)
                if done or env.step_count >= env.max_steps:
                    break

    perturbed = ScenarioSpec(suite=suite, task_id=task, init_index=init, perturbations=(PerturbationSpec("occlusion", 3, seed=0),))

    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore.create(Path(tmp), "bench", [clean, perturbed], {})

        def runner_loop(spec: ScenarioSpec) -> None:
            result = run_episode(spec, envs, policies)
            store.write_episode(result.row(), result.actions, result.decisions, result.decision_steps)

        console.print(f"timing ({repeats} repeats each, best kept) ...")
        on_demand = min(_timed(lambda: replay(False)) for _ in range(repeats))
        every_step = min(_timed(lambda: replay(True)) for _ in range(repeats))
        bare = min(_timed(bare_loop) for _ in range(repeats))
        runner = min(_timed(lambda: runner_loop(clean)) for _ in range(repeats))
        runner_occluded = min(_timed(lambda: runner_loop(perturbed)) for _ in range(repeats))

    ground_truth = _ground_truth_costs(suite, task, init, envs, policies)
    family_costs = _family_costs(env, init, steps, on_demand)
    env.reset(init)
    snapshot_times = []
    for _ in range(50):
        start = time.perf_counter()
        snap = env.snapshot()
        env.restore(snap)
        snapshot_times.append(time.perf_counter() - start)
    envs.close()

    figures = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "scene": {"suite": suite, "task": task, "init": init, "steps": steps, "expert_success": recorded.success},
        "render_on_demand_steps_per_s": steps / on_demand,
        "render_every_step_steps_per_s": steps / every_step,
        "render_on_demand_speedup": every_step / on_demand,
        "bare_loop_s": bare,
        "runner_s": runner,
        "runner_overhead_pct": 100 * (runner - bare) / bare,
        "runner_occlusion_s": runner_occluded,
        "runner_occlusion_overhead_pct": 100 * (runner_occluded - bare) / bare,
        "snapshot_restore_ms": 1000 * float(np.median(snapshot_times)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "families": family_costs,
        "ground_truth": ground_truth,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(figures, indent=2))

    table = Table(title=f"stress bench: {suite} task {task} init {init}, {steps} steps")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("env steps/s, render on demand (both cameras once per 16-step chunk)", f"{figures['render_on_demand_steps_per_s']:.1f}")
    table.add_row("env steps/s, both cameras rendered every step", f"{figures['render_every_step_steps_per_s']:.1f}")
    table.add_row("speed-up of render on demand", f"{figures['render_on_demand_speedup']:.1f}x")
    table.add_row("bare loop, one episode (s)", f"{bare:.2f}")
    table.add_row("runner: hooks, recording, store (s)", f"{runner:.2f}")
    table.add_row("runner overhead", f"{figures['runner_overhead_pct']:.1f} %")
    table.add_row("runner + occlusion + its realisation render (s)", f"{runner_occluded:.2f}")
    table.add_row("overhead with occlusion (the expert renders nothing else)", f"{figures['runner_occlusion_overhead_pct']:.1f} %")
    table.add_row("snapshot + restore (ms)", f"{figures['snapshot_restore_ms']:.2f}")
    table.add_row("peak memory, one env process (MB)", f"{figures['peak_rss_mb']:.0f}")
    gt = ground_truth
    table.add_row("planning episode (best-of-8, 64 steps), no ground truth (s)", f"{gt['plain_s']:.2f}")
    table.add_row("  + true future of the executed chunk (s)", f"{gt['executed_future_s']:.2f}")
    table.add_row("  + true future of every candidate (s)", f"{gt['all_futures_s']:.2f} (+{gt['true_future_ms_per_candidate']:.0f} ms per candidate)")
    table.add_row("  + every candidate of 1 decision rolled out to the end (s)", f"{gt['rollout_s']:.2f}")
    for name, cost in family_costs.items():
        table.add_row(f"{name}: applying it, per episode ({cost['layer']})", f"{cost['apply_ms_per_episode']:.1f} ms = {cost['percent_of_episode']:.2f} %")
        table.add_row(f"{name}: realisation check + reset, per episode", f"{cost['reset_and_check_ms']:.0f} ms")
    Console().print(table)
    print(f"figures: {path}")
    return figures
