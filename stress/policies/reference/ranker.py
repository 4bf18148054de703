"""The optional ranking value head: a small MLP that scores best-of-N candidates over frozen features.

The reference network's own value (V(s') on predicted futures) hardly ranks the candidates of one decision
(docs/reference-model.md, "Ranking value head"). The head reads what the network already computes at a
planning decision, per candidate (``candidate_features``):

==================  ====  =====================================================================
part                size  meaning
==================  ====  =====================================================================
condition            384  the decision's condition embedding (the denoiser's width) (the same for every candidate)
actions              112  the candidate's action chunk
future                64  the mean of its ``n_futures`` predicted future latents (world model)
proprio                9  the mean of their predicted proprio changes (normalised)
ensemble               2  mean and std of its V(s') ensemble (the old score and its spread)
==================  ====  =====================================================================

and outputs a logit of "this candidate, continued by the direct policy, succeeds". It is stored as an
optional component (``RANKER_KEY``) of a ``stress-reference/2`` checkpoint; the policy and world model
are untouched, so a checkpoint with a head acts exactly as one without it except under
``value_source="ranker"``.
"""

from __future__ import annotations

import torch
from torch import nn

RANKER_KEY = "ranker"  # the checkpoint entry holding the head (state_dict, hidden sizes, feature normalisation)


def feature_size(width: int = 384) -> int:
    """Features per candidate for a network of denoiser ``width`` (the condition embedding's size)."""
    return width + 112 + 64 + 9 + 2


class RankingHead(nn.Module):
    """Normalised features -> one logit per candidate."""

    def __init__(self, features: int, hidden: tuple[int, ...] = (128, 64), dropout: float = 0.1):
        super().__init__()
        self.hidden = tuple(hidden)
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))
        layers, width = [], features
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.SiLU(), nn.Dropout(dropout)]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp((features - self.mean) / self.std)[:, 0]

    def to_blob(self) -> dict:
        return {"features": len(self.mean), "hidden": list(self.hidden), "state_dict": {k: v.detach().clone() for k, v in self.state_dict().items()}}

    @classmethod
    def from_blob(cls, blob: dict) -> "RankingHead":
        head = cls(int(blob["features"]), tuple(blob["hidden"]))
        head.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
        return head.eval()


def candidate_features(condition: torch.Tensor, actions: torch.Tensor, worlds: torch.Tensor, values: torch.Tensor, slices: dict) -> torch.Tensor:
    """(N, feature_size(width)) from the decision's condition (1, 384), the candidates' actions (N, 112), the world
    model's samples (N * nf, dim; futures of candidate i contiguous) and the V(s') ensemble (N, nf * nv)."""
    n = len(actions)
    per = worlds.float().reshape(n, -1, worlds.shape[1])
    future = per[:, :, slices["future"]].mean(dim=1)
    proprio = per[:, :, slices["proprio"]].mean(dim=1)
    values = torch.as_tensor(values, dtype=torch.float32)
    ensemble = torch.stack([values.mean(dim=1), values.std(dim=1, unbiased=False)], dim=1)
    return torch.cat([condition.float().expand(n, -1), actions.float(), future, proprio, ensemble], dim=1)
