"""The reference network: one flow-matching denoiser whose roles are chosen by what is clean conditioning.

The generated vector of one decision has four parts (Cosmos Policy writes the same quantities into latent
frames of one video sequence):

==============  ====  ==========================================================================
part            size  meaning
==============  ====  ==========================================================================
``actions``     112   the 16 x 7 action chunk (already in [-1, 1])
``proprio``       9   the future proprio 16 steps later, as a normalised change from the current one
``future``       64   latent of the future agentview + wrist images (tanh-bounded, decoded with
                      the current images' features as skips, so it encodes the change)
``value``         1   value of the future state, 2v - 1 (v in [0, 1], Cosmos's meaning)
==============  ====  ==========================================================================

Each part is *generated* (noised, predicted), *clean* (given, conditioning) or *absent* (zeroed), and the
denoiser sees which. The roles:

* policy: nothing clean -> actions, future and value sampled together;
* world model: actions clean -> future (and a value);
* V(s'): actions and future clean -> value (Cosmos's released planning value);
* Q(s, a): actions clean, future absent -> value (the variant the paper's critique asks for).

The condition (current images, proprio, instruction) is encoded once per decision. Sampling integrates the
flow from Gaussian noise (seeded ``torch.Generator``) in ``num_denoising_steps`` Euler steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from stress.policies.reference.text import TEXT_BUCKETS, instruction_tokens

CHECKPOINT_FORMAT = "stress-reference/1"  # the checkpoint files' format tag (stress.training.train writes them)
# /2: the same, plus an optional ranking value head (stress.policies.reference.ranker); both load
RANKER_FORMAT = "stress-reference/2"
CHECKPOINT_FORMATS = (CHECKPOINT_FORMAT, RANKER_FORMAT)

IMAGE_SIZE = 64  # the network's own resolution; inputs of any size are area-resized to it
CAMERAS = ("agentview", "wrist")
CHUNK, ACTION_DIM, PROPRIO_DIM = 16, 7, 9
PARTS = {"actions": CHUNK * ACTION_DIM, "proprio": PROPRIO_DIM, "future": 64, "value": 1}
GENERATED, CLEAN, ABSENT = 0, 1, 2
ROLES = {  # part -> state, per role
    "policy": {"actions": GENERATED, "proprio": GENERATED, "future": GENERATED, "value": GENERATED},
    "world": {"actions": CLEAN, "proprio": GENERATED, "future": GENERATED, "value": GENERATED},
    "value_future": {"actions": CLEAN, "proprio": CLEAN, "future": CLEAN, "value": GENERATED},
    "value_action": {"actions": CLEAN, "proprio": ABSENT, "future": ABSENT, "value": GENERATED},
}


def model_image(image: np.ndarray) -> np.ndarray:
    """An upright uint8 HxWx3 camera image at the network's resolution."""
    if image.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE):
        return np.ascontiguousarray(image)
    return cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Architecture:
    width: int = 384  # denoiser width
    blocks: int = 3  # denoiser residual blocks
    channels: tuple[int, ...] = (16, 32, 64, 64)  # image encoder stages (stride 2 each): 32, 16, 8, 4 px
    embed: int = 192  # per-camera embedding
    # dropout on the condition and the denoiser blocks, in training only. 0.1 was tried against the value head's
    # overfitting: direct success fell (docs/reference-model.md), so it is off by default
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "Architecture":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class ImageEncoder(nn.Module):
    """Strided CNN; returns the flattened embedding and the feature maps (for the future decoder's skips)."""

    def __init__(self, cin: int, channels: tuple[int, ...], out: int):
        super().__init__()
        dims = (cin, *channels)
        self.stages = nn.ModuleList(_block(a, b) for a, b in zip(dims, dims[1:]))
        side = IMAGE_SIZE // 2 ** len(channels)
        self.head = nn.Linear(channels[-1] * side * side, out)

    def forward(self, x: torch.Tensor):
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return self.head(x.flatten(1)), maps


class FutureDecoder(nn.Module):
    """Future latent + current images' feature maps -> both future images, as a residual on the current ones.

    Upsamples 4 -> 8 -> 16 -> 32 -> 64 px, concatenating both cameras' encoder maps at 4, 8 and 16 px
    (the 32 px skip is left out: it would triple the cost of the largest layers)."""

    def __init__(self, channels: tuple[int, ...], latent: int, width: tuple[int, ...] = (32, 16, 16, 8)):
        super().__init__()
        side = IMAGE_SIZE // 2 ** len(channels)
        self.side, self.top = side, channels[-1]
        self.stem = nn.Linear(latent, channels[-1] * side * side)
        skips = list(reversed(channels))[:-1] + [0]
        ups, cin = [], channels[-1]
        for skip, out in zip(skips, width):
            ups.append(nn.Sequential(nn.Conv2d(cin + 2 * skip, out * 4, 3, padding=1), nn.PixelShuffle(2), nn.GroupNorm(4, out), nn.SiLU()))
            cin = out
        self.ups = nn.ModuleList(ups)
        self.skips = skips
        self.out = nn.Conv2d(cin, 3 * len(CAMERAS), 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # starts as copy-the-current-frame

    def forward(self, latent: torch.Tensor, maps: list[torch.Tensor], current: torch.Tensor) -> torch.Tensor:
        x = self.stem(latent).view(-1, self.top, self.side, self.side)
        for up, skip, fmap in zip(self.ups, self.skips, list(reversed(maps))):
            x = up(torch.cat([x, fmap], dim=1) if skip else x)
        return (current + self.out(x)).clamp(0.0, 1.0)


class ReferenceNet(nn.Module):
    def __init__(self, arch: Architecture = Architecture()):
        super().__init__()
        self.arch = arch
        c, e, w = arch.channels, arch.embed, arch.width
        self.encoders = nn.ModuleDict({cam: ImageEncoder(3, c, e) for cam in CAMERAS})
        self.text = nn.EmbeddingBag(TEXT_BUCKETS, 64, mode="mean")
        self.condition = nn.Sequential(nn.Linear(2 * e + PROPRIO_DIM + 64, w), nn.SiLU(), nn.Linear(w, w))
        self.future_encoder = ImageEncoder(4 * 3, c, PARTS["future"])  # (future, current) of both cameras
        self.decoder = FutureDecoder(c, PARTS["future"])
        self.dim = sum(PARTS.values())
        self.inp = nn.Linear(self.dim + 3 * len(PARTS) + 64, w)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 2 * w), nn.SiLU(), nn.Linear(2 * w, w)) for _ in range(arch.blocks))
        self.films = nn.ModuleList(nn.Linear(w, 2 * w) for _ in range(arch.blocks))
        self.velocity = nn.Linear(w, self.dim)

    # --- condition ----------------------------------------------------------------------------------------
    def encode(self, images: dict[str, torch.Tensor], proprio: torch.Tensor, tokens: torch.Tensor, offsets: torch.Tensor):
        """images: camera -> (B, 3, 64, 64) in [0, 1]; proprio normalised (B, 9); tokens/offsets: EmbeddingBag input.
        Returns (condition (B, width), feature maps per camera)."""
        embeddings, maps = [], {}
        for cam in CAMERAS:
            emb, maps[cam] = self.encoders[cam](images[cam])
            embeddings.append(emb)
        text = self.text(tokens, offsets)
        return self.condition(torch.cat([*embeddings, proprio, text], dim=1)), maps

    def encode_future(self, future: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([torch.cat([future[c], current[c]], dim=1) for c in CAMERAS], dim=1)
        return torch.tanh(self.future_encoder(x)[0])

    def decode_future(self, latent: torch.Tensor, maps: dict[str, list[torch.Tensor]], current: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        joined = [torch.cat([maps[c][i] for c in CAMERAS], dim=1) for i in range(len(maps[CAMERAS[0]]))]
        out = self.decoder(latent, joined, torch.cat([current[c] for c in CAMERAS], dim=1))
        return {c: out[:, 3 * i : 3 * i + 3] for i, c in enumerate(CAMERAS)}

    # --- denoiser -----------------------------------------------------------------------------------------
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, states: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Velocity of the flow at (x_t, t). states: (B, n_parts) long in {GENERATED, CLEAN, ABSENT}."""
        state_onehot = F.one_hot(states, 3).flatten(1).float()
        freqs = torch.exp(torch.linspace(0, 6, 32, device=t.device))
        t_embed = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], dim=1)
        h = self.inp(torch.cat([x_t, state_onehot, t_embed], dim=1))
        condition = F.dropout(condition, self.arch.dropout, self.training)
        for block, film in zip(self.blocks, self.films):
            scale, shift = film(condition).chunk(2, dim=1)
            h = h + F.dropout(block(h * (1 + scale) + shift), self.arch.dropout, self.training)
        return self.velocity(h)


def part_slices() -> dict[str, slice]:
    out, start = {}, 0
    for name, size in PARTS.items():
        out[name] = slice(start, start + size)
        start += size
    return out


SLICES = part_slices()


def role_states(role: str, batch: int) -> torch.Tensor:
    return torch.tensor([[ROLES[role][p] for p in PARTS]] * batch, dtype=torch.long)


def state_mask(states: torch.Tensor, which: int) -> torch.Tensor:
    """(B, dim) float mask of the coordinates whose part is in state ``which``."""
    sizes = torch.tensor(list(PARTS.values()))
    return (states == which).float().repeat_interleave(sizes, dim=1)


@torch.no_grad()
def sample(net: ReferenceNet, condition: torch.Tensor, states: torch.Tensor, clean: torch.Tensor, steps: int, noise: torch.Tensor) -> torch.Tensor:
    """Integrate the flow from ``noise`` (t=0) to data (t=1) in ``steps`` Euler steps for the generated
    parts; clean parts are held at ``clean``, absent parts at zero. One step gives the flow's mean guess."""
    gen = state_mask(states, GENERATED)
    x = noise * gen + clean * state_mask(states, CLEAN)
    for i in range(steps):
        t = torch.full((len(x),), i / steps)
        x = x + gen * net(x, t, states, condition) / steps
    return x


def to_tensor_images(images: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, -3))).float() / 255.0


def text_batch(instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = [instruction_tokens(t) for t in instructions]
    offsets = np.cumsum([0] + [len(t) for t in tokens[:-1]])
    return torch.tensor([w for t in tokens for w in t], dtype=torch.long), torch.tensor(offsets, dtype=torch.long)
