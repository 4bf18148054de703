"""Training of the reference model from the expert's shards (``data.py``): seeded, resumable, CPU first.

Per batch, each sample gets one role (policy / world / value_future / value_action, see ``model.py``) and
is trained with the flow-matching loss on its generated parts; the future-image autoencoder (future
encoder + decoder on the current images' features) is trained alongside with the ``RECON_LOSSES`` loss
chosen by ``recon_loss``. The future latent the flow learns is the (detached) future encoder's output.
A last, ``decoder`` stage trains only the decoder further (``decoder_loss``), everything else frozen.

* the policy role learns the expert's clean plan (label actions); samples whose label is no expert plan
  (sabotage chunks) or whose executed chunk differs on purpose from the plan (``slow``) are not used
  for it;
* the world and value roles learn from the *executed* actions, i.e. what really produced the future.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from stress.training.data import GAMMA, discounted_values
from stress.policies.reference.model import (CHECKPOINT_FORMAT, LIBERO, Architecture, Contract, ReferenceNet, GENERATED, role_states, state_mask, text_batch,
                                             to_tensor_images)

ROLE_SHARES = {"policy": 0.4, "world": 0.25, "value_future": 0.2, "value_action": 0.15}
PART_WEIGHTS = {"actions": 1.0, "proprio": 0.5, "future": 1.0, "value": 1.0}
# future autoencoder loss. "l1" (the shipped model): best direct success, but its per-pixel optimum (the median) is
# "no change" where the arm covers few pixels, so the agentview future ties copy-frame. "mse" x 10 (the squared
# error is ~0.003): both cameras beat copy-frame, but direct success fell (docs/reference-model.md, "Attempts")
RECON_LOSSES = {"l1": (F.l1_loss, 1.0), "mse": (F.mse_loss, 10.0)}
# the decoder stage (``Trainer(stage="decoder")``): after the joint training, only the future decoder is trained
# further, on frozen encoders and latents, so the policy, the world model's latents and the values stay bit for bit
# (the L1 recipe's direct success is kept). Its loss: the squared error, whose optimum (the mean future) beats
# copy-frame on agentview PSNR where L1's (the median: "no change") ties, plus an SSIM term, which keeps the wrist
# camera's SSIM that the squared error alone lowers. Weights 0.3 and 1 pulled agentview back to copy-frame
# (docs/reference-model.md, "Attempts")
DECODER_SSIM_WEIGHT = 0.1


def gaussian_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of (B, 3, H, W) images in [0, 1], differentiable; the same window and constants as
    ``stress.core.metrics.ssim`` (11 x 11 Gaussian, sigma 1.5, K1 0.01, K2 0.03, reflected borders)."""
    g = torch.exp(-((torch.arange(11, dtype=x.dtype) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    channels = x.shape[1]

    def blur(img):
        img = F.pad(img, (5, 5, 5, 5), mode="reflect")
        img = F.conv2d(img, g.view(1, 1, 1, 11).repeat(channels, 1, 1, 1), groups=channels)
        return F.conv2d(img, g.view(1, 1, 11, 1).repeat(channels, 1, 1, 1), groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean()


def decoder_loss(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return RECON_LOSSES["mse"][1] * F.mse_loss(predicted, true) + DECODER_SSIM_WEIGHT * (1 - gaussian_ssim(predicted, true))

LATENT_NOISE = 0.1  # the decoder is trained on noisy latents, so sampled latents decode sensibly
# random-shift augmentation, pixels per camera. None for the wrist camera: it is rigid on the gripper, so where
# the object sits in its image *is* the grasp alignment the policy must read (a 4 px shift is ~1 cm there).
# None on ALOHA's cameras either (absent here): its open-loop plan is a function of where the cube is on the table,
# and a 2 px shift of the top camera is 4 cm there
SHIFT = {"agentview": 2, "wrist": 0}


@dataclass
class Dataset:
    """All decisions of all shards, as arrays (images uint8, N x cameras x S x S x 3)."""

    current: np.ndarray
    future: np.ndarray
    proprio: np.ndarray
    future_proprio: np.ndarray
    label_actions: np.ndarray
    executed_actions: np.ndarray
    policy_ok: np.ndarray
    value: np.ndarray
    success: np.ndarray  # the episode's eventual success, per decision
    instruction: np.ndarray  # index into instructions
    episode: np.ndarray
    instructions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.value)

    def subset(self, mask: np.ndarray) -> "Dataset":
        kw = {k: getattr(self, k)[mask] for k in self.__dataclass_fields__ if k != "instructions"}
        return Dataset(instructions=self.instructions, **kw)


def load_shards(paths: list[Path], cameras: tuple[str, ...] = LIBERO.cameras) -> Dataset:
    """Every decision of the shards. LIBERO's shards hold one entry per decision plus the last future (decision i's
    future is entry i + 1); ALOHA's name each decision's future entry (``future_index``) and their discount (``gamma``)."""
    cols = {k: [] for k in Dataset.__dataclass_fields__ if k != "instructions"}
    instructions: list[str] = []
    for e, path in enumerate(paths):
        with np.load(path) as d:
            images = np.stack([d[c] for c in cameras], axis=1)  # (entries, cameras, H, W, 3)
            n = len(d["label_actions"])
            now = np.arange(n)
            then = d["future_index"] if "future_index" in d.files else now + 1
            gamma = float(d["gamma"]) if "gamma" in d.files else GAMMA
            if str(d["instruction"]) not in instructions:
                instructions.append(str(d["instruction"]))
            cols["current"].append(images[now])
            cols["future"].append(images[then])
            cols["proprio"].append(d["proprio"][now])
            cols["future_proprio"].append(d["proprio"][then])
            cols["label_actions"].append(d["label_actions"].reshape(n, -1))
            cols["executed_actions"].append(d["executed_actions"].reshape(n, -1))
            cols["policy_ok"].append(d["label_valid"] & (str(d["variant"]) != "slow"))
            cols["value"].append(discounted_values(d["decision_steps"][then], bool(d["success"]), int(d["success_step"]), gamma))
            cols["success"].append(np.full(n, bool(d["success"])))
            cols["instruction"].append(np.full(n, instructions.index(str(d["instruction"]))))
            cols["episode"].append(np.full(n, e))
    return Dataset(instructions=instructions, **{k: np.concatenate(v) for k, v in cols.items()})


def normalisation(data: Dataset, contract: Contract = LIBERO) -> dict[str, list[float]]:
    """Proprio mean and std, the std of its change over a chunk, and (for absolute actions, every contract but LIBERO's,
    whose actions are already in [-1, 1]) each action dimension's bounds, which the network's [-1, 1] maps to."""
    delta = data.future_proprio - data.proprio
    out = {
        "proprio_mean": data.proprio.mean(0).tolist(),
        "proprio_std": (data.proprio.std(0) + 1e-3).tolist(),
        "delta_std": (delta.std(0) + 1e-3).tolist(),
    }
    if contract != LIBERO:
        actions = data.label_actions.reshape(-1, contract.action_dim)
        low, high = actions.min(0), actions.max(0)
        margin = 0.05 * (high - low) + 1e-3  # a little room beyond the demonstrations
        out["action_low"], out["action_high"] = (low - margin).tolist(), (high + margin).tolist()
    return out


def normalise_actions(actions: np.ndarray, norm: dict) -> np.ndarray:
    """(B, chunk x action_dim) actions into the network's [-1, 1] (identity without bounds: LIBERO)."""
    if "action_low" not in norm:
        return actions
    low, high = np.asarray(norm["action_low"], np.float32), np.asarray(norm["action_high"], np.float32)
    flat = actions.reshape(len(actions), -1, len(low))
    return (2.0 * (flat - low) / (high - low) - 1.0).reshape(actions.shape).astype(np.float32)


def _shift(current: np.ndarray, future: np.ndarray, rng: np.random.Generator, cameras: tuple[str, ...] = LIBERO.cameras) -> tuple[np.ndarray, np.ndarray]:
    """The same random shift (``SHIFT`` px per camera) for a sample's current and future image (B, cameras, H, W, 3)."""
    b, cams, h, w, _ = current.shape
    out_c, out_f = current.copy(), future.copy()
    for c, camera in enumerate(cameras):
        pad = SHIFT.get(camera, 0)
        if not pad:
            continue
        widths = ((0, 0), (pad, pad), (pad, pad), (0, 0))
        pc, pf = np.pad(current[:, c], widths, mode="edge"), np.pad(future[:, c], widths, mode="edge")
        offsets = rng.integers(0, 2 * pad + 1, size=(b, 2))
        for i, (y, x) in enumerate(offsets):
            out_c[i, c] = pc[i, y : y + h, x : x + w]
            out_f[i, c] = pf[i, y : y + h, x : x + w]
    return out_c, out_f


class Trainer:
    def __init__(self, data: Dataset, arch: Architecture, seed: int, total_steps: int = 1000, lr: float = 3e-4, batch: int = 32, draws: int = 4,
                 start_from: "Trainer | None" = None, recon_loss: str = "l1", stage: str = "joint", contract: Contract = LIBERO):
        """start_from: continue from another trainer's weights (EMA included) and normalisation (a fine-tuning round).
        stage: "joint" (every part, the flow and the future autoencoder) or "decoder" (only the future decoder, from
        ``start_from``'s exported weights, with ``decoder_loss``)."""
        if stage not in ("joint", "decoder") or (stage == "decoder" and start_from is None):
            raise ValueError(f"stage {stage!r} invalid; valid: joint, or decoder with start_from")
        self.data, self.arch, self.seed, self.batch = data, arch, seed, batch
        self.total_steps, self.base_lr = total_steps, lr
        self.recon_loss, self.recon_weight = RECON_LOSSES[recon_loss]
        self.stage = stage
        self.draws = draws  # flow samples (role, time, noise) per encoded sample: the CNNs cost most, the denoiser little
        self.contract = contract if start_from is None else start_from.contract
        torch.manual_seed(seed)
        self.net = ReferenceNet(arch, self.contract)
        self.cameras = self.net.cameras
        self.norm = normalisation(data, self.contract) if start_from is None else start_from.norm
        if start_from is not None:  # the decoder stage starts from the exported weights: the frozen parts stay exactly those
            self.net.load_state_dict(start_from.ema if stage == "decoder" else start_from.net.state_dict())
        trained = self.net.decoder if stage == "decoder" else self.net
        self.opt = torch.optim.AdamW(trained.parameters(), lr=lr, weight_decay=1e-4)
        # keys of the exported state the EMA follows (frozen parts are copied as they are)
        self.ema_keys = {f"decoder.{k}" for k in self.net.decoder.state_dict()} if stage == "decoder" else set(self.net.state_dict())
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.elapsed_s = 0.0  # training time so far, over resumes (older saved states lack it: 0)
        self.losses: list[dict[str, float]] = []
        # exponential moving average of the weights: what is exported (smoother samples than the raw weights)
        source = start_from.ema if start_from is not None else self.net.state_dict()
        self.ema = {k: v.detach().clone() for k, v in source.items()}

    def learning_rate(self) -> float:
        """Linear warm-up over 200 steps, then cosine decay to 10 % of the base rate."""
        warm = min(1.0, (self.step + 1) / 200)
        progress = min(1.0, self.step / max(1, self.total_steps))
        return float(self.base_lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress))))  # a Python float: the saved state must load weights-only

    @torch.no_grad()
    def _update_ema(self, decay: float = 0.999) -> None:
        decay = min(decay, (1 + self.step) / (10 + self.step))  # early on, follow the weights closely
        for k, v in self.net.state_dict().items():
            if k not in self.ema_keys:
                continue
            if v.is_floating_point():
                self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.ema[k].copy_(v)

    def batch_tensors(self, idx: np.ndarray, augment: bool) -> dict:
        d = self.data
        current, future = d.current[idx], d.future[idx]
        if augment:
            current, future = _shift(current, future, self.rng, self.cameras)
        cur = {c: to_tensor_images(current[:, i]) for i, c in enumerate(self.cameras)}
        fut = {c: to_tensor_images(future[:, i]) for i, c in enumerate(self.cameras)}
        mean, std = torch.tensor(self.norm["proprio_mean"]), torch.tensor(self.norm["proprio_std"])
        proprio = (torch.from_numpy(d.proprio[idx]) - mean) / std
        delta = torch.from_numpy(d.future_proprio[idx] - d.proprio[idx]) / torch.tensor(self.norm["delta_std"])
        tokens, offsets = text_batch([d.instructions[i] for i in d.instruction[idx]])
        return {"cur": cur, "fut": fut, "proprio": proprio, "delta": delta, "tokens": tokens, "offsets": offsets,
                "label": torch.from_numpy(self.contract.to_knots(normalise_actions(d.label_actions[idx], self.norm))),
                "executed": torch.from_numpy(self.contract.to_knots(normalise_actions(d.executed_actions[idx], self.norm))),
                "value": torch.from_numpy(d.value[idx]) * 2 - 1, "policy_ok": torch.from_numpy(d.policy_ok[idx])}

    def roles_for(self, policy_ok: torch.Tensor) -> list[str]:
        names, shares = list(ROLE_SHARES), np.array(list(ROLE_SHARES.values()))
        roles = list(self.rng.choice(names, size=len(policy_ok), p=shares))
        return [r if (r != "policy" or ok) else "world" for r, ok in zip(roles, policy_ok.tolist())]

    def decoder_losses(self, b: dict) -> dict[str, torch.Tensor]:
        """The decoder stage's loss (``decoder_loss``) of the decoded (noisy) latent of the true future, encoders frozen."""
        net = self.net
        with torch.no_grad():
            _, maps = net.encode(b["cur"], b["proprio"], b["tokens"], b["offsets"])
            latent = net.encode_future(b["fut"], b["cur"])
        recon = net.decode_future(latent + LATENT_NOISE * torch.randn_like(latent), maps, b["cur"])
        out = {f"recon_{c}": decoder_loss(recon[c], b["fut"][c]) for c in self.cameras}
        out["total"] = sum(out.values()) / len(self.cameras)
        return out

    def losses_for(self, b: dict, roles: list[str], t: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        net = self.net
        condition, maps = net.encode(b["cur"], b["proprio"], b["tokens"], b["offsets"])
        latent = net.encode_future(b["fut"], b["cur"])
        recon = net.decode_future(latent + LATENT_NOISE * torch.randn_like(latent), maps, b["cur"])
        recon_loss = self.recon_weight * sum(self.recon_loss(recon[c], b["fut"][c]) for c in self.cameras) / len(self.cameras)
        r = len(roles) // len(condition)
        rep = lambda x: x.repeat(r, *([1] * (x.dim() - 1)))
        condition = rep(condition)
        is_policy = torch.tensor([role == "policy" for role in roles])[:, None]
        actions = torch.where(is_policy, rep(b["label"]), rep(b["executed"]))
        x1 = torch.cat([actions, rep(b["delta"]), rep(latent.detach()), rep(b["value"])[:, None]], dim=1)
        states = torch.cat([role_states(r, 1) for r in roles])
        gen, clean = state_mask(states, GENERATED, net.parts), state_mask(states, 1, net.parts)
        x_t = ((1 - t[:, None]) * noise + t[:, None] * x1) * gen + x1 * clean
        v = net(x_t, t, states, condition)
        err = (v - (x1 - noise)) ** 2 * gen
        out = {"recon": recon_loss}
        for name, sl in net.slices.items():
            weight = gen[:, sl].sum()
            out[name] = err[:, sl].sum() / weight.clamp(min=1.0)
        out["total"] = recon_loss + sum(PART_WEIGHTS[p] * out[p] for p in net.parts)
        return out

    def train_steps(self, n: int, on_step=None) -> None:
        self.net.train()
        for _ in range(n):
            idx = self.rng.integers(0, len(self.data), size=self.batch)
            b = self.batch_tensors(idx, augment=True)
            if self.stage == "decoder":
                losses = self.decoder_losses(b)
            else:
                n = self.batch * self.draws
                roles = self.roles_for(b["policy_ok"].repeat(self.draws))
                t = torch.sigmoid(torch.from_numpy(self.rng.normal(0.0, 1.0, size=n)).float())  # logit-normal times
                noise = torch.from_numpy(self.rng.normal(size=(n, self.net.dim))).float()
                losses = self.losses_for(b, roles, t, noise)
            for group in self.opt.param_groups:
                group["lr"] = self.learning_rate()
            self.opt.zero_grad()
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], 1.0)
            self.opt.step()
            self.step += 1
            self._update_ema()
            self.losses.append({k: float(v.detach()) for k, v in losses.items()})
            if on_step:
                on_step(self)

    # --- checkpoints: plain tensors and JSON-able metadata only (loadable with weights_only=True) ---------
    def checkpoint(self, manifest: dict, half: bool = True, temperature: float | None = None) -> dict:
        """The exported file; ``temperature``: the policy's default sampling temperature for it (None: the policy's own)."""
        state = {k: (v.half() if half and v.is_floating_point() else v.clone()) for k, v in self.ema.items()}
        return {**({"temperature": float(temperature)} if temperature is not None else {}),"format": CHECKPOINT_FORMAT, "architecture": self.arch.to_dict(), "contract": self.contract.to_dict(), "normalisation": self.norm,
                "instructions": self.data.instructions, "state_dict": state, "manifest": json.dumps(manifest)}

    def save_state(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save({"net": self.net.state_dict(), "ema": self.ema, "opt": self.opt.state_dict(), "step": self.step,
                    "rng": json.dumps(self.rng.bit_generator.state), "losses": json.dumps(self.losses), "torch_rng": torch.get_rng_state(),
                    "elapsed_s": self.elapsed_s}, tmp)
        tmp.replace(path)

    def load_state(self, path: Path) -> None:
        state = torch.load(path, weights_only=True)
        self.net.load_state_dict(state["net"])
        self.ema = {k: v.clone() for k, v in state["ema"].items()}
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.losses = json.loads(state["losses"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        torch.set_rng_state(state["torch_rng"])
