"""The ranking value head's data, training and evaluation (docs/reference-model.md, "Ranking value head").

**Data.** Best-of-N planning episodes of a reference checkpoint, run by the runner's own episode loop
(``run_episode``) with its counterfactual ground truth (``Measurement(rollouts=K)``): at K decisions per episode
every candidate is continued by the direct policy to the end of the budget (common random numbers) and its true
outcome stored. The policy records each candidate's ranking features (``record_features``), so one shard per
episode holds, for its measured decisions: ``features`` (D, N, F), ``outcomes`` (D, N) 1/0, ``old_scores``
(D, N) the checkpoint's own aggregated value, ``steps`` (D,). Scenes: clean, or one physical family at a
fixed severity (``SCENES``), so that candidates' outcomes differ. Seeded by (suite, task, init, scene),
resumable (a shard on disk is skipped; written atomically), one process.

**Training.** The head (``stress.policies.reference.ranker``) on frozen features: binary cross-entropy on the
outcome plus a pairwise logistic loss over the pairs of one decision with different outcomes; full batch,
AdamW, seeded. The result is the checkpoint with the head added (format ``stress-reference/2``); the network's
weights are copied bit for bit.

**Evaluation.** ``ranking_auroc`` (stress.core.metrics) of the old score and of the head's on held-out shards,
and leave-one-init-state-out over every shard (``cross_validated``: more pairs for the same data cost).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stress.core.metrics import ranking_auroc
from stress.core.spec import PerturbationSpec, ScenarioSpec
from stress.core.stats import ranking_auroc_interval
from stress.envs.cache import EnvCache
from stress.measurement.groundtruth import Measurement
from stress.policies.cache import PolicyCache
from stress.policies.reference.model import RANKER_FORMAT
from stress.policies.reference.ranker import RANKER_KEY, RankingHead
from stress.runners.episode import run_episode
from stress.training.data import _digest, text_seed

SCENES = ("clean", "object_pose", "dynamics", "mid_chunk_push")
SEVERITY = 3  # moderate: candidates' outcomes differ without every episode failing
SCENE_TRIES = 5  # perturbation seeds tried when a drawn scene is invalid or not realised


@dataclass(frozen=True)
class RankJob:
    suite: str
    task_id: int
    init_index: int
    scene: str  # "clean" or a family of SCENES

    @property
    def seed(self) -> int:
        return text_seed(f"ranking/{self.suite}/{self.task_id}/{self.init_index}/{self.scene}")

    def path(self, root: Path, checkpoint: Path, n_candidates: int = 8, rollouts: int = 4, max_steps: int | None = None) -> Path:
        # the candidates and their features depend on the checkpoint (its digest names the folder), the outcomes on
        # the settings (in the sub-folder's name)
        setting = f"n{n_candidates}_k{rollouts}" + (f"_max{max_steps}" if max_steps else "")
        return Path(root) / _digest(str(checkpoint)) / f"{self.suite}_{self.task_id}_{setting}" / f"init{self.init_index:02d}_{self.scene}.npz"

    def spec(self, checkpoint: Path, n_candidates: int, attempt: int = 0, max_steps: int | None = None) -> ScenarioSpec:
        perturbations = () if self.scene == "clean" else (PerturbationSpec(self.scene, severity=SEVERITY, seed=self.seed % 1_000_000 + attempt),)
        return ScenarioSpec(self.suite, self.task_id, self.init_index, perturbations, policy="reference", mode="planning",
                            n_candidates=n_candidates, aggregation="average", seed=self.seed, max_steps=max_steps,
                            policy_options=(("checkpoint", str(checkpoint)), ("record_features", True)))


def plan_rank_jobs(tasks, inits, scenes=SCENES) -> list[RankJob]:
    """Jobs ordered init state first, so a capped generation covers every scene of the first init states."""
    return [RankJob(suite, task, init, scene) for init in inits for suite, task in tasks for scene in scenes]


class _FeatureHook:
    """Decision hook: keeps each planning decision's candidate features by env step."""

    def __init__(self):
        self.by_step: dict[int, np.ndarray] = {}

    def __call__(self, env, snapshot, decision) -> None:
        features = decision.info.get("ranker_features")
        if features is not None:
            self.by_step[snapshot.step] = np.asarray(features, dtype=np.float32)


def generate_shard(job: RankJob, checkpoint: Path, rollouts: int, n_candidates: int, envs: EnvCache, policies: PolicyCache,
                   max_steps: int | None = None) -> dict:
    """Run one planning episode with counterfactual rollouts; the shard's arrays."""
    for attempt in range(SCENE_TRIES):
        hook = _FeatureHook()
        spec = job.spec(checkpoint, n_candidates, attempt, max_steps)
        result = run_episode(spec, envs, policies, on_decision=hook, measurement=Measurement(true_futures="none", rollouts=rollouts))
        if not (result.error or "").startswith(("invalid_scene", "not_realised")):
            break
    by_decision: dict[int, list[dict]] = {}
    for row in result.decisions:
        if row["candidate"] >= 0 and row.get("true_outcome") is not None:
            by_decision.setdefault(row["step"], []).append(row)
    steps = sorted(s for s in by_decision if s in hook.by_step and len(by_decision[s]) == n_candidates)
    rows = [sorted(by_decision[s], key=lambda r: r["candidate"]) for s in steps]
    width = hook.by_step[steps[0]].shape[1] if steps else 0
    return {
        "features": np.stack([hook.by_step[s] for s in steps]) if steps else np.zeros((0, n_candidates, width), np.float32),
        "outcomes": np.array([[r["true_outcome"] for r in rs] for rs in rows], dtype=np.float32).reshape(len(steps), n_candidates),
        "old_scores": np.array([[r["pred_value"] for r in rs] for rs in rows], dtype=np.float32).reshape(len(steps), n_candidates),
        "steps": np.array(steps, dtype=np.int32),
        "success": np.bool_(result.success),
        "error": np.str_(result.error or ""),
        "perturbation": np.str_(json.dumps(result.perturbations, sort_keys=True, default=float)),
        "seed": np.int64(spec.seed),
        "wall_s": np.float64(result.wall_s),
        "measure_s": np.float64(result.measure_s),
    }


def generate_ranking_data(jobs: list[RankJob], root: Path, checkpoint: Path, rollouts: int = 4, n_candidates: int = 8,
                          budget_s: float | None = None, on_done=None, max_steps: int | None = None) -> list[Path]:
    """Write the shards not yet on disk (resumable), one process; stop starting new ones after ``budget_s``.
    ``max_steps``: a step budget other than the suite's (tests)."""
    start, written = time.perf_counter(), []
    envs, policies = EnvCache(1), PolicyCache()
    try:
        for job in jobs:
            path = job.path(root, checkpoint, n_candidates, rollouts, max_steps)
            if path.exists():
                continue
            if budget_s is not None and (budget_s <= 0 or time.perf_counter() - start > budget_s):
                break
            arrays = generate_shard(job, checkpoint, rollouts, n_candidates, envs, policies, max_steps)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, **arrays)
            tmp.replace(path)  # atomic: an interrupted generation leaves no half shard, and resumes
            written.append(path)
            if on_done:
                on_done(job, arrays)
    finally:
        envs.close()
    return written


def load_decisions(paths) -> list[dict]:
    """The measured decisions of shards: features (N, F), outcomes (N,), old scores (N,), and where they came from."""
    out = []
    for path in sorted(map(Path, paths)):
        with np.load(path) as shard:
            for d in range(len(shard["steps"])):
                out.append({"features": shard["features"][d], "outcomes": shard["outcomes"][d], "old_scores": shard["old_scores"][d],
                            "shard": path.name, "init": int(path.name[4:6]), "step": int(shard["steps"][d])})
    return out


def _pairs(decisions: list[dict]):
    """Index pairs (better, worse) of candidates of one decision with different outcomes, in the stacked order."""
    better, worse, offset = [], [], 0
    for d in decisions:
        y = d["outcomes"]
        for i in np.flatnonzero(y > 0.5):
            for j in np.flatnonzero(y < 0.5):
                better.append(offset + i)
                worse.append(offset + j)
        offset += len(y)
    return torch.tensor(better, dtype=torch.long), torch.tensor(worse, dtype=torch.long)


def train_head(decisions: list[dict], steps: int = 400, seed: int = 0, pair_weight: float = 1.0, hidden=(128, 64),
               weight_decay: float = 1e-2, lr: float = 1e-3) -> tuple[RankingHead, dict]:
    """Fit a head on the decisions' candidates; returns it (eval mode) and its training figures."""
    if not decisions:
        raise ValueError("no measured decisions to train the ranking head on")
    torch.manual_seed(seed)
    x = torch.from_numpy(np.concatenate([d["features"] for d in decisions])).float()
    y = torch.from_numpy(np.concatenate([d["outcomes"] for d in decisions])).float()
    head = RankingHead(x.shape[1], tuple(hidden))
    head.mean.copy_(x.mean(dim=0))
    head.std.copy_(x.std(dim=0).clamp_min(1e-3))
    better, worse = _pairs(decisions)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    head.train()
    curve = []
    for step in range(steps):
        logits = head(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        if len(better):
            loss = loss + pair_weight * torch.nn.functional.softplus(logits[worse] - logits[better]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            curve.append({"step": step, "loss": round(float(loss.detach()), 5)})
    head.eval()
    return head, {"candidates": len(y), "decisions": len(decisions), "pairs": len(better), "positives": int(y.sum()), "steps": steps,
                  "seed": seed, "pair_weight": pair_weight, "hidden": list(hidden), "weight_decay": weight_decay, "lr": lr, "curve": curve}


@torch.no_grad()
def head_scores(head: RankingHead, decisions: list[dict]) -> list[np.ndarray]:
    return [torch.sigmoid(head(torch.from_numpy(d["features"]).float())).numpy() for d in decisions]


def ranking_figures(decisions: list[dict], scores: list[np.ndarray], seed: int = 0) -> dict:
    """Within-decision ranking AUROC of ``scores`` against the outcomes, with its 95 % bootstrap interval over decisions."""
    groups = [(list(s), list(d["outcomes"])) for s, d in zip(scores, decisions)]
    return {"auroc": ranking_auroc(groups), **ranking_auroc_interval(groups, seed=seed)}


def evaluate_heads(head: RankingHead | None, decisions: list[dict], seed: int = 0) -> dict:
    """The old score's and (given one) the head's ranking figures on the same decisions."""
    out = {"old": ranking_figures(decisions, [d["old_scores"] for d in decisions], seed)}
    if head is not None:
        out["head"] = ranking_figures(decisions, head_scores(head, decisions), seed)
    return out


def cross_validated(decisions: list[dict], steps: int = 400, seed: int = 0) -> dict:
    """Leave one init state out: a head trained on the other init states' decisions scores each init state's; the
    pooled ranking figures of those out-of-fold scores beside the old score's on the same decisions."""
    inits = sorted({d["init"] for d in decisions})
    scored, kept = [], []
    for init in inits:
        train = [d for d in decisions if d["init"] != init]
        test = [d for d in decisions if d["init"] == init]
        if not any(len(set(d["outcomes"])) > 1 for d in train):
            continue  # nothing to rank from
        head, _ = train_head(train, steps=steps, seed=seed)
        scored += head_scores(head, test)
        kept += test
    return {"folds": len(inits), "old": ranking_figures(kept, [d["old_scores"] for d in kept], seed), "head": ranking_figures(kept, scored, seed)}


def save_with_head(checkpoint: Path, head: RankingHead, manifest: dict, out: Path) -> Path:
    """A copy of ``checkpoint`` (the network bit for bit) with the head added, format ``stress-reference/2``."""
    blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
    blob["format"] = RANKER_FORMAT
    blob[RANKER_KEY] = head.to_blob()
    blob["ranker_manifest"] = json.dumps(manifest, sort_keys=True, default=float)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(out)
    return out
