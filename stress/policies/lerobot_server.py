"""Serve a LeRobot policy (a directory with ``config.json``, ``model.safetensors`` and its processor files) to the
suite over stress-policy/1, from LeRobot's own environment (docs/remote-policy.md, "LeRobot").

Why a server: LeRobot cannot join the suite's environment (lerobot 0.5-0.6 need Python >= 3.12; 0.4.4, the last
for 3.11, needs torch < 2.11 and packaging < 26 against the suite's torch 2.13 and packaging 26). So the policy
runs where LeRobot is installed, loaded with LeRobot's own classes, and the suite drives it as ``--policy remote``:

    /path/to/lerobot-env/bin/python stress/policies/lerobot_server.py --policy-path DIR [--simulator aloha|libero] [--port 8765]
    stress run --suite aloha --policy remote --policy-server ws://127.0.0.1:8765 ...

Stand-alone on purpose, like ``serve.py`` and ``cosmos_server.py``: numpy, msgpack and websockets, plus lerobot and
torch when a policy is loaded (imported then, not at import time, so the suite's tests check the mapping without
lerobot).

Each decision is one step of LeRobot's own evaluation loop (``lerobot_eval.rollout``), with LeRobot's own code:
the suite's observation is turned into what LeRobot's env wrapper of the simulator hands its rollout (gym-aloha's
``pixels``/``agent_pos``, LeRobot's LiberoEnv's ``pixels``/``robot_state``; batched by one), then
``lerobot.envs.utils.preprocess_observation``, ``task``, the env's processors (``make_env_pre_post_processors``), the policy's
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
    env_type: str  # LeRobot's EnvConfig type (its processors: identity for aloha, LiberoProcessorStep for libero)
    cameras: dict  # the suite's camera -> LeRobot's pixels key (feature ``observation.images.<key>``)
    image_shape: tuple[int, int] | None  # (height, width) LeRobot's env renders; None: square, the checkpoint's size
    image_sizes: tuple[int, ...]  # the suite's ``image_size`` values that render it (the first: a policy without images)
    proprio_dim: int  # the suite's proprio that reaches the server
    state_dim: int  # ``observation.state`` after LeRobot's env processors
    action_dim: int
    task: str | None  # the ``task`` LeRobot's rollout sends; None: the suite's instruction


# gym_aloha in LeRobot (lerobot.envs.configs.AlohaEnv): obs_type pixels_agent_pos, the top camera at 480 x 640
# (gym-aloha's own render, shadows on: the suite's image_size 480), agent_pos 14-D -> observation.state; gym-aloha's
# env has neither ``task_description`` nor ``task``, so LeRobot's rollout sends the task "" (a language perturbation
# does not reach a LeRobot ALOHA policy).
# LIBERO in LeRobot (lerobot.envs.libero.LiberoEnv, lerobot.envs.configs.LiberoEnv): obs_type pixels_agent_pos, pixels
# ``image`` (agentview_image) and ``image2`` (robot0_eye_in_hand_image) as robosuite renders them (bottom-up, square:
# the suite renders the checkpoint's size, one of its LIBERO sizes), robot_state's eef pos and quat (xyzw) and gripper
# qpos (the suite's 9-D proprio holds exactly these), which LeRobot's LiberoProcessorStep turns into the 8-D
# observation.state (pos, axis-angle, gripper) while it rotates the images by 180 degrees; the task is the LIBERO
# instruction (``task_description``), so a language perturbation reaches the policy; the 7-D action goes to robosuite.
MAPPINGS = {
    "aloha": EnvMapping("aloha", "aloha", {"top": "top"}, (480, 640), (480,), 14, 14, 14, ""),
    "libero": EnvMapping("libero", "libero", {"agentview": "image", "wrist": "image2"}, None, (128, 64, 224, 256), 9, 8, 7, None),
}


def env_mapping(simulator: str) -> EnvMapping:
    if simulator not in MAPPINGS:
        raise ValueError(f"no LeRobot mapping for simulator {simulator!r}; valid: {', '.join(MAPPINGS)}")
    return MAPPINGS[simulator]


def _image_features(config: dict) -> dict:
    return {name: feature for name, feature in (config.get("input_features") or {}).items() if name.startswith("observation.images.")}


def image_size(config: dict, mapping: EnvMapping) -> int:
    """The suite's ``image_size`` that renders what the checkpoint's image features declare: ALOHA's fixed 480 x 640;
    on LIBERO the square size every image feature declares (what LeRobot's ``--env.observation_height/width`` would be
    set to), which must be one the suite renders. ValueError naming the feature otherwise."""
    if mapping.image_shape is not None:
        return mapping.image_sizes[0]
    sizes = set()
    for name, feature in _image_features(config).items():
        shape = list(feature.get("shape") or ())
        if not (len(shape) == 3 and shape[0] == 3 and shape[1] == shape[2] and shape[1] in mapping.image_sizes) or sizes - {shape[1]}:
            valid = ", ".join(f"[3, {size}, {size}]" for size in sorted(mapping.image_sizes))
            raise ValueError(f"the policy's {name!r} is VISUAL {shape}; {mapping.simulator} renders VISUAL {valid} (one size for every camera)")
        sizes.add(shape[1])
    return sizes.pop() if sizes else mapping.image_sizes[0]


def cameras_of(config: dict, mapping: EnvMapping) -> tuple[str, ...]:
    """The suite's cameras whose images the checkpoint reads (its ``observation.images.<key>`` features), in the
    simulator's order: the only ones the server asks for."""
    declared = _image_features(config)
    return tuple(ours for ours, key in mapping.cameras.items() if f"observation.images.{key}" in declared)


def expected_features(mapping: EnvMapping, size: int | None = None) -> dict[str, tuple[str, tuple[int, ...]]]:
    """LeRobot feature name -> (type, shape) the simulator provides (inputs) and takes (the action), its images
    rendered at ``size`` (LIBERO; ALOHA's shape is fixed)."""
    height, width = mapping.image_shape or (mapping.image_sizes[0] if size is None else size,) * 2
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
    declared = {**(config.get("input_features") or {}), **(config.get("output_features") or {})}
    listed = expected_features(mapping, 0)  # LIBERO's square size: the checkpoint's, checked below
    valid = "; ".join(f"{name} {kind} {list(shape)}".replace("0, 0]", "S, S]") for name, (kind, shape) in listed.items())
    if mapping.image_shape is None:
        valid += f" (S: {', '.join(map(str, sorted(mapping.image_sizes)))})"
    unknown = [name for name in declared if name not in listed]
    if unknown:
        raise ValueError(f"the policy needs feature {unknown[0]!r}, which {mapping.simulator} does not provide; valid: {valid}")
    given = expected_features(mapping, image_size(config, mapping))
    for name, feature in declared.items():
        kind, shape = given[name]
        if feature.get("type") != kind or tuple(feature.get("shape") or ()) != shape:
            raise ValueError(f"the policy's {name!r} is {feature.get('type')} {list(feature.get('shape') or ())}; {mapping.simulator} has {kind} {list(shape)}")
    for name in ("action", "observation.state"):
        if name not in declared:
            raise ValueError(f"the policy declares no {name!r} feature; valid: {valid}")
    if mapping.simulator == "libero" and config.get("type") == "xvla":  # its LIBERO processors read robot_state's eef mat
        raise ValueError("an xvla policy is not mapped on libero (its LIBERO processors read the controller's rotation matrix, "
                         "which the suite's proprio does not carry); valid: policies using LeRobot's LiberoProcessorStep (act, diffusion, pi0, smolvla, ...)")


def gym_observation(obs, mapping: EnvMapping, size: int | None = None, cameras: tuple[str, ...] | None = None) -> dict:
    """The suite's observation as LeRobot's rollout receives it from its env wrapper's vector env (one env), for the
    ``cameras`` the policy reads (default: all the mapping's), rendered at ``size`` (LIBERO; ALOHA's shape is fixed).

    ALOHA (gym-aloha): ``pixels`` key -> (1, 480, 640, 3) uint8 upright, ``agent_pos`` (1, 14) float64.
    LIBERO (LeRobot's LiberoEnv): ``pixels`` key -> (1, S, S, 3) uint8 as robosuite renders it (bottom-up: the suite's
    upright image flipped back), ``robot_state`` {eef: {pos (1, 3), quat (1, 4) xyzw}, gripper: {qpos (1, 2)}} float64,
    the fields LeRobot's LiberoProcessorStep reads (it drops the rest of robot_state)."""
    height, width = mapping.image_shape or (size or mapping.image_sizes[0],) * 2
    pixels = {}
    for ours in cameras or tuple(mapping.cameras):
        image = np.asarray(obs.images[ours])
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise ValueError(f"camera {ours!r} is {image.dtype} {image.shape}; the policy needs uint8 {(height, width, 3)} (image_size {size or mapping.image_sizes[0]})")
        pixels[mapping.cameras[ours]] = np.ascontiguousarray(image if mapping.image_shape else image[::-1])[None]
    state = np.asarray(obs.proprio, dtype=np.float64)
    if state.shape != (mapping.proprio_dim,):
        raise ValueError(f"proprio has shape {state.shape}; the policy needs ({mapping.proprio_dim},)")
    if mapping.simulator == "libero":  # the suite's proprio: gripper qpos (2), eef pos (3), eef quat (4, xyzw)
        robot_state = {"eef": {"pos": state[None, 2:5], "quat": state[None, 5:9]}, "gripper": {"qpos": state[None, 0:2]}}
        return {"pixels": pixels, "robot_state": robot_state}
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
        from lerobot.envs.factory import make_env_pre_post_processors
        from lerobot.envs.utils import preprocess_observation
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        self.torch, self.preprocess_observation = torch, preprocess_observation
        self.mapping = env_mapping(simulator)
        self.config = read_config(path)
        check_features(self.config, self.mapping)
        self.image_size, self.cameras = image_size(self.config, self.mapping), cameras_of(self.config, self.mapping)
        cfg = PreTrainedConfig.from_pretrained(str(path))
        cfg.device = device
        self.policy = get_policy_class(cfg.type).from_pretrained(str(path), config=cfg)
        self.policy.eval()
        overrides = {"device_processor": {"device": device}}
        self.preprocessor, self.postprocessor = make_pre_post_processors(cfg, pretrained_path=str(path), preprocessor_overrides=overrides)
        self.env_preprocessor, self.env_postprocessor = make_env_pre_post_processors(EnvConfig.get_choice_class(self.mapping.env_type)(), cfg)

    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation=None) -> None:
        """LeRobot's rollout start: ``policy.reset()`` (its queues emptied); torch seeded with the episode's seed
        (LeRobot's eval seeds once per run; here each episode is reproducible on its own)."""
        self.torch.manual_seed(int(seed))
        self.policy.reset()
        for pipeline in (self.preprocessor, self.postprocessor, self.env_preprocessor, self.env_postprocessor):
            pipeline.reset()

    def env_observation(self, obs) -> dict:
        """What LeRobot's rollout hands the policy's preprocessor at this step: the env wrapper's observation through
        ``preprocess_observation``, the ``task``, and the env's processors (LIBERO's: the 180-degree image rotation and
        the 8-D state)."""
        observation = self.preprocess_observation(gym_observation(obs, self.mapping, self.image_size, self.cameras))
        observation["task"] = [str(obs.instruction) if self.mapping.task is None else self.mapping.task]
        return self.env_preprocessor(observation)

    def act(self, obs):
        torch = self.torch
        observation = self.preprocessor(self.env_observation(obs))
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
    return describe(LerobotPolicy, version=f"{config['type']}-{policy_digest(path)}", chunk=1, image_size=image_size(config, mapping),
                    cameras=cameras_of(config, mapping), action_dim=mapping.action_dim, proprio_dim=mapping.proprio_dim,
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
