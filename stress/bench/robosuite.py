"""Figures of the robosuite suite (docs/robosuite.md): the expert's success table and the adapter's speed.

``python -m stress.bench.robosuite [N_INIT]`` prints both as JSON.
"""

from __future__ import annotations

import time

import numpy as np

from stress.core.spec import ScenarioSpec
from stress.envs.robosuite_tasks import TASKS, RobosuiteEnv
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.runners.episode import run_episode


def expert_table(n_init: int = 50, tasks=range(len(TASKS)), max_steps: int = 600) -> dict:
    """Per task: the expert's successes over init states 0..n_init-1 through the runner (no render), the steps of the
    successful episodes, steps/s. ``max_steps`` is above the suite's limit so the table shows how long it needs."""
    envs, policies, out = EnvCache(), PolicyCache(), {}
    try:
        for task in tasks:
            steps, successes, start, total = [], 0, time.perf_counter(), 0
            for init in range(n_init):
                result = run_episode(ScenarioSpec("robosuite", task, init, policy="expert", max_steps=max_steps), envs, policies)
                assert result.error is None, result.error
                successes += bool(result.success)
                total += result.steps
                if result.success:
                    steps.append(result.steps)
            out[TASKS[task]] = {"success": f"{successes}/{n_init}", "steps_mean": round(float(np.mean(steps)), 1) if steps else None,
                                "steps_min": min(steps, default=None), "steps_max": max(steps, default=None),
                                "steps_per_s": round(total / (time.perf_counter() - start), 1)}
    finally:
        envs.close()
    return out


def speed(task: int, image_size: int = 128, steps: int = 200) -> dict:
    """Build, reset, no-render steps/s, one ``observe()`` of both cameras, one snapshot restore."""
    start = time.perf_counter()
    env = RobosuiteEnv("robosuite", task, image_size=image_size)
    build = time.perf_counter() - start
    try:
        start = time.perf_counter()
        env.reset(0)
        reset = time.perf_counter() - start
        start = time.perf_counter()
        for k in range(steps):  # back and forth along x, gripper open
            env.step(np.array([0.3 * np.sign(np.sin(k / 20 + 0.1)), 0, 0, 0, 0, 0, -1.0]))
        steps_per_s = steps / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(10):
            env.observe(render=True)
        observe = (time.perf_counter() - start) / 10
        snap = env.snapshot()
        start = time.perf_counter()
        for _ in range(100):
            env.restore(snap)
        restore = (time.perf_counter() - start) / 100
    finally:
        env.close()
    return {"build_s": round(build, 2), "reset_s": round(reset, 3), "steps_per_s_no_render": round(steps_per_s, 1),
            "observe_2_cameras_ms": round(observe * 1000, 1), "restore_ms": round(restore * 1000, 3)}


if __name__ == "__main__":
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    print(json.dumps({"speed": {TASKS[t]: speed(t) for t in range(len(TASKS))}, "expert": expert_table(n)}, indent=1))
