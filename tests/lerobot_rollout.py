"""LeRobot's own evaluation loop on its own gym_aloha env: ``lerobot_eval.rollout`` with the env, policy and processors
built by LeRobot's factories, as ``lerobot-eval`` builds them. Run with LeRobot's Python:

    LEROBOT_PYTHON tests/lerobot_rollout.py POLICY_DIR SEED STEPS [REPEATS]

Prints one JSON line: the executed actions (float32 as lists) and the sha256 of the top camera's uint8 image the
policy saw at each step (recovered exactly from LeRobot's float image, uint8 / 255). The parity test compares them
with the suite's episode of the same policy, init state and seed (tests/test_lerobot.py). With REPEATS, the rollout
then runs REPEATS more times (no observations kept) and ``seconds`` holds each one's wall time: LeRobot's own loop
for ``stress bench --only lerobot``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from lerobot.configs.policies import PreTrainedConfig  # noqa: E402
from lerobot.envs.configs import AlohaEnv  # noqa: E402
from lerobot.envs.factory import make_env, make_env_pre_post_processors  # noqa: E402
from lerobot.policies.factory import make_policy, make_pre_post_processors  # noqa: E402
from lerobot.scripts.lerobot_eval import rollout  # noqa: E402


def main(path: str, seed: int, steps: int, repeats: int = 0) -> None:
    env_cfg = AlohaEnv(task="AlohaTransferCube-v0", episode_length=steps)
    env = next(iter(next(iter(make_env(env_cfg, n_envs=1).values())).values()))
    # the one deliberate difference: the suite's simulators execute float64 actions (SimEnv.step widens the float32
    # values LeRobot returns), and gym-aloha's gripper mapping computed in float32 differs in the last bits; the
    # policy's float32 actions are recorded as they come
    step = env.step
    env.step = lambda action: step(np.asarray(action, dtype=np.float64))
    cfg = PreTrainedConfig.from_pretrained(path)
    cfg.pretrained_path, cfg.device = path, "cpu"
    policy = make_policy(cfg, env_cfg=env_cfg)
    policy.eval()
    preprocessor, postprocessor = make_pre_post_processors(cfg, pretrained_path=path, preprocessor_overrides={"device_processor": {"device": "cpu"}})
    env_preprocessor, env_postprocessor = make_env_pre_post_processors(env_cfg, cfg)
    torch.manual_seed(seed)  # the suite's server seeds torch with the episode's seed at reset
    ret = rollout(env, policy, env_preprocessor, env_postprocessor, preprocessor, postprocessor, seeds=[seed], return_observations=True)
    images = ret["observation"]["observation.images.top"][0, :steps]  # (steps, 3, H, W) float in [0, 1]
    uint8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    seconds = []
    for _ in range(repeats):  # timed: the same rollout, as lerobot_eval runs it (no observations kept)
        torch.manual_seed(seed)
        started = time.perf_counter()
        rollout(env, policy, env_preprocessor, env_postprocessor, preprocessor, postprocessor, seeds=[seed])
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"actions": ret["action"][0].tolist(), "image_sha256": [hashlib.sha256(im.tobytes()).hexdigest() for im in uint8], "seconds": seconds}))
    env.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *map(int, sys.argv[4:5]))
