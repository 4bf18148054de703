"""``stress evaluate-reference``: success, value AUROC, world-model error and latency of a reference checkpoint."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from stress.cli.args import DEFAULT_AGGREGATION, DEFAULT_CANDIDATES, int_list_in, none_or, positive_int
from stress.cli.common import stage_progress
from stress.policies.planning import check_aggregation
from stress.policies.reference.policy import check_contract, checkpoint_path, load_checkpoint
from stress.store import RunStore
from stress.core.errors import UserError, choice_error
from stress.training.build import ALOHA_HELD_OUT, ALOHA_TASKS, TRAIN_TASKS
from stress.training.evaluate import evaluate, evaluation_specs

INITS = int_list_in(0, 49)  # the shipped init states


SUITES = {"libero": TRAIN_TASKS, "aloha": ALOHA_TASKS}  # the tasks each suite's reference model is trained on


def add_arguments(ev) -> None:
    ev.add_argument("--suite", default="libero", help="libero (its 4 trained tasks; default) or aloha (transfer_cube; held-out init states 30-49 by default)")
    ev.add_argument("--checkpoint", type=Path, help="checkpoint (default: the shipped one of --suite)")
    ev.add_argument("--inits", type=INITS, help="shipped init states for direct episodes (default 0-49; aloha: 30-49)")
    ev.add_argument("--planning-inits", type=none_or(INITS), help="init states for best-of-N episodes (default 0-49, aloha: none; 'none' to skip)")
    ev.add_argument("--candidates", type=positive_int, default=DEFAULT_CANDIDATES)
    ev.add_argument("--aggregation", default=DEFAULT_AGGREGATION)
    ev.add_argument("--future-inits", type=int, default=10, help="direct episodes per task whose predicted futures are checked against the simulator (default 10)")
    ev.add_argument("--temperature", type=float, help="the policy role's temperature, 0-2 (default: the checkpoint's own, else 0.5)")
    ev.add_argument("--workers", type=positive_int, default=2)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", type=Path, default=Path("results"), help="results folder (default results/)")
    ev.add_argument("--resume", type=Path, metavar="RUN", help="continue an evaluation run folder")


def run(args, tasks=None) -> int:
    if args.suite not in SUITES:
        raise choice_error("--suite", args.suite, SUITES)
    if args.temperature is not None and not 0 <= args.temperature <= 2:
        raise UserError(f"--temperature {args.temperature} invalid; valid: a number from 0 to 2")
    aloha = args.suite == "aloha"
    tasks = tasks or SUITES[args.suite]
    args.inits = args.inits if args.inits is not None else (list(ALOHA_HELD_OUT) if aloha else list(range(50)))
    args.planning_inits = args.planning_inits if args.planning_inits is not None else ([] if aloha else list(range(50)))
    checkpoint = args.checkpoint or checkpoint_path(args.suite)
    check_contract(Path(checkpoint), load_checkpoint(checkpoint)[1]["contract"], args.suite)  # a bad checkpoint fails here, with its one-line message
    check_aggregation(args.aggregation)
    if args.resume:
        store = RunStore.open(args.resume)
    else:
        specs = (evaluation_specs(tasks, args.inits, ("direct",), args.candidates, args.aggregation, args.seed)
                 + evaluation_specs(tasks, args.planning_inits, ("planning",), args.candidates, args.aggregation, args.seed))
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "command"}
        store = RunStore.create(args.out, datetime.now().strftime("%Y%m%d-%H%M%S") + "-evaluate-reference", specs, config)
    print(f"evaluation run: {store.path}")
    update, bars = stage_progress()
    with bars:
        figures = evaluate(store, checkpoint, tasks, args.inits, args.planning_inits, args.candidates, args.aggregation, args.future_inits, args.workers,
                           args.seed, progress=update, temperature=args.temperature)
    _print_evaluation(figures)
    print(f"figures: {store.path / 'evaluation.json'}")
    return 0


def _print_evaluation(figures: dict) -> None:
    table = Table(title="reference model on the shipped init states")
    for column in ("task", "mode", "all", "95% CI", "trained inits", "held-out inits", "errors"):
        table.add_column(column)
    for s in figures["success"]:
        fmt = lambda part: f"{s[part]['success']:.0%} of {s[part]['n']}" if s[part]["n"] else "-"
        table.add_row(f"{s['suite']} {s['task_id']}", s["mode"], fmt("all"), f"{s['all']['ci95'][0]:.0%}-{s['all']['ci95'][1]:.0%}", fmt("trained_inits"), fmt("held_out_inits"), str(s["errors"]))
    console = Console()
    console.print(table)
    for mode in ("direct", "planning"):
        if f"mean_success_{mode}" in figures:
            auc = figures["value_auroc"].get(mode, {}).get("auroc")
            console.print(f"{mode}: mean success {figures[f'mean_success_{mode}']:.1%}, value AUROC {auc if auc is None else round(auc, 3)} over {figures['value_auroc'][mode]['decisions']} decisions")
    if figures.get("paired"):
        p = figures["paired"]
        console.print(f"paired on {p['n']} scenarios: both {p['both']}, direct only {p['direct_only']}, planning only {p['planning_only']}, neither {p['neither']}")
    for camera, f in figures["future"].items():
        console.print(f"world model {camera}: PSNR {f['psnr']:.2f} dB vs copy-frame {f['baseline_psnr']:.2f}; SSIM {f['ssim']:.3f} vs {f['baseline_ssim']:.3f} ({f['decisions']} decisions)")
    console.print(f"latency (ms): {figures['latency_ms']}")

