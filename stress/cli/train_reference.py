"""``stress train-reference``: generate expert data and train the built-in reference model (CPU), by default with
the shipped checkpoint's recipe (stress.training.build.RECIPE)."""

from __future__ import annotations

import shutil
from pathlib import Path

from stress.cli import evaluate_reference, parse_args
from stress.cli.args import int_list_in, non_negative_int, positive_int
from stress.cli.common import stage_progress
from stress.core.errors import choice_error
from stress.policies.reference.policy import SHIPPED_CHECKPOINT
from stress.training.build import RECIPE, TRAIN_TASKS, train_reference
from stress.training.train import RECON_LOSSES


def add_arguments(train) -> None:
    train.add_argument("--steps", type=positive_int, default=RECIPE.steps, help=f"optimiser steps (default {RECIPE.steps})")
    train.add_argument("--own-steps", type=non_negative_int, default=RECIPE.own_steps,
                       help=f"steps of each DAgger round on the model's own rollouts; 0 skips the rounds (default {RECIPE.own_steps})")
    train.add_argument("--own-rounds", type=positive_int, default=RECIPE.own_rounds,
                       help=f"DAgger rounds, each rolling the latest model out and fine-tuning --own-steps steps (default {RECIPE.own_rounds})")
    train.add_argument("--perturbed-rounds", type=non_negative_int, default=RECIPE.perturbed_rounds,
                       help=f"DAgger rounds after --own-rounds, rolled out on perturbed scenes (object pose, robot init, dynamics, pushes; default {RECIPE.perturbed_rounds})")
    train.add_argument("--recon-loss", default=RECIPE.recon_loss, help=f"future autoencoder loss of the joint training: l1 (the shipped model) or mse (default {RECIPE.recon_loss})")
    train.add_argument("--decoder-steps", type=non_negative_int, default=RECIPE.decoder_steps,
                       help=f"steps of the last stage, which trains only the future decoder (squared error + SSIM; actions and values unchanged); 0 skips it (default {RECIPE.decoder_steps})")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--workers", type=positive_int, default=2, help="simulator processes for data generation (default 2)")
    train.add_argument("--inits", type=int_list_in(0, 49), default="0-39", help="shipped init states to generate data from (default 0-39; 40-49 stay held out)")
    train.add_argument("--out", type=Path, default=Path("results") / "reference", help="checkpoint, manifest and resumable state (default results/reference)")
    train.add_argument("--data", type=Path, default=Path("results") / "data" / "reference", help="expert data shards (default results/data/reference)")
    train.add_argument("--evaluate", action="store_true", help="afterwards, run evaluate-reference on the new checkpoint")
    train.add_argument("--ship", action="store_true", help="copy the new checkpoint and manifest into the package (the default model)")


def run(args) -> int:
    if args.recon_loss not in RECON_LOSSES:
        raise choice_error("--recon-loss", args.recon_loss, RECON_LOSSES)
    update, bars = stage_progress()
    with bars:
        checkpoint = train_reference(args.out, args.data, args.steps, own_steps=args.own_steps, seed=args.seed, workers=args.workers, inits=tuple(args.inits),
                                     progress=update, recon_loss=args.recon_loss, own_rounds=args.own_rounds,
                                     decoder_steps=args.decoder_steps, perturbed_rounds=args.perturbed_rounds)
    print(f"checkpoint: {checkpoint} ({checkpoint.stat().st_size / 1e6:.1f} MB), manifest: {args.out / 'manifest.json'}")
    if args.ship:
        SHIPPED_CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, SHIPPED_CHECKPOINT)
        shutil.copyfile(args.out / "manifest.json", SHIPPED_CHECKPOINT.with_name("manifest.json"))
        print(f"shipped: {SHIPPED_CHECKPOINT}")
    if args.evaluate:
        evaluation = parse_args(["evaluate-reference", "--checkpoint", str(checkpoint), "--workers", str(args.workers)])
        evaluate_reference.run(evaluation, tasks=TRAIN_TASKS)
    return 0
