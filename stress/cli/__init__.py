"""``stress`` command line. Thin: parse, call the library, print.

One module per command (``stress/cli/run.py``, ``train_reference.py``, ...), each with ``add_arguments(parser)``
and ``run(args) -> int``. This entry point lists the commands from a static table and imports only the chosen
command's module, so ``stress --help`` and ``stress list`` do not load every command's dependencies.

Exit codes: 0 success, 2 bad input (one line naming the bad value and the valid ones), 1 a failure
while running.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks for updates on import

from stress.cli.args import Parser  # noqa: E402
from stress.core.errors import UserError  # noqa: E402

DESCRIPTION = "Robustness and failure-mode stress suite for world-model robot policies."

COMMANDS = {  # name -> (its module in stress/cli/, one-line help), in the order `stress --help` lists them
    "run": ("run", "run scenarios: clean baseline + perturbed, on the same init states"),
    "study": ("study", "one policy variable varied on identical scenarios: aggregation, value-source, denoising, candidates, temperature"),
    "list": ("listing", "list perturbations, policies or suites"),
    "show": ("show", "summary of a run: success per perturbation and severity vs clean"),
    "card": ("card", "the five known failure modes of world-model policies tested as hypotheses on one policy: card.json, card.md, card.html"),
    "compare": ("compare", "two runs on their common scenarios: paired success, prediction and selection figures"),
    "alarm": ("alarm", "the policy's value and world model as a failure alarm: conformal calibration on clean runs, TPR/FPR/lead time per perturbation"),
    "gallery": ("gallery", "static failure gallery of a run (RUN/gallery/index.html): videos, failure modes, predictions"),
    "replay": ("replay", "re-execute an episode's recorded actions and write an mp4; or re-run a search finding with the policy"),
    "search": ("search", "search the scenario space for the smallest scenarios that break a property; shrink and replay them"),
    "map": ("map", "failure-boundary maps: success along each axis of given families and its 50 % threshold, found adaptively"),
    "train-reference": ("train_reference", "generate expert data and train the built-in reference model (CPU)"),
    "train-ranker": ("train_ranker", "counterfactual candidate data and a ranking value head for a reference checkpoint; held-out ranking AUROC"),
    "evaluate-reference": ("evaluate_reference", "success, value AUROC, world-model error and latency of a reference checkpoint"),
    "serve": ("serve", "serve a policy over a websocket (docs/remote-policy.md) for `stress run --policy remote`"),
    "bench": ("bench", "measure render-on-demand speed-up, runner overhead and memory"),
}


def command_module(name: str):
    """The module of command ``name``."""
    # imported only when chosen (the per-command lazy load): a command's dependencies cost seconds to import
    return importlib.import_module(f"stress.cli.{COMMANDS[name][0]}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser listing every command, with the arguments of ``command`` (the one module it imports)."""
    parser = Parser(prog="stress", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (_, summary) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=summary)
        if name == command:
            command_module(name).add_arguments(command_parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``argv`` (default: the process's) parsed; the command is its first word that is not an option."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((word for word in argv if not word.startswith("-")), None)
    return build_parser(command if command in COMMANDS else None).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        return command_module(args.command).run(args)
    except UserError as exc:
        print(f"stress: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stress: interrupted; finished episodes are stored (resume with --resume RUN)", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("STRESS_DEBUG"):
            raise
        print(f"stress: failed: {type(exc).__name__}: {exc} (set STRESS_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
