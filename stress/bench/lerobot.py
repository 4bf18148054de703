"""The suite's loop around a LeRobot policy against LeRobot's own evaluation loop (``stress bench --only lerobot``):
the same small ACT (tests/lerobot_policies.py), gym-aloha's transfer_cube, seed 0, the same step count. LeRobot's
side is ``lerobot_eval.rollout`` on its own gym_aloha env in LeRobot's environment (tests/lerobot_rollout.py, the
parity test's loop); the suite's is ``run_episode`` with ``--policy lerobot`` (the policy served from LeRobot's
environment over stress-policy/1, the suite's ALOHA adapter rendering the declared ``top`` camera). Both after a
warm-up (LeRobot's first rollout; the suite's first episode, which starts the server and builds the scene), then
``repeats`` timed episodes each. Runs only where ``STRESS_LEROBOT_PYTHON`` names LeRobot's Python; elsewhere the
entry says it was skipped."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from stress.core.spec import ScenarioSpec
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.policies.lerobot_client import PYTHON_ENV, check_policy, stop_servers
from stress.runners.episode import run_episode

TESTS = Path(__file__).resolve().parents[2] / "tests"


def loop_overhead(steps: int = 50, repeats: int = 3) -> dict:
    python = os.environ.get(PYTHON_ENV)
    if not python:
        return {"skipped": f"${PYTHON_ENV} not set (LeRobot's Python; docs/remote-policy.md, LeRobot)"}
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([python, str(TESTS / "lerobot_policies.py"), folder], check=True, capture_output=True, timeout=900)
        path = str(Path(folder) / "act")
        proc = subprocess.run([python, str(TESTS / "lerobot_rollout.py"), path, "0", str(steps), str(repeats)], capture_output=True, text=True,
                              timeout=3600, stdin=subprocess.DEVNULL, check=True)
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
        spec = ScenarioSpec(suite="aloha", task_id=0, init_index=0, policy="lerobot", mode="direct", seed=0, max_steps=steps, image_size=480,
                            policy_options=(("policy_path", path), ("python", python), ("served", check_policy(path, "aloha")), ("simulator", "aloha")))
        envs, policies, ours, policy_s = EnvCache(), PolicyCache(), [], []
        try:
            run_episode(spec, envs, policies)  # warm-up: the server, the scene
            for _ in range(repeats):
                started = time.perf_counter()
                result = run_episode(spec, envs, policies)
                ours.append(time.perf_counter() - started)
                policy_s.append(result.policy_s)
                if result.error or result.steps != steps:
                    raise RuntimeError(f"the suite's episode ended with {result.error or f'{result.steps} steps'}")
        finally:
            envs.close()
            stop_servers()
    suite_s, lerobot_s = float(np.median(ours)), float(np.median(theirs))
    return {"steps": steps, "lerobot_rollout_s": theirs, "suite_episode_s": ours, "suite_policy_s": policy_s, "lerobot_median_s": lerobot_s,
            "suite_median_s": suite_s, "overhead": suite_s / lerobot_s - 1}
