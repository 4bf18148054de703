"""What a LeRobot LIBERO policy receives, both ways, with LeRobot's own functions. Run with LeRobot's Python:

    LEROBOT_PYTHON tests/lerobot_libero_inputs.py POLICY_DIR STEPS.npz

``STEPS.npz`` holds, per step ``i``, the suite's observation (``ours/i/agentview``, ``ours/i/wrist`` upright uint8,
``ours/i/proprio`` the 9-D float32 proprio) and what LeRobot's own LiberoEnv returned from the same simulator state
(``theirs/i/pixels/image``, ``theirs/i/robot_state/eef/pos``, ... every field, unbatched), and ``instruction``.
Prints one JSON line: per step, the sha256 of every tensor the policy's preprocessor receives (``observation.images.*``,
``observation.state``) and the task, for ours (the server's ``LerobotPolicy.env_observation``) and theirs
(``preprocess_observation`` of the vector env's batch of one, the task from ``task_description``, the env processors
of ``make_env_pre_post_processors``: LeRobot's rollout). The test compares them (tests/test_lerobot.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.envs.configs import LiberoEnv
from lerobot.envs.factory import make_env_pre_post_processors
from lerobot.envs.utils import preprocess_observation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stress" / "policies"))
from lerobot_server import LerobotPolicy  # noqa: E402  (the server's own module, as it runs in LeRobot's environment)
from serve import ServedObservation  # noqa: E402


def digest(observation: dict) -> dict:
    return {key: hashlib.sha256(value.contiguous().numpy().tobytes()).hexdigest() + f" {value.dtype} {tuple(value.shape)}"
            if isinstance(value, torch.Tensor) else value for key, value in sorted(observation.items())}


def nest(flat: dict, prefix: str) -> dict:
    """``theirs/i/a/b/c`` arrays as LeRobot's vector env of one hands them: nested, every leaf batched by one."""
    out: dict = {}
    for key, value in flat.items():
        if key.startswith(prefix):
            *parents, leaf = key[len(prefix):].split("/")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value[None]
    return out


def main(path: str, npz: str) -> None:
    data = dict(np.load(npz))
    instruction = str(data.pop("instruction"))
    ours_policy = LerobotPolicy(path, "libero")
    env_preprocessor, _ = make_env_pre_post_processors(LiberoEnv(), PreTrainedConfig.from_pretrained(path))
    steps = sorted({int(key.split("/")[1]) for key in data})
    out = []
    for i in steps:
        obs = ServedObservation(images={c: data[f"ours/{i}/{c}"] for c in ("agentview", "wrist")}, proprio=data[f"ours/{i}/proprio"],
                                instruction=instruction, step=i)
        theirs = preprocess_observation(nest(data, f"theirs/{i}/"))
        theirs["task"] = [instruction]  # the rollout's env.call("task_description")
        out.append({"ours": digest(ours_policy.env_observation(obs)), "theirs": digest(env_preprocessor(theirs))})
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
