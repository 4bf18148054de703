"""The reference network: one flow-matching denoiser whose roles are chosen by what is clean conditioning.

The generated vector of one decision has four parts (Cosmos Policy writes the same quantities into latent
frames of one video sequence); sizes are the checkpoint's ``Contract``'s, LIBERO's (ALOHA's) below:

==============  =========  =====================================================================
part            size       meaning
==============  =========  =====================================================================
``actions``     112 (700)  the 16 x 7 action chunk, already in [-1, 1] (50 x 14 joint positions,
                           mapped to [-1, 1] between the training data's bounds)
``proprio``     9 (14)     the future proprio a chunk later, as a normalised change from the current one
``future``      64         latent of every camera's future image (tanh-bounded, decoded with
                           the current images' features as skips, so it encodes the change)
``value``       1          value of the future state, 2v - 1 (v in [0, 1], Cosmos's meaning)
==============  =========  =====================================================================

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

FUTURE_LATENT = 64  # size of the future images' latent


@dataclass(frozen=True)
class Contract:
    """What the network reads and writes, carried by the checkpoint (``contract``): which simulator's episodes it
    drives, its cameras, chunk length, action and proprio widths, its own image resolution (inputs of any size are
    area-resized to it), the value's discount, and the size its training data was rendered at. A checkpoint without
    one (the shipped LIBERO file, older files) is LIBERO's, the defaults."""

    simulator: str = "libero"
    cameras: tuple[str, ...] = ("agentview", "wrist")
    chunk: int = 16
    action_dim: int = 7
    proprio_dim: int = 9
    image_size: int = 64
    gamma: float = 0.99
    render_size: int = 128
    # 0: the network generates every step of the chunk; k > 0: k knots (steps 0, s, 2s, ..., chunk - 1), the chunk being
    # their linear interpolation. A 50 x 14 chunk is 700 numbers, more than the denoiser's width: the velocity of 700
    # independent noise coordinates cannot pass a 384-wide layer, and the actions came out jittery (docs/reference-model.md, "ALOHA")
    knots: int = 0

    @property
    def parts(self) -> dict[str, int]:
        return {"actions": (self.knots or self.chunk) * self.action_dim, "proprio": self.proprio_dim, "future": FUTURE_LATENT, "value": 1}

    def knot_steps(self) -> np.ndarray:
        """The chunk steps the knots sit at (every step without knots)."""
        if not self.knots:
            return np.arange(self.chunk)
        return np.unique(np.r_[np.arange(0, self.chunk, self.chunk // (self.knots - 1)), self.chunk - 1])[: self.knots]

    def to_knots(self, chunks: np.ndarray) -> np.ndarray:
        """(B, chunk x action_dim) -> (B, knots x action_dim): the chunk at its knot steps."""
        if not self.knots:
            return chunks
        b = len(chunks)
        return chunks.reshape(b, self.chunk, self.action_dim)[:, self.knot_steps()].reshape(b, -1)

    def from_knots(self, knots: np.ndarray) -> np.ndarray:
        """(B, knots x action_dim) -> (B, chunk, action_dim): linear interpolation between the knots."""
        b = len(knots)
        x = knots.reshape(b, -1, self.action_dim)
        if not self.knots:
            return x
        steps = self.knot_steps()
        weights = np.stack([np.interp(np.arange(self.chunk), steps, np.eye(len(steps))[k]) for k in range(len(steps))], axis=1)  # (chunk, knots)
        return np.einsum("sk,bkd->bsd", weights, x)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "Contract":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def describe(self) -> str:
        return f"{self.simulator} ({', '.join(self.cameras)}; {self.chunk} x {self.action_dim} actions, {self.proprio_dim}-D proprio)"


LIBERO = Contract()
# ALOHA (gym-aloha): the three cameras, 50-step chunks of 14-D joint positions, the 14-D joint proprio, Cosmos
# Policy's ALOHA discount; rendered at the ALOHA runs' default 224 px. 64 px inside: a red-blob centroid of the
# area-resized top camera locates the cube to 0.05 cm on held-out init states (docs/reference-model.md, "ALOHA")
ALOHA = Contract("aloha", ("top", "left_wrist", "right_wrist"), 50, 14, 14, 64, 0.998, 224, knots=11)
CONTRACTS = {c.simulator: c for c in (LIBERO, ALOHA)}

# LIBERO's values under their old names (the LIBERO data generator, evaluation and tests read them)
IMAGE_SIZE, CAMERAS = LIBERO.image_size, LIBERO.cameras
CHUNK, ACTION_DIM, PROPRIO_DIM = LIBERO.chunk, LIBERO.action_dim, LIBERO.proprio_dim
PARTS = LIBERO.parts
GENERATED, CLEAN, ABSENT = 0, 1, 2
ROLES = {  # part -> state, per role
    "policy": {"actions": GENERATED, "proprio": GENERATED, "future": GENERATED, "value": GENERATED},
    "world": {"actions": CLEAN, "proprio": GENERATED, "future": GENERATED, "value": GENERATED},
    "value_future": {"actions": CLEAN, "proprio": CLEAN, "future": CLEAN, "value": GENERATED},
    "value_action": {"actions": CLEAN, "proprio": ABSENT, "future": ABSENT, "value": GENERATED},
}


def model_image(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """An upright uint8 HxWx3 camera image at the network's resolution (``size``: the contract's image size)."""
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


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

    def __init__(self, cin: int, channels: tuple[int, ...], out: int, image_size: int = IMAGE_SIZE):
        super().__init__()
        dims = (cin, *channels)
        self.stages = nn.ModuleList(_block(a, b) for a, b in zip(dims, dims[1:]))
        side = image_size // 2 ** len(channels)
        self.head = nn.Linear(channels[-1] * side * side, out)

    def forward(self, x: torch.Tensor):
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return self.head(x.flatten(1)), maps


class FutureDecoder(nn.Module):
    """Future latent + current images' feature maps -> every camera's future image, as a residual on the current ones.

    Upsamples 4 -> 8 -> 16 -> 32 -> 64 px (at 64 px), concatenating every camera's encoder maps at 4, 8 and 16 px
    (the 32 px skip is left out: it would triple the cost of the largest layers)."""

    def __init__(self, channels: tuple[int, ...], latent: int, width: tuple[int, ...] = (32, 16, 16, 8), image_size: int = IMAGE_SIZE,
                 n_cameras: int = len(CAMERAS)):
        super().__init__()
        side = image_size // 2 ** len(channels)
        self.side, self.top = side, channels[-1]
        self.stem = nn.Linear(latent, channels[-1] * side * side)
        skips = list(reversed(channels))[:-1] + [0]
        ups, cin = [], channels[-1]
        for skip, out in zip(skips, width):
            ups.append(nn.Sequential(nn.Conv2d(cin + n_cameras * skip, out * 4, 3, padding=1), nn.PixelShuffle(2), nn.GroupNorm(4, out), nn.SiLU()))
            cin = out
        self.ups = nn.ModuleList(ups)
        self.skips = skips
        self.out = nn.Conv2d(cin, 3 * n_cameras, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # starts as copy-the-current-frame

    def forward(self, latent: torch.Tensor, maps: list[torch.Tensor], current: torch.Tensor) -> torch.Tensor:
        x = self.stem(latent).view(-1, self.top, self.side, self.side)
        for up, skip, fmap in zip(self.ups, self.skips, list(reversed(maps))):
            x = up(torch.cat([x, fmap], dim=1) if skip else x)
        return (current + self.out(x)).clamp(0.0, 1.0)


class ReferenceNet(nn.Module):
    def __init__(self, arch: Architecture = Architecture(), contract: Contract = LIBERO):
        super().__init__()
        self.arch, self.contract = arch, contract
        self.cameras, self.parts = contract.cameras, contract.parts
        self.slices = part_slices(self.parts)
        c, e, w, size, n = arch.channels, arch.embed, arch.width, contract.image_size, len(contract.cameras)
        self.encoders = nn.ModuleDict({cam: ImageEncoder(3, c, e, size) for cam in self.cameras})
        self.text = nn.EmbeddingBag(TEXT_BUCKETS, 64, mode="mean")
        self.condition = nn.Sequential(nn.Linear(n * e + contract.proprio_dim + 64, w), nn.SiLU(), nn.Linear(w, w))
        self.future_encoder = ImageEncoder(2 * n * 3, c, FUTURE_LATENT, size)  # (future, current) of every camera
        self.decoder = FutureDecoder(c, FUTURE_LATENT, image_size=size, n_cameras=n)
        self.dim = sum(self.parts.values())
        self.inp = nn.Linear(self.dim + 3 * len(self.parts) + 64, w)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 2 * w), nn.SiLU(), nn.Linear(2 * w, w)) for _ in range(arch.blocks))
        self.films = nn.ModuleList(nn.Linear(w, 2 * w) for _ in range(arch.blocks))
        self.velocity = nn.Linear(w, self.dim)

    # --- condition ----------------------------------------------------------------------------------------
    def encode(self, images: dict[str, torch.Tensor], proprio: torch.Tensor, tokens: torch.Tensor, offsets: torch.Tensor):
        """images: camera -> (B, 3, S, S) in [0, 1] (S: the contract's image size); proprio normalised (B, proprio_dim);
        tokens/offsets: EmbeddingBag input. Returns (condition (B, width), feature maps per camera)."""
        embeddings, maps = [], {}
        for cam in self.cameras:
            emb, maps[cam] = self.encoders[cam](images[cam])
            embeddings.append(emb)
        text = self.text(tokens, offsets)
        return self.condition(torch.cat([*embeddings, proprio, text], dim=1)), maps

    def encode_future(self, future: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([torch.cat([future[c], current[c]], dim=1) for c in self.cameras], dim=1)
        return torch.tanh(self.future_encoder(x)[0])

    def decode_future(self, latent: torch.Tensor, maps: dict[str, list[torch.Tensor]], current: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cams = self.cameras
        joined = [torch.cat([maps[c][i] for c in cams], dim=1) for i in range(len(maps[cams[0]]))]
        out = self.decoder(latent, joined, torch.cat([current[c] for c in cams], dim=1))
        return {c: out[:, 3 * i : 3 * i + 3] for i, c in enumerate(cams)}

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


def part_slices(parts: dict[str, int] = PARTS) -> dict[str, slice]:
    out, start = {}, 0
    for name, size in parts.items():
        out[name] = slice(start, start + size)
        start += size
    return out


SLICES = part_slices()  # LIBERO's; a network's own: ``net.slices``


def role_states(role: str, batch: int) -> torch.Tensor:
    return torch.tensor([[ROLES[role][p] for p in PARTS]] * batch, dtype=torch.long)


def state_mask(states: torch.Tensor, which: int, parts: dict[str, int] = PARTS) -> torch.Tensor:
    """(B, dim) float mask of the coordinates whose part is in state ``which`` (``parts``: the network's sizes)."""
    sizes = torch.tensor(list(parts.values()))
    return (states == which).float().repeat_interleave(sizes, dim=1)


@torch.no_grad()
def sample(net: ReferenceNet, condition: torch.Tensor, states: torch.Tensor, clean: torch.Tensor, steps: int, noise: torch.Tensor) -> torch.Tensor:
    """Integrate the flow from ``noise`` (t=0) to data (t=1) in ``steps`` Euler steps for the generated
    parts; clean parts are held at ``clean``, absent parts at zero. One step gives the flow's mean guess."""
    gen = state_mask(states, GENERATED, net.parts)
    x = noise * gen + clean * state_mask(states, CLEAN, net.parts)
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
