"""``stress train-reference``: generate expert data and train the built-in reference model (CPU), by default with
the shipped checkpoint's recipe (stress.training.build.RECIPE)."""

from __future__ import annotations

import shutil
from pathlib import Path

from stress.cli import evaluate_reference, parse_args
from stress.cli.args import int_list, non_negative_int, positive_int
from stress.cli.common import stage_progress
from stress.core.errors import UserError, choice_error
from stress.policies.reference.model import CONTRACTS
from stress.policies.reference.policy import SHIPPED_CHECKPOINTS
from stress.training.aloha_data import EXTRA_POSES_FROM
from stress.training.build import ALOHA_HELD_OUT, ALOHA_RECIPE, ALOHA_TASKS, ALOHA_TRAIN_INITS, RECIPE, TRAIN_TASKS, train_reference
from stress.training.train import RECON_LOSSES

SUITES = ("libero", "aloha")  # LIBERO: the 4 tasks of TRAIN_TASKS; aloha: transfer_cube


def add_arguments(train) -> None:
    train.add_argument("--suite", default="libero", help="libero (the 4 LIBERO tasks; default) or aloha (transfer_cube, ALOHA's contract: "
                       "three cameras, 50 x 14 joint-position chunks; its own defaults below)")
    train.add_argument("--steps", type=positive_int, help=f"optimiser steps (default {RECIPE.steps}; aloha: {ALOHA_RECIPE.steps})")
    train.add_argument("--own-steps", type=non_negative_int,
                       help=f"steps of each DAgger round on the model's own rollouts; 0 skips the rounds (default {RECIPE.own_steps}; aloha: 0, "
                       "its expert is open loop)")
    train.add_argument("--own-rounds", type=positive_int, default=RECIPE.own_rounds,
                       help=f"DAgger rounds, each rolling the latest model out and fine-tuning --own-steps steps (default {RECIPE.own_rounds})")
    train.add_argument("--perturbed-rounds", type=non_negative_int, default=RECIPE.perturbed_rounds,
                       help=f"DAgger rounds after --own-rounds, rolled out on perturbed scenes (object pose, robot init, dynamics, pushes; default {RECIPE.perturbed_rounds})")
    train.add_argument("--recon-loss", default=RECIPE.recon_loss, help=f"future autoencoder loss of the joint training: l1 (the shipped model) or mse (default {RECIPE.recon_loss})")
    train.add_argument("--decoder-steps", type=non_negative_int,
                       help=f"steps of the last stage, which trains only the future decoder (squared error + SSIM; actions and values unchanged); 0 skips it "
                       f"(default {RECIPE.decoder_steps}; aloha: {ALOHA_RECIPE.decoder_steps})")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--workers", type=positive_int, default=2, help="simulator processes for data generation (default 2)")
    train.add_argument("--inits", type=int_list, help="init states to generate data from (default 0-39, 40-49 stay held out; aloha: 0-29 and "
                       f"training-only poses {EXTRA_POSES_FROM}-{EXTRA_POSES_FROM + 149}, 30-49 stay held out)")
    train.add_argument("--out", type=Path, help="checkpoint, manifest and resumable state (default results/reference; aloha: results/reference-aloha)")
    train.add_argument("--data", type=Path, help="expert data shards (default results/data/reference; aloha: results/data/reference-aloha)")
    train.add_argument("--evaluate", action="store_true", help="afterwards, run evaluate-reference on the new checkpoint")
    train.add_argument("--ship", action="store_true", help="copy the new checkpoint and manifest into the package (the default model)")


def _suite_defaults(args) -> None:
    """Fill the flags left out with the suite's recipe; an ALOHA init list must leave the held-out init states out."""
    aloha = args.suite == "aloha"
    defaults = {"steps": ALOHA_RECIPE.steps if aloha else RECIPE.steps, "own_steps": 0 if aloha else RECIPE.own_steps,
                "decoder_steps": ALOHA_RECIPE.decoder_steps if aloha else RECIPE.decoder_steps,
                "inits": list(ALOHA_TRAIN_INITS) if aloha else list(range(40)),
                "out": Path("results") / ("reference-aloha" if aloha else "reference"),
                "data": Path("results") / "data" / ("reference-aloha" if aloha else "reference")}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if aloha:
        bad = [i for i in args.inits if i in ALOHA_HELD_OUT or (50 <= i < EXTRA_POSES_FROM) or i < 0]
        if bad:
            raise UserError(f"--inits {bad[0]} invalid for aloha; valid: 0-29 (the suite's; 30-49 are held out) or >= {EXTRA_POSES_FROM} (training-only poses)")
    else:
        bad = [i for i in args.inits if not 0 <= i <= 49]
        if bad:
            raise UserError(f"--inits {bad[0]} invalid; valid: 0-49")


def run(args) -> int:
    if args.suite not in SUITES:
        raise choice_error("--suite", args.suite, SUITES)
    if args.recon_loss not in RECON_LOSSES:
        raise choice_error("--recon-loss", args.recon_loss, RECON_LOSSES)
    _suite_defaults(args)
    aloha = args.suite == "aloha"
    update, bars = stage_progress()
    with bars:
        checkpoint = train_reference(args.out, args.data, args.steps, own_steps=args.own_steps, seed=args.seed, workers=args.workers, inits=tuple(args.inits),
                                     progress=update, recon_loss=args.recon_loss, own_rounds=args.own_rounds,
                                     decoder_steps=args.decoder_steps, perturbed_rounds=args.perturbed_rounds,
                                     tasks=ALOHA_TASKS if aloha else TRAIN_TASKS, contract=CONTRACTS[args.suite],
                                     temperature=ALOHA_RECIPE.temperature if aloha else None)
    print(f"checkpoint: {checkpoint} ({checkpoint.stat().st_size / 1e6:.1f} MB), manifest: {args.out / 'manifest.json'}")
    if args.ship:
        shipped = SHIPPED_CHECKPOINTS[args.suite]
        shipped.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, shipped)
        shutil.copyfile(args.out / "manifest.json", shipped.with_name("manifest.json" if not aloha else "manifest-aloha.json"))
        print(f"shipped: {shipped}")
    if args.evaluate:
        evaluation = parse_args(["evaluate-reference", "--suite", args.suite, "--checkpoint", str(checkpoint), "--workers", str(args.workers)])
        evaluate_reference.run(evaluation)
    return 0
