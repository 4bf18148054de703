"""The reference model's instruction encoder without the network: its hashed bag of words and, read from a
checkpoint, the text embedding it conditions on (``ReferenceNet.text``: an ``EmbeddingBag`` in mean mode, so an
instruction's embedding is the mean of its words' rows). The language-sensitivity table reports the cosine
distance between the task's instruction and the one told, as the model itself embeds them, beside the edit
distance; importing this module costs no torch (only reading a checkpoint does)."""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

TEXT_BUCKETS = 1024
SHIPPED_CHECKPOINT = Path(__file__).parent / "weights" / "reference.pt"
# the default checkpoint per simulator, and the environment variable that overrides it
SHIPPED_CHECKPOINTS = {"libero": SHIPPED_CHECKPOINT, "aloha": SHIPPED_CHECKPOINT.with_name("reference-aloha.pt")}
CHECKPOINT_VARIABLES = {"libero": "STRESS_REFERENCE_CHECKPOINT", "aloha": "STRESS_REFERENCE_CHECKPOINT_ALOHA"}
TEXT_WEIGHT = "text.weight"  # the EmbeddingBag's rows in the checkpoint's state_dict


def checkpoint_path(simulator: str = "libero") -> Path:
    """The default checkpoint of a simulator's episodes (its environment variable, else the shipped file)."""
    if simulator not in SHIPPED_CHECKPOINTS:
        return SHIPPED_CHECKPOINT  # no contract for it: the policy's contract check names the mismatch
    return Path(os.environ.get(CHECKPOINT_VARIABLES[simulator], SHIPPED_CHECKPOINTS[simulator]))


def instruction_tokens(instruction: str) -> list[int]:
    """Hashed bag of words (stable across processes): unseen instructions still map to known words."""
    words = re.findall(r"[a-z0-9]+", instruction.lower())
    return [int.from_bytes(hashlib.md5(w.encode()).digest()[:4], "little") % TEXT_BUCKETS for w in words] or [0]


@lru_cache(maxsize=4)
def _text_rows(path: str) -> np.ndarray | None:
    import torch  # heavy: loaded only when an embedding is asked for, so `stress show` without one stays light

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return blob["state_dict"][TEXT_WEIGHT].float().numpy()
    except Exception:  # a missing, corrupt or foreign checkpoint: no encoder at hand (the policy itself says why when run)
        return None


def instruction_embeddings(texts: list[str], checkpoint: Path | None = None) -> np.ndarray | None:
    """(len(texts), 64) embeddings of ``texts`` by the checkpoint's text encoder; None when it cannot be read."""
    rows = _text_rows(str(checkpoint or checkpoint_path()))
    if rows is None:
        return None
    return np.stack([rows[instruction_tokens(t)].mean(axis=0) for t in texts])


def embedding_distance(a: str, b: str, checkpoint: Path | None = None) -> float | None:
    """Cosine distance (0 = same direction, up to 2) between two instructions as the model embeds them."""
    emb = instruction_embeddings([a, b], checkpoint)
    if emb is None:
        return None
    norms = np.linalg.norm(emb, axis=1)
    if not norms.all():
        return None
    return round(max(0.0, float(1.0 - emb[0] @ emb[1] / (norms[0] * norms[1]))), 4)
