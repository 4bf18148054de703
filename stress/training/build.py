"""``stress train-reference``: generate the expert data, train the reference model (then DAgger rounds on its
own rollouts and a decoder stage), export the checkpoint.

Every stage resumes: shards already on disk are kept, the trainer's state is saved every
``SAVE_EVERY`` steps and picked up again (same data, seed and step budget)."""

from __future__ import annotations

import json
import platform
from contextlib import contextmanager
from dataclasses import dataclass
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from stress.core.errors import UserError
from stress.training.aloha_data import EXTRA_POSES_FROM
from stress.training.data import OWN_ROLLOUTS, PERTURBED, VARIANTS, Job, generate, plan_jobs
from stress.policies.reference.model import ALOHA, LIBERO, Architecture, Contract
from stress.training.train import DECODER_SSIM_WEIGHT, Trainer, gaussian_ssim, load_shards

TRAIN_TASKS = (("libero_spatial", 0), ("libero_spatial", 1), ("libero_object", 0), ("libero_object", 1))
TRAIN_INITS = tuple(range(40))  # shipped init states 40-49 are never trained on: the evaluation reports them apart
SAVE_EVERY = 250


@dataclass(frozen=True)
class Recipe:
    """How the shipped checkpoint was trained: ``stress train-reference``'s defaults (docs/reference-model.md)."""

    steps: int = 8000  # optimiser steps of the joint training on the expert's data
    own_steps: int = 6000  # fine-tuning steps per DAgger round (own rollouts labelled by the expert)
    own_rounds: int = 2
    # the last rounds: own rollouts on perturbed scenes (value AUROC 0.70 -> 0.78 on clean scenes, direct success
    # 83.5 -> 90.5 %; docs/reference-model.md, "Attempts")
    perturbed_rounds: int = 2
    decoder_steps: int = 2000  # the last stage: the future decoder alone, squared error + SSIM
    recon_loss: str = "l1"


RECIPE = Recipe()

# ALOHA (transfer_cube): the suite's init states 0-29 and 150 more poses from gym-aloha's own sampler (seeds 100-249);
# the suite's 30-49 are never trained on (the evaluation's held-out init states)
ALOHA_TASKS = (("aloha", 0),)
ALOHA_TRAIN_INITS = tuple(range(30)) + tuple(range(EXTRA_POSES_FROM, EXTRA_POSES_FROM + 150))
ALOHA_HELD_OUT = tuple(range(30, 50))


@dataclass(frozen=True)
class AlohaRecipe:
    """``stress train-reference --suite aloha``'s defaults: behaviour cloning on the open-loop expert's demonstrations
    (no DAgger rounds: the expert has no labels for states off its plan), then no decoder stage."""

    steps: int = 8000  # as LIBERO's first round
    decoder_steps: int = 0
    temperature: float | None = None  # the policy's default written into the checkpoint (None: DEFAULT_TEMPERATURE)


ALOHA_RECIPE = AlohaRecipe()


def aloha_jobs(tasks=ALOHA_TASKS, inits=ALOHA_TRAIN_INITS) -> list[Job]:
    """A ``demo`` on every pose, and a ``noisy`` and a ``sabotage`` episode on every other one (the failures the value
    head learns from: about a third of those fail)."""
    inits = list(inits)
    return [Job(suite, task, i, variant) for suite, task in tasks
            for variant, chosen in (("demo", inits), ("noisy", inits[::2]), ("sabotage", inits[1::2])) for i in chosen]


def is_validation(init_index: int) -> bool:
    """Episodes of every 10th init state (9, 19, ...) are kept out of training for the validation losses."""
    return init_index % 10 == 9


def train_reference(out: Path, data_root: Path, steps: int, own_steps: int = 0, seed: int = 0, workers: int = 1, tasks=TRAIN_TASKS,
                    inits=TRAIN_INITS, variants=VARIANTS, arch: Architecture = Architecture(), progress=None, save_every: int = SAVE_EVERY,
                    recon_loss: str = "l1", own_rounds: int = 1, decoder_steps: int = 0, perturbed_rounds: int = 0, contract: Contract = LIBERO,
                    temperature: float | None = None) -> Path:
    """Run the whole pipeline; returns the path of the exported checkpoint (``out/reference.pt``).

    Round 1 trains ``steps`` steps on the expert's variants. If ``own_steps`` > 0, each of ``own_rounds``
    DAgger rounds rolls the latest model out on the same init states (``policy`` shards, labelled by the
    expert) and fine-tunes on all the data so far for ``own_steps`` more steps; round r's checkpoint stays in
    ``out/round<r>/reference.pt``. ``perturbed_rounds`` more rounds follow, the same but rolled out on perturbed
    scenes (``perturbed`` shards: one physical perturbation per episode). Then ``decoder_steps`` steps train only the future decoder, with squared error
    and SSIM (``Trainer(stage="decoder")``: actions and values stay exactly the last round's).
    ``contract``: LIBERO's (``tasks`` x ``inits`` x ``variants``) or ALOHA's (``aloha_jobs``; no rounds: the open-loop
    expert cannot label the model's own states).
    progress(stage, done, total) is called as work advances."""
    if contract != LIBERO and own_steps:
        raise UserError(f"own-rollout rounds need an expert that labels any visited state; the {contract.simulator} expert is open loop: "
                        "pass --own-steps 0")
    out.mkdir(parents=True, exist_ok=True)
    rounds, perturbed = (own_rounds, perturbed_rounds) if own_steps else (0, 0)
    round_variants = [OWN_ROLLOUTS] * rounds + [PERTURBED] * perturbed
    config = {"steps": steps, "own_steps": own_steps, "own_rounds": rounds, "seed": seed, "tasks": [list(t) for t in tasks],
              "inits": list(inits), "variants": list(variants), "architecture": arch.to_dict(), "recon_loss": recon_loss,
              "decoder_steps": decoder_steps, "perturbed_rounds": perturbed, **({} if contract == LIBERO else {"contract": contract.to_dict()})}
    # a round's resume key holds what that round depends on: changing later stages reuses the finished ones
    round_key = {k: v for k, v in config.items() if k not in ("own_rounds", "decoder_steps", "perturbed_rounds")}
    timing: dict = {}
    jobs = plan_jobs(tasks, inits, variants) if contract == LIBERO else aloha_jobs(tasks, inits)
    timing["data_shards_reused"] = _generate(jobs, data_root, workers, "data", progress, timing, "data")
    cameras = contract.cameras
    train_data = load_shards([j.path(data_root) for j in jobs if not is_validation(j.init_index)], cameras)
    trainer = Trainer(train_data, arch, seed, total_steps=steps, recon_loss=recon_loss, contract=contract)
    _train(trainer, out / "round1", {**{k: v for k, v in round_key.items() if k != "own_steps"}, "round": 1}, save_every, progress, "train", timing)
    own_success: dict[str, float] = {}  # success of each round's own rollouts (the driving model, on its training inits)
    for r, variant in enumerate(round_variants, start=1):
        driver = out / f"round{r}" / "reference.pt"
        torch.save(trainer.checkpoint({"round": r}), driver)
        own = plan_jobs(tasks, inits, (variant,), driver=str(driver))
        suffix = "" if r == 1 else f"_{r}"
        stage = "own rollouts" if variant == OWN_ROLLOUTS else "perturbed rollouts"
        timing[f"own_shards_reused{suffix}"] = _generate(own, data_root, workers, stage, progress, timing, f"own_rollouts{suffix}")
        own_success[f"round{r}" if variant == OWN_ROLLOUTS else f"round{r}_perturbed"] = _success_by_variant(own, data_root)[variant]
        jobs = jobs + own
        train_data = load_shards([j.path(data_root) for j in jobs if not is_validation(j.init_index)], cameras)
        trainer = Trainer(train_data, arch, seed + r, total_steps=own_steps, start_from=trainer, recon_loss=recon_loss)
        # clean rounds keep their old key (finished folders are reused); a perturbed round names the rollouts so far
        key = {**round_key, "round": r + 1} if PERTURBED not in round_variants[:r] else {**round_key, "round": r + 1, "rollouts": round_variants[:r]}
        _train(trainer, out / f"round{r + 1}", key, save_every, progress, "fine-tune", timing)
    last = len(round_variants) + 1
    torch.save(trainer.checkpoint({"round": last}), out / f"round{last}" / "reference.pt")  # the last round's model, before the decoder stage
    val_paths = [j.path(data_root) for j in jobs if is_validation(j.init_index)]
    val_data = load_shards(val_paths, cameras) if val_paths else None
    validation_losses = evaluate_losses(trainer, val_data) if val_data else {}
    exported, decoder_report = trainer, {}
    if decoder_steps:
        exported = Trainer(train_data, arch, seed + last, total_steps=decoder_steps, start_from=trainer, stage="decoder")
        _train(exported, out / "decoder", {**config, "stage": "decoder", "ssim_weight": DECODER_SSIM_WEIGHT}, save_every, progress, "decoder", timing)
        decoder_report = {"final_train": _mean_last(exported.losses, 200),
                          "validation": {"before": future_errors(trainer, val_data), "after": future_errors(exported, val_data)} if val_data else {}}
    manifest = {
        "format": "stress-reference-manifest/1",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "config": config,
        "data": {"root": str(data_root), "episodes": len(jobs), "train_episodes": len(jobs) - len(val_paths), "validation_episodes": len(val_paths),
                 "train_decisions": len(train_data), "train_success_rate": float(train_data.success.mean()),
                 "success_rate_by_variant": _success_by_variant(jobs, data_root), "own_rollout_success": own_success,
                 "seeds": "sha256 of suite/task/init/variant (stress.training.data.Job.seed)"},
        "timing_s": timing,
        "temperature": temperature,  # the policy's default for this checkpoint (None: DEFAULT_TEMPERATURE)
        "losses": {"final_train": _mean_last(trainer.losses, 200), "validation": validation_losses, "curve": _curve(trainer.losses),
                   "decoder_stage": decoder_report},
    }
    path = out / "reference.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(exported.checkpoint(manifest, temperature=temperature), tmp)
    tmp.replace(path)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    save_loss_plot(manifest["losses"]["curve"], out / "loss_curve.png")
    return path


def _generate(jobs, data_root: Path, workers: int, stage: str, progress, timing: dict, key: str) -> int:
    """Generate the missing shards; returns how many were already there."""
    started = time.time()
    reused = sum(j.path(data_root).exists() for j in jobs)
    counter = {"done": reused}

    def shard_done(job, success):
        counter["done"] += 1
        if progress:
            progress(stage, counter["done"], len(jobs))

    generate(jobs, data_root, workers=workers, on_done=shard_done)
    timing[key] = round(time.time() - started, 1)
    return reused


def _train(trainer: Trainer, folder: Path, config: dict, save_every: int, progress, stage: str, timing: dict) -> None:
    """Train to ``trainer.total_steps``, saving the state every ``save_every`` steps; the same command again
    (same config) continues where it stopped."""
    folder.mkdir(parents=True, exist_ok=True)
    state_path, config_path = folder / "train_state.pt", folder / "train_config.json"
    if state_path.exists() and config_path.exists() and json.loads(config_path.read_text()) == config:
        trainer.load_state(state_path)
    else:
        config_path.write_text(json.dumps(config, indent=1))
    started, before = time.time(), trainer.elapsed_s
    steps = trainer.total_steps
    while trainer.step < steps:
        n = min(save_every - trainer.step % save_every, steps - trainer.step)
        trainer.train_steps(n, on_step=(lambda t: progress(stage, t.step, steps)) if progress else None)
        trainer.elapsed_s = before + time.time() - started
        trainer.save_state(state_path)
    timing[f"{folder.name}_train"] = round(trainer.elapsed_s, 1)  # a reused or resumed stage reports its saved time


def _success_by_variant(jobs, data_root: Path) -> dict[str, float]:
    outcomes: dict[str, list[bool]] = {}
    for job in jobs:
        with np.load(job.path(data_root)) as d:
            outcomes.setdefault(job.variant, []).append(bool(d["success"]))
    return {v: round(float(np.mean(o)), 3) for v, o in outcomes.items()}


def save_loss_plot(curve: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curve:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [c["step"] for c in curve]
    for key in ("actions", "proprio", "future", "value", "recon"):
        ax.plot(steps, [c[key] for c in curve], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss (window mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean_last(losses: list[dict], n: int) -> dict[str, float]:
    tail = losses[-n:]
    return {k: round(float(np.mean([x[k] for x in tail])), 4) for k in tail[0]} if tail else {}


def _curve(losses: list[dict], points: int = 40) -> list[dict]:
    """The loss curve, averaged in ``points`` windows (for the manifest and the docs' plot)."""
    if not losses:
        return []
    edges = np.linspace(0, len(losses), min(points, len(losses)) + 1).astype(int)
    return [{"step": int(b), **_mean_last(losses[a:b], b - a)} for a, b in zip(edges, edges[1:])]


@contextmanager
def _held_out(trainer: Trainer, data):
    """The trainer with its exported (EMA) weights in eval mode, on ``data`` with a fixed generator (figures
    comparable across runs and stages); its training state is restored afterwards."""
    saved_rng, saved_data = trainer.rng, trainer.data
    saved_weights = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    trainer.rng, trainer.data = np.random.default_rng(12345), data
    trainer.net.load_state_dict(trainer.ema)
    trainer.net.eval()
    try:
        yield trainer
    finally:
        trainer.rng, trainer.data = saved_rng, saved_data
        trainer.net.load_state_dict(saved_weights)
        trainer.net.train()


@torch.no_grad()
def evaluate_losses(trainer: Trainer, data, batches: int = 20) -> dict[str, float]:
    """Mean losses of the exported weights on held-out episodes."""
    with _held_out(trainer, data):
        totals = []
        for _ in range(batches):
            idx = trainer.rng.integers(0, len(data), size=trainer.batch)
            b = trainer.batch_tensors(idx, augment=False)
            n = trainer.batch * trainer.draws
            roles = trainer.roles_for(b["policy_ok"].repeat(trainer.draws))
            t = torch.sigmoid(torch.from_numpy(trainer.rng.normal(size=n)).float())
            noise = torch.from_numpy(trainer.rng.normal(size=(n, trainer.net.dim))).float()
            totals.append({k: float(v) for k, v in trainer.losses_for(b, roles, t, noise).items()})
    return {k: round(float(np.mean([x[k] for x in totals])), 4) for k in totals[0]}


@torch.no_grad()
def future_errors(trainer: Trainer, data, batches: int = 20) -> dict[str, float]:
    """Mean squared error and SSIM per camera of the exported weights' decoded true-future latent (no latent noise)
    and of the copy-current-frame baseline, on held-out episodes."""
    sums: dict[str, list[float]] = {}
    with _held_out(trainer, data):
        net = trainer.net
        for _ in range(batches):
            b = trainer.batch_tensors(trainer.rng.integers(0, len(data), size=trainer.batch), augment=False)
            _, maps = net.encode(b["cur"], b["proprio"], b["tokens"], b["offsets"])
            decoded = net.decode_future(net.encode_future(b["fut"], b["cur"]), maps, b["cur"])
            for c in trainer.cameras:
                sums.setdefault(c, []).append(float(F.mse_loss(decoded[c], b["fut"][c])))
                sums.setdefault(f"{c}_copy_frame", []).append(float(F.mse_loss(b["cur"][c], b["fut"][c])))
                sums.setdefault(f"{c}_ssim", []).append(float(gaussian_ssim(decoded[c], b["fut"][c])))
                sums.setdefault(f"{c}_copy_frame_ssim", []).append(float(gaussian_ssim(b["cur"][c], b["fut"][c])))
    return {k: round(float(np.mean(v)), 5) for k, v in sums.items()}
