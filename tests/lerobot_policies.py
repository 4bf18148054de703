"""Small ACT and Diffusion policies for gym_aloha, initialised at random with a fixed seed and saved with LeRobot's own
``save_pretrained`` (the policy and its processors): what the LeRobot tests serve. Run with LeRobot's Python:

    LEROBOT_PYTHON tests/lerobot_policies.py OUT_DIR    # writes OUT_DIR/act and OUT_DIR/diffusion

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


def stats() -> dict:
    vector = {"mean": POSE, "std": torch.full((14,), 0.05), "min": POSE - 0.1, "max": POSE + 0.1}
    image = {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25), "min": torch.zeros(3, 1, 1), "max": torch.ones(3, 1, 1)}
    return {"observation.state": vector, "action": vector, "observation.images.top": image}


def save(policy_class, config, out: Path) -> None:
    torch.manual_seed(0)
    policy = policy_class(config)
    preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=stats())
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


if __name__ == "__main__":
    main(Path(sys.argv[1]))
