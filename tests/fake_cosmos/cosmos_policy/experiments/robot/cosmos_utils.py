"""Stand-in for ``cosmos_policy.experiments.robot.cosmos_utils`` (see ../../../README.md): the real signatures,
config attributes and return shapes/types, a deterministic fake model, GPU tensors that refuse serialisation.

``LOG`` records every model call (role, seed, denoising steps, ``num_conditional_frames``, mask flag) and every
helper's view of ``data_batch`` on entry; ``T5_LOADS`` records every instruction T5-11B would have embedded.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import shutil
import weakref
from types import SimpleNamespace

import numpy as np

from cosmos_policy.constants import ACTION_DIM

COSMOS_IMAGE_SIZE = 224
COSMOS_TEMPORAL_COMPRESSION_FACTOR = 4
LATENT = (16, 28, 28)  # channels, height, width of a latent frame
SLOTS = ("blank", "proprio", "wrist", "primary", "action", "future_proprio", "future_wrist", "future_primary", "value")  # LIBERO, state_t = 9

t5_text_embeddings_cache: dict = {}
t5_text_embeddings_path_global = None
LOG: list[dict] = []
T5_LOADS: list[str] = []


class GPUTensor:
    """A CUDA tensor as far as a server is concerned: handed back to cosmos_utils, never read or serialised."""

    live: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, array):
        self.data = np.asarray(array)
        GPUTensor.live.add(self)

    @property
    def shape(self):
        return self.data.shape

    def clone(self):
        return GPUTensor(self.data.copy())

    def __array__(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first.")

    def __reduce__(self):
        raise TypeError("a CUDA tensor must not be serialised by a server")

    def __float__(self):
        raise TypeError("a CUDA tensor must not be read by a server")


def _gpu(x):
    return GPUTensor(x)


# --- the model --------------------------------------------------------------------------------------------
def _encode(video: np.ndarray) -> np.ndarray:
    """(B, 3, 33, 224, 224) uint8 -> (B, 16, 9, 28, 28) in [-1, 1]: each latent frame is its 4 frames' 8x8 block
    means (the blank first frame stands alone), channel c from colour c % 3. Keeps orientation and content."""
    b = video.shape[0]
    frames = [video[:, :, :1]] + [video[:, :, 1 + 4 * k: 5 + 4 * k] for k in range(8)]
    out = np.empty((b, LATENT[0], len(frames), 28, 28))
    for t, group in enumerate(frames):
        mean = group.astype(np.float64).mean(axis=2)  # (B, 3, 224, 224)
        blocks = mean.reshape(b, 3, 28, 8, 28, 8).mean(axis=(3, 5)) / 127.5 - 1
        out[:, :, t] = blocks[:, np.arange(LATENT[0]) % 3]
    return out


class FakeModel:
    """``generate_samples_from_batch`` as the real sampler is called: noise from RandomState(seed), frames
    before ``num_conditional_frames`` kept, later ones denoised (less noise with more steps)."""

    def __init__(self, name: str, state_t: int = 9, min_num_conditional_frames: int = 4):
        self.name = name
        self.config = SimpleNamespace(state_t=state_t, min_num_conditional_frames=min_num_conditional_frames)

    def generate_samples_from_batch(self, data_batch, n_sample=1, num_steps=35, seed=1, is_negative_prompt=False, use_variance_scale=False,
                                    skip_vae_encoding=False, previous_generated_latent=None, return_orig_clean_latent_frames=False):
        ncf = data_batch["num_conditional_frames"]
        LOG.append({"call": "generate", "model": self.name, "seed": seed, "num_steps": num_steps, "ncf": ncf,
                    "mask": data_batch.get("mask_current_state_action_for_value_prediction")})
        clean = previous_generated_latent.data if skip_vae_encoding else _encode(data_batch["video"].data)
        if not skip_vae_encoding:  # what the conditioning injects: the proprio, and the instruction and scene as a bias
            clean = clean.copy()
            clean[:, :, 1] = np.resize(data_batch["proprio"].data, LATENT)[None] if data_batch["proprio"] is not None else 0
            bias = float(np.tanh(data_batch["t5_text_embeddings"].data.mean() * 50 + clean[:, :, 3].mean()))
            clean[:, :, 4:] += bias
        noise = np.random.RandomState(seed).standard_normal((n_sample, *LATENT[:1], 9, *LATENT[1:]))
        noise[:, :, -1] = noise[:, :1, -1, :1, :1] * 2  # one draw per sample for the value frame: values spread over (0, 1)
        out = clean.copy()
        out[:, :, ncf:] = np.tanh(clean[:, :, ncf:] + noise[:, :, ncf:] / (1 + num_steps))
        latent = _gpu(out)
        return (latent, _gpu(clean.copy())) if return_orig_clean_latent_frames else latent


def _decode_frame(latent: np.ndarray, index: int) -> np.ndarray:
    """Latent frame -> (B, 224, 224, 3) uint8 (8x8 blocks): the 'VAE decode' of a future image."""
    frame = latent[:, :3, index]  # (B, 3, 28, 28)
    image = np.clip(np.round((frame + 1) * 127.5), 0, 255).astype(np.uint8)
    return image.repeat(8, axis=2).repeat(8, axis=3).transpose(0, 2, 3, 1)


def _futures(latent: np.ndarray, cfg) -> dict:
    return {"future_image": _decode_frame(latent, SLOTS.index("future_primary")) if cfg.use_third_person_image else None,
            "future_wrist_image": _decode_frame(latent, SLOTS.index("future_wrist")) if cfg.use_wrist_image else None}


def _value(latent: np.ndarray) -> np.ndarray:
    return np.clip((latent[:, :, -1].mean(axis=(1, 2, 3)) + 1) / 2, 0, 1)  # (B,); the real: a tensor, read with .item()


# --- loading ----------------------------------------------------------------------------------------------
def get_model(cfg):
    """(model, config). Offline stand-in: the checkpoint must be a local path."""
    for name in ("config", "ckpt_path", "config_file"):
        getattr(cfg, name)
    if not os.path.exists(cfg.ckpt_path):
        raise FileNotFoundError(f"checkpoint {cfg.ckpt_path} not found (offline)")
    chunk = 8 if "chunk8" in cfg.config else 16
    return FakeModel("base"), SimpleNamespace(dataloader_train=SimpleNamespace(dataset=SimpleNamespace(chunk_size=chunk)))


def get_planning_model(cfg, device: str = "cuda"):
    if not os.path.exists(cfg.planning_model_ckpt_path):
        raise FileNotFoundError(f"planning checkpoint {cfg.planning_model_ckpt_path} not found (offline)")
    getattr(cfg, "planning_model_config_name")
    return FakeModel("planning"), SimpleNamespace()


def load_dataset_stats(dataset_stats_path: str) -> dict:
    assert dataset_stats_path != "", "Must provide `dataset_stats_path` for action un-normalization!"
    assert os.path.exists(dataset_stats_path), f"Dataset stats do not exist at path: {dataset_stats_path}"
    with open(dataset_stats_path) as f:
        return {k: np.array(v) for k, v in json.load(f).items()}


def init_t5_text_embeddings_cache(t5_text_embeddings_path: str = None, worker_id: int = 0) -> dict:
    """Fills the module-global cache (values: (1, 512, 1024) 'CUDA' tensors); failures only print, as the real."""
    global t5_text_embeddings_path_global
    if t5_text_embeddings_path is not None and os.path.exists(t5_text_embeddings_path) and t5_text_embeddings_cache == {}:
        try:
            with open(t5_text_embeddings_path, "rb") as f:
                data = pickle.load(f)
            t5_text_embeddings_cache.update({k: _gpu(v) for k, v in data.items()})
            t5_text_embeddings_path_global = t5_text_embeddings_path
        except Exception as exc:
            print(f"Warning: Error loading T5 embeddings cache: {exc}. Embeddings will be computed on-demand.")


def get_t5_embedding_from_cache(task_label: str):
    """A miss 'loads T5-11B' and rewrites the cache file in place (with a .backup), as the real one does."""
    if task_label in t5_text_embeddings_cache:
        return t5_text_embeddings_cache[task_label]
    T5_LOADS.append(task_label)
    embedding = np.random.RandomState(len(task_label)).standard_normal((1, 512, 1024)).astype(np.float32)
    t5_text_embeddings_cache[task_label] = _gpu(embedding)
    if t5_text_embeddings_path_global:
        shutil.copy(t5_text_embeddings_path_global, t5_text_embeddings_path_global + ".backup")
        with open(t5_text_embeddings_path_global, "wb") as f:
            pickle.dump({k: v.data for k, v in t5_text_embeddings_cache.items()}, f)
    return t5_text_embeddings_cache[task_label]


# --- preprocessing ----------------------------------------------------------------------------------------
def check_images_format(images: np.ndarray) -> None:
    assert isinstance(images, np.ndarray) and len(images.shape) == 4 and images.shape[-1] == 3 and images.dtype == np.uint8, (
        "Incorrect images format detected! Make sure that the input images are a numpy array with shape (T, H, W, 3) and dtype np.uint8!")


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    index = (np.arange(size) * images.shape[1] / size).astype(int)  # nearest neighbour (the real: PIL)
    return images[:, index][:, :, index]


def apply_image_transforms(images: np.ndarray) -> np.ndarray:
    _, h, w, _ = images.shape
    assert h == w, f"Image height and width must be equal! Got H == {h} and W == {w}"
    crop = int(h * 0.9**0.5)
    top = (h - crop) // 2
    return _resize(images[:, top:top + crop, top:top + crop], h)


def prepare_images_for_model(images, cfg, flip_images: bool = False):
    images = np.stack(images, axis=0)  # mismatched sizes raise ValueError, as the real
    check_images_format(images)
    if flip_images:
        images = np.flipud(images)  # the real's bug kept: flips the stack (frame order), not the images
    images = _resize(images, COSMOS_IMAGE_SIZE)  # (no JPEG here)
    if cfg.trained_with_image_aug:
        images = apply_image_transforms(images)
    return images


def rescale_proprio(proprio, dataset_stats, non_negative_only=False, scale_multiplier=1.0):
    low, high = dataset_stats["proprio_min"], dataset_stats["proprio_max"]
    return (2 * (proprio - low) / (high - low) - 1) * scale_multiplier


def unnormalize_actions(actions: np.ndarray, dataset_stats: dict, scale_multiplier: float = 1.0):
    low, high = dataset_stats["actions_min"], dataset_stats["actions_max"]
    return (actions / scale_multiplier + 1) / 2 * (high - low) + low


# --- inference ----------------------------------------------------------------------------------------------
def _entry(name: str, data_batch: dict) -> None:
    LOG.append({"call": name, "ncf": data_batch["num_conditional_frames"], "mask": data_batch.get("mask_current_state_action_for_value_prediction")})


def get_action(cfg, model, dataset_stats: dict, obs: dict, task_label_or_embedding, seed: int = 1, randomize_seed: bool = False,
               num_denoising_steps_action: int = 5, generate_future_state_and_value_in_parallel: bool = True, worker_id: int = 0, batch_size: int = 1):
    if randomize_seed:
        seed = secrets.randbits(32) % 256
    if isinstance(task_label_or_embedding, str):
        text_embedding = get_t5_embedding_from_cache(task_label_or_embedding)
    elif isinstance(task_label_or_embedding, np.ndarray):
        text_embedding = _gpu(task_label_or_embedding)
    else:  # the real leaves text_embedding unbound for a torch tensor
        raise UnboundLocalError("local variable 'text_embedding' referenced before assignment")
    if cfg.suite != "libero":
        raise ValueError(f"Eval suite not implemented yet: {cfg.suite}")
    images = prepare_images_for_model([obs["wrist_image"], obs["primary_image"]], cfg)
    wrist, primary = images[0], images[1]
    proprio = None
    if cfg.use_proprio:
        proprio = obs["proprio"]
        if cfg.normalize_proprio:
            proprio = rescale_proprio(proprio, dataset_stats)
        if np.size(proprio) % batch_size:
            raise RuntimeError(f"shape '[{batch_size}, -1]' is invalid for input of size {np.size(proprio)}")
    blank = np.zeros_like(primary)
    slots = {"blank": blank[None], "proprio": blank, "wrist": wrist, "primary": primary, "action": blank, "future_proprio": blank,
             "future_wrist": wrist, "future_primary": primary, "value": blank}
    video = np.concatenate([slots["blank"]] + [np.repeat(slots[s][None], COSMOS_TEMPORAL_COMPRESSION_FACTOR, axis=0) for s in SLOTS[1:]])
    video = np.tile(video[None], (batch_size, 1, 1, 1, 1)).transpose(0, 4, 1, 2, 3)  # (B, C, T, H, W)
    data_batch = {"dataset_name": "video_data", "video": _gpu(video), "t5_text_embeddings": _gpu(text_embedding.data.repeat(batch_size, axis=0)),
                  "fps": _gpu(np.full(batch_size, 16.0)), "padding_mask": _gpu(np.zeros((batch_size, 1, 224, 224))),
                  "num_conditional_frames": model.config.min_num_conditional_frames,
                  "proprio": _gpu(np.reshape(proprio, (batch_size, -1))) if cfg.use_proprio else None,
                  "current_proprio_latent_idx": _gpu(np.full(batch_size, 1)), "current_wrist_image_latent_idx": _gpu(np.full(batch_size, 2)),
                  "current_image_latent_idx": _gpu(np.full(batch_size, 3)),
                  "current_wrist_image2_latent_idx": _gpu(np.full(batch_size, -1)), "current_image2_latent_idx": _gpu(np.full(batch_size, -1)),
                  "action_latent_idx": _gpu(np.full(batch_size, 4)), "future_proprio_latent_idx": _gpu(np.full(batch_size, 5)),
                  "future_wrist_image_latent_idx": _gpu(np.full(batch_size, 6)), "future_wrist_image2_latent_idx": _gpu(np.full(batch_size, -1)),
                  "future_image_latent_idx": _gpu(np.full(batch_size, 7)), "future_image2_latent_idx": _gpu(np.full(batch_size, -1)),
                  "value_latent_idx": _gpu(np.full(batch_size, 8))}
    latent, clean = model.generate_samples_from_batch(data_batch, n_sample=batch_size, num_steps=num_denoising_steps_action, seed=seed,
                                                      is_negative_prompt=False, use_variance_scale=cfg.use_variance_scale, return_orig_clean_latent_frames=True)
    actions = latent.data[:, :, 4].reshape(batch_size, -1)[:, : cfg.chunk_size * ACTION_DIM].reshape(batch_size, cfg.chunk_size, ACTION_DIM).astype(np.float32)
    if cfg.unnormalize_actions:
        actions = unnormalize_actions(actions, dataset_stats)
    result = {}
    if generate_future_state_and_value_in_parallel:
        futures, value = _futures(latent.data, cfg), _value(latent.data)
    if batch_size > 1:
        actions = [[a[i] for i in range(len(a))] for a in actions]
        if generate_future_state_and_value_in_parallel:
            futures = [{k: v[i] for k, v in futures.items()} for i in range(batch_size)]
            value = [value[i].item() for i in range(batch_size)]
    else:
        actions = [actions[0][i] for i in range(cfg.chunk_size)]
        if generate_future_state_and_value_in_parallel:
            futures = {k: v[0] for k, v in futures.items() if v is not None}
            value = value[0].item()
    result.update(actions=actions, generated_latent=latent, orig_clean_latent_frames=clean, data_batch=data_batch,
                  latent_indices=dict(action_latent_idx=4, future_proprio_latent_idx=5, future_wrist_image_latent_idx=6, future_wrist_image2_latent_idx=-1,
                                      future_image_latent_idx=7, future_image2_latent_idx=-1, value_latent_idx=8),
                  all_camera_images=images, proprio=proprio, text_embedding=text_embedding)
    if generate_future_state_and_value_in_parallel:
        result.update(future_image_predictions=futures, value_prediction=value)
    return result


def average_future_image_predictions(pred_dicts):
    if not pred_dicts:
        return {}
    out = {}
    for key in pred_dicts[0]:
        values = [d[key] for d in pred_dicts if d.get(key) is not None]
        out[key] = np.clip(np.round(np.mean([v.astype(np.float32) for v in values], axis=0)), 0, 255).astype(np.uint8) if values else None
    return out


def get_future_state_prediction(cfg, model, data_batch, generated_latent_with_action, orig_clean_latent_frames, future_proprio_latent_idx: int,
                                future_wrist_image_latent_idx: int, future_wrist_image2_latent_idx: int, future_image_latent_idx: int,
                                future_image2_latent_idx: int, seed: int = 1, randomize_seed: bool = False, num_denoising_steps_future_state: int = 1,
                                worker_id: int = 0, batch_size: int = 1, use_ensemble_future_state_predictions: bool = False,
                                num_future_state_predictions_in_ensemble: int = 1, future_state_ensemble_aggregation_scheme: str = "last"):
    _entry("get_future_state_prediction", data_batch)
    if randomize_seed:
        seed = secrets.randbits(32) % 256
    data_batch["num_conditional_frames"] = model.config.min_num_conditional_frames + 1  # in place, as the real
    if use_ensemble_future_state_predictions:
        assert batch_size == 1, "Ensemble future state predictions only supported for batch size 1!"
        n = num_future_state_predictions_in_ensemble
        steps = np.linspace(1, num_denoising_steps_future_state, n).astype(int).tolist()
        seeds = [seed + i for i in range(n)]
    else:
        steps, seeds = [num_denoising_steps_future_state], [seed]
    samples = [model.generate_samples_from_batch(data_batch, n_sample=batch_size, num_steps=s, seed=z, is_negative_prompt=False,
                                                 use_variance_scale=cfg.use_variance_scale, skip_vae_encoding=True,
                                                 previous_generated_latent=generated_latent_with_action) for s, z in zip(steps, seeds)]
    predictions = [_futures(s.data, cfg) for s in samples]
    if use_ensemble_future_state_predictions and future_state_ensemble_aggregation_scheme.lower() == "average":
        futures = average_future_image_predictions(predictions)
    else:
        futures = predictions[-1]
    futures = {k: v[0] for k, v in futures.items() if v is not None}
    return dict(future_image_predictions=futures, future_state_samples_list=samples)


def aggregate_value_predictions(all_value_predictions, value_ensemble_aggregation_scheme: str):
    import torch  # only here: the server's direct mode needs no torch (a copy can be smoke-tested without it)

    stacked = torch.stack(all_value_predictions)
    how = value_ensemble_aggregation_scheme
    if how == "average":
        score = stacked.mean(0)
    elif how == "lcb":
        score = stacked.mean(0) - stacked.std(0)  # torch's std: unbiased
    elif how == "success_vote":
        score = (stacked > 0.05).float().mean(0)
    elif how == "majority_mean":
        above = stacked > 0.05
        n_above = above.float().sum(0)
        mean_above = torch.where(above, stacked, torch.zeros_like(stacked)).sum(0) / n_above.clamp(min=1)
        score = torch.where(n_above / stacked.shape[0] >= 0.5, mean_above, torch.zeros_like(mean_above))
    else:  # gamma_weighted_average too: named in the LIBERO config, not implemented
        raise ValueError(f"Invalid search value scheme: {how}")
    return torch.clamp(score, min=0, max=1)


def get_value_prediction(cfg, model, data_batch, future_state_samples_list, seed: int = 1, randomize_seed: bool = False, num_denoising_steps_value: int = 1,
                         worker_id: int = 0, batch_size: int = 1, use_ensemble_value_predictions: bool = False, num_value_predictions_in_ensemble: int = 1):
    _entry("get_value_prediction", data_batch)
    if randomize_seed:
        seed = secrets.randbits(32) % 256
    data_batch["num_conditional_frames"] = model.config.state_t - 1  # in place, as the real
    data_batch["mask_current_state_action_for_value_prediction"] = cfg.mask_current_state_action_for_value_prediction
    values = []
    for sample in future_state_samples_list:
        if use_ensemble_value_predictions:
            assert batch_size == 1, "Ensemble value predictions only supported for batch size 1!"
            n = num_value_predictions_in_ensemble
            schedule = zip(np.linspace(1, num_denoising_steps_value, n).astype(int).tolist(), [seed + j for j in range(n)])
        else:
            schedule = [(num_denoising_steps_value, seed)]
        for steps, member_seed in schedule:
            latent = model.generate_samples_from_batch(data_batch, n_sample=batch_size, num_steps=steps, seed=member_seed, is_negative_prompt=False,
                                                       use_variance_scale=cfg.use_variance_scale, skip_vae_encoding=True, previous_generated_latent=sample)
            values.append(_value(latent.data))
    if use_ensemble_value_predictions:
        import torch

        value = aggregate_value_predictions([torch.from_numpy(v) for v in values], cfg.value_ensemble_aggregation_scheme)
    else:
        value = values[0]
    return dict(value_prediction=[value[i].item() for i in range(batch_size)] if batch_size > 1 else value[0].item())


def get_qvalue_prediction(cfg, model, data_batch, action_sample, seed: int = 1, randomize_seed: bool = False, num_denoising_steps_value: int = 1,
                          worker_id: int = 0, batch_size: int = 1, use_ensemble_value_predictions: bool = False, num_value_predictions_in_ensemble: int = 1):
    _entry("get_qvalue_prediction", data_batch)
    data_batch["num_conditional_frames"] = model.config.min_num_conditional_frames + 1
    data_batch["mask_future_state_for_qvalue_prediction"] = cfg.mask_future_state_for_qvalue_prediction
    latent = model.generate_samples_from_batch(data_batch, n_sample=batch_size, num_steps=num_denoising_steps_value, seed=seed,
                                               skip_vae_encoding=True, previous_generated_latent=action_sample)
    return dict(future_image_predictions=None, value_prediction=_value(latent.data)[0].item())
