"""Serve a LeRobot policy (a directory with ``config.json``, ``model.safetensors`` and its processor files) to the
suite over stress-policy/1, from LeRobot's own environment (docs/remote-policy.md, "LeRobot").

Why a server: LeRobot cannot join the suite's environment (lerobot 0.5-0.6 need Python >= 3.12; 0.4.4, the last
for 3.11, needs torch < 2.11 and packaging < 26 against the suite's torch 2.13 and packaging 26). So the policy
runs where LeRobot is installed, loaded with LeRobot's own classes, and the suite drives it as ``--policy remote``:

    /path/to/lerobot-env/bin/python stress/policies/lerobot_server.py --policy-path DIR [--simulator aloha] [--port 8765]
    stress run --suite aloha --policy remote --policy-server ws://127.0.0.1:8765 ...

Stand-alone on purpose, like ``serve.py`` and ``cosmos_server.py``: numpy, msgpack and websockets, plus lerobot and
torch when a policy is loaded (imported then, not at import time, so the suite's tests check the mapping without
lerobot).

Each decision is one step of LeRobot's own evaluation loop (``lerobot_eval.rollout``), with LeRobot's own code:
the suite's observation is turned into what gym-aloha's env hands LeRobot (``pixels``/``agent_pos``, batched by
one), then ``lerobot.envs.utils.preprocess_observation``, ``task``, the env's processors, the policy's
preprocessor, ``policy.select_action``, the postprocessor; one action comes back (a chunk of 1). The policy keeps
its own action queue and observation history (ACT's chunk, Diffusion's ``n_obs_steps``) exactly as in LeRobot's
evaluation, which also calls ``select_action`` at every step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

try:  # inside the suite
    from stress.policies.serve import DEFAULT_HOST, DEFAULT_PORT, PolicyServer, describe
except ImportError:  # copied next to serve.py into LeRobot's environment
    from serve import DEFAULT_HOST, DEFAULT_PORT, PolicyServer, describe

POLICY_FILES = ("config.json", "model.safetensors")  # the policy's save_pretrained
PROCESSOR_FILES = ("policy_preprocessor.json", "policy_postprocessor.json")  # its processors' save_pretrained (LeRobot >= 0.4)


@dataclass(frozen=True)
class EnvMapping:
    """How LeRobot's env wrapper of a simulator names and shapes what the suite renders."""

    simulator: str
    env_type: str  # LeRobot's EnvConfig type (its processors: identity for aloha)
    cameras: dict  # the suite's camera -> LeRobot's pixels key (feature ``observation.images.<key>``)
    image_shape: tuple[int, int]  # (height, width) LeRobot's env renders
    image_size: int  # the suite's ``image_size`` that renders that shape
    state_dim: int
    action_dim: int
    task: str | None  # the ``task`` LeRobot's rollout sends; None: the suite's instruction


# gym_aloha in LeRobot (lerobot.envs.configs.AlohaEnv): obs_type pixels_agent_pos, the top camera at 480 x 640
# (gym-aloha's own render, shadows on: the suite's image_size 480), agent_pos 14-D -> observation.state; gym-aloha's
# env has neither ``task_description`` nor ``task``, so LeRobot's rollout sends the task "" (a language perturbation
# does not reach a LeRobot ALOHA policy)
MAPPINGS = {"aloha": EnvMapping("aloha", "aloha", {"top": "top"}, (480, 640), 480, 14, 14, "")}


def env_mapping(simulator: str) -> EnvMapping:
    if simulator not in MAPPINGS:
        raise ValueError(f"no LeRobot mapping for simulator {simulator!r}; valid: {', '.join(MAPPINGS)}")
    return MAPPINGS[simulator]


def expected_features(mapping: EnvMapping) -> dict[str, tuple[str, tuple[int, ...]]]:
    """LeRobot feature name -> (type, shape) the simulator provides (inputs) and takes (the action)."""
    height, width = mapping.image_shape
    features = {f"observation.images.{key}": ("VISUAL", (3, height, width)) for key in mapping.cameras.values()}
    features["observation.state"] = ("STATE", (mapping.state_dim,))
    features["action"] = ("ACTION", (mapping.action_dim,))
    return features


def read_config(path) -> dict:
    """``config.json`` of a LeRobot policy directory, or ValueError naming what is missing."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"--policy-path {str(path)!r} is not a directory; valid: a LeRobot policy directory ({', '.join(POLICY_FILES)}, processor files)")
    missing = [name for name in POLICY_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"--policy-path {str(path)!r} is not a LeRobot policy (no {', '.join(missing)}); valid: a directory written by save_pretrained")
    missing = [name for name in PROCESSOR_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"--policy-path {str(path)!r} has no {', '.join(missing)}; valid: a LeRobot >= 0.4 policy directory "
                         "(an older checkpoint: convert it with LeRobot's lerobot.processor.migrate_policy_normalization)")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--policy-path {str(path)!r}: config.json unreadable ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        raise ValueError(f"--policy-path {str(path)!r}: config.json has no policy 'type'; valid: a LeRobot policy config")
    return config


def check_features(config: dict, mapping: EnvMapping) -> None:
    """The checkpoint's ``input_features`` and ``output_features`` against what the simulator gives and takes:
    ValueError naming the first mismatch and the valid features."""
    given = expected_features(mapping)
    valid = "; ".join(f"{name} {kind} {list(shape)}" for name, (kind, shape) in given.items())
    declared = {**(config.get("input_features") or {}), **(config.get("output_features") or {})}
    for name, feature in declared.items():
        if name not in given:
            raise ValueError(f"the policy needs feature {name!r}, which {mapping.simulator} does not provide; valid: {valid}")
        kind, shape = given[name]
        if feature.get("type") != kind or tuple(feature.get("shape") or ()) != shape:
            raise ValueError(f"the policy's {name!r} is {feature.get('type')} {list(feature.get('shape') or ())}; {mapping.simulator} has {kind} {list(shape)}")
    for name in ("action", "observation.state"):
        if name not in declared:
            raise ValueError(f"the policy declares no {name!r} feature; valid: {valid}")


def gym_observation(obs, mapping: EnvMapping) -> dict:
    """The suite's observation as LeRobot's rollout receives it from gym-aloha's vector env (one env): ``pixels``
    camera -> (1, H, W, 3) uint8, ``agent_pos`` (1, state_dim) float64."""
    pixels = {}
    for ours, key in mapping.cameras.items():
        image = np.asarray(obs.images[ours])
        if image.shape != (*mapping.image_shape, 3) or image.dtype != np.uint8:
            raise ValueError(f"camera {ours!r} is {image.dtype} {image.shape}; the policy needs uint8 {(*mapping.image_shape, 3)} (image_size {mapping.image_size})")
        pixels[key] = image[None]
    state = np.asarray(obs.proprio, dtype=np.float64)
    if state.shape != (mapping.state_dim,):
        raise ValueError(f"proprio has shape {state.shape}; the policy needs ({mapping.state_dim},)")
    return {"pixels": pixels, "agent_pos": state[None]}


def policy_digest(path) -> str:
    """12 hex digits of the sha256 of the policy's config and weights: the served version."""
    digest = hashlib.sha256()
    for name in POLICY_FILES:
        with open(Path(path) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


class LerobotPolicy:
    """A LeRobot policy behind the suite's policy protocol, one step of LeRobot's evaluation loop per ``act``."""

    name = "lerobot"
    modes = ("direct",)
    uses_images = True

    def __init__(self, path, simulator: str = "aloha", device: str = "cpu"):
        # lerobot and torch live in LeRobot's environment only: imported when a policy is loaded
        import torch
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.envs.configs import EnvConfig
        from lerobot.envs.utils import preprocess_observation
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        self.torch, self.preprocess_observation = torch, preprocess_observation
        self.mapping = env_mapping(simulator)
        self.config = read_config(path)
        check_features(self.config, self.mapping)
        cfg = PreTrainedConfig.from_pretrained(str(path))
        cfg.device = device
        self.policy = get_policy_class(cfg.type).from_pretrained(str(path), config=cfg)
        self.policy.eval()
        overrides = {"device_processor": {"device": device}}
        self.preprocessor, self.postprocessor = make_pre_post_processors(cfg, pretrained_path=str(path), preprocessor_overrides=overrides)
        self.env_preprocessor, self.env_postprocessor = EnvConfig.get_choice_class(self.mapping.env_type)().get_env_processors()

    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation=None) -> None:
        """LeRobot's rollout start: ``policy.reset()`` (its queues emptied); torch seeded with the episode's seed
        (LeRobot's eval seeds once per run; here each episode is reproducible on its own)."""
        self.torch.manual_seed(int(seed))
        self.policy.reset()
        for pipeline in (self.preprocessor, self.postprocessor, self.env_preprocessor, self.env_postprocessor):
            pipeline.reset()

    def act(self, obs):
        torch = self.torch
        observation = self.preprocess_observation(gym_observation(obs, self.mapping))
        observation["task"] = [str(obs.instruction) if self.mapping.task is None else self.mapping.task]
        observation = self.preprocessor(self.env_preprocessor(observation))
        with torch.inference_mode():
            action = self.policy.select_action(observation)
        action = self.postprocessor(action)
        action = self.env_postprocessor({"action": action})["action"]
        actions = action.to("cpu").numpy().astype(np.float64)  # (1, action_dim): one step, as LeRobot's loop
        return SimpleNamespace(actions=actions, predicted_value=None, predicted_future=None, candidates=[], chosen=None, aggregation=None,
                               info={"lerobot_policy": self.config["type"]})


def metadata(path, simulator: str) -> dict:
    import lerobot
    import torch

    config, mapping = read_config(path), env_mapping(simulator)
    return describe(LerobotPolicy, version=f"{config['type']}-{policy_digest(path)}", chunk=1, image_size=mapping.image_size,
                    cameras=tuple(mapping.cameras), action_dim=mapping.action_dim, proprio_dim=mapping.state_dim,
                    software={"lerobot": lerobot.__version__, "torch": torch.__version__, "policy_type": config["type"]})


def watch_parent() -> None:
    """Exit at once when the parent process is gone (a killed worker must not leave its server behind)."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Serve a LeRobot policy to the stress suite (stress-policy/1)")
    parser.add_argument("--policy-path", required=True, metavar="DIR", help="a LeRobot policy directory (config.json, model.safetensors, processor files)")
    parser.add_argument("--simulator", default="aloha", help=f"the suite's simulator it drives (valid: {', '.join(MAPPINGS)})")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free one, printed on start")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--api-key", default=None, help="refuse connections without 'Authorization: Api-Key KEY'")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when the process that started this one ends (the suite's --policy lerobot)")
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        watch_parent()
    try:
        read_config(args.policy_path)
        env_mapping(args.simulator)
        first = LerobotPolicy(args.policy_path, args.simulator, args.device)
        server = PolicyServer(lambda: LerobotPolicy(args.policy_path, args.simulator, args.device), metadata(args.policy_path, args.simulator),
                              host=args.host, port=args.port, api_key=args.api_key)
    except ValueError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    server._idle.append(first)
    identity = "{name}:{version}".format(**server.metadata["policy"])
    server.serve_forever(ready=lambda port: print(f"stress serve: {identity} on ws://{args.host}:{port} (stress-policy/1)", file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
