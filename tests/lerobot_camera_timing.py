"""The render saving of a LeRobot ALOHA policy that reads only ``top``: one episode's wall time with the cameras its
server declares, and with every camera rendered (the policy's ``cameras`` forced to None), alternately, after a
warm-up (the server started, the scene built). Needs LeRobot's environment:

    STRESS_LEROBOT_PYTHON=/path/to/python python tests/lerobot_camera_timing.py [STEPS [REPEATS]]

The policy is the tests' small ACT (tests/lerobot_policies.py, written to a temporary folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stress.core.spec import ScenarioSpec
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.policies.lerobot_client import PYTHON_ENV, LerobotPolicy, check_policy, stop_servers
from stress.runners.episode import run_episode


def main(steps: int = 20, repeats: int = 2) -> None:
    python = os.environ[PYTHON_ENV]
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([python, str(Path(__file__).with_name("lerobot_policies.py")), folder], check=True, capture_output=True)
        path = str(Path(folder) / "act")
        spec = ScenarioSpec(suite="aloha", task_id=0, init_index=0, policy="lerobot", mode="direct", seed=0, max_steps=steps, image_size=480,
                            policy_options=(("policy_path", path), ("python", python), ("served", check_policy(path, "aloha")), ("simulator", "aloha")))
        envs, policies, declared = EnvCache(), PolicyCache(), LerobotPolicy.cameras
        try:
            run_episode(spec, envs, policies)  # warm-up
            for _ in range(repeats):
                for label, cameras in (("declared (top)", declared), ("all three", property(lambda self: None))):
                    LerobotPolicy.cameras = cameras
                    start = time.perf_counter()
                    result = run_episode(spec, envs, policies)
                    wall = time.perf_counter() - start
                    print(f"{label}: {wall:.1f} s for {result.steps} steps ({wall / result.steps * 1000:.0f} ms/step; policy {result.policy_s:.1f} s)"
                          + (f" error {result.error}" if result.error else ""), flush=True)
        finally:
            LerobotPolicy.cameras = declared
            envs.close()
            stop_servers()


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
