"""Small ACT and Diffusion policies for gym_aloha, initialised at random with a fixed seed and saved with LeRobot's own
``save_pretrained`` (the policy and its processors): what the LeRobot tests serve. Run with LeRobot's Python:

    LEROBOT_PYTHON tests/lerobot_policies.py OUT_DIR    # writes OUT_DIR/act, OUT_DIR/diffusion (gym_aloha), OUT_DIR/act_libero

No weights are downloaded (``pretrained_backbone_weights=None``). The normalisation statistics keep the actions
near gym-aloha's start pose (std 0.05 rad), so a random policy moves the arms a little and the physics stays sane.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
from lerobot.policies.factory import make_pre_post_processors

# gym-aloha's START_ARM_POSE as agent_pos (per arm: 6 joints, the gripper normalised 0..1)
POSE = torch.tensor([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.5] * 2)
INPUTS = {"observation.images.top": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 480, 640)),
          "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(14,))}
OUTPUTS = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(14,))}
# LeRobot's LIBERO features (HuggingFaceVLA/libero's names: image = agentview, image2 = wrist; the 8-D state of its
# LiberoProcessorStep), at 128 px to keep the tests cheap (the suite renders the checkpoint's size)
LIBERO_INPUTS = {"observation.images.image": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 128, 128)),
                 "observation.images.image2": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 128, 128)),
                 "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(8,))}
LIBERO_OUTPUTS = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(7,))}


def vector_stats(mean: torch.Tensor, std: float) -> dict:
    return {"mean": mean, "std": torch.full(mean.shape, std), "min": mean - 2 * std, "max": mean + 2 * std}


IMAGE = {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25), "min": torch.zeros(3, 1, 1), "max": torch.ones(3, 1, 1)}


def stats() -> dict:
    return {"observation.state": vector_stats(POSE, 0.05), "action": vector_stats(POSE, 0.05), "observation.images.top": IMAGE}


def libero_stats() -> dict:
    """The Panda's start (eef pos, axis-angle, gripper qpos); actions around no motion, small (std 0.1 of the OSC delta)."""
    state = torch.tensor([-0.2, 0.0, 1.17, 3.1, 0.0, 0.0, 0.04, -0.04])
    return {"observation.state": vector_stats(state, 0.1), "action": vector_stats(torch.zeros(7), 0.1),
            "observation.images.image": IMAGE, "observation.images.image2": IMAGE}


def save(policy_class, config, out: Path, dataset_stats=None) -> None:
    torch.manual_seed(0)
    policy = policy_class(config)
    preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=dataset_stats or stats())
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out)
    preprocessor.save_pretrained(out)
    postprocessor.save_pretrained(out)


def main(out: Path) -> None:
    save(ACTPolicy, ACTConfig(input_features=INPUTS, output_features=OUTPUTS, device="cpu", chunk_size=10, n_action_steps=10,
                              dim_model=64, n_heads=2, dim_feedforward=128, n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1,
                              latent_dim=8, pretrained_backbone_weights=None), out / "act")
    save(DiffusionPolicy, DiffusionConfig(input_features=INPUTS, output_features=OUTPUTS, device="cpu", n_obs_steps=2, horizon=8, n_action_steps=4,
                                          down_dims=(32, 64), diffusion_step_embed_dim=32, num_inference_steps=3, crop_shape=None,
                                          pretrained_backbone_weights=None, use_group_norm=True), out / "diffusion")
    save(ACTPolicy, ACTConfig(input_features=LIBERO_INPUTS, output_features=LIBERO_OUTPUTS, device="cpu", chunk_size=10, n_action_steps=10,
                              dim_model=64, n_heads=2, dim_feedforward=128, n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1,
                              latent_dim=8, pretrained_backbone_weights=None), out / "act_libero", libero_stats())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
