"""``stress study NAME``: one policy variable varied on identical scenarios (scenarios/studies.py), with its table
and picture (stress/report/study.py)."""

from __future__ import annotations

import inspect
from pathlib import Path

from scenarios.studies import STUDIES, study_specs
from stress.cli.args import add_backend_arguments, add_scenario_arguments
from stress.cli.common import print_tables
from stress.cli.execution import execute, runner, start_or_resume
from stress.cli.reports import print_summary
from stress.cli.run import specs_from_args
from stress.core.errors import UserError, choice_error
from stress.policies import policy_class
from stress.report.degradation import load
from stress.report.study import save_study_plot, study_table
from stress.runners.episode import check_spec


def add_arguments(parser) -> None:
    parser.add_argument("name", help="aggregation, value-source, denoising, candidates or temperature")
    parser.add_argument("--checkpoints", help="comma-separated checkpoints of a model-backed policy: the study is repeated with each, on the same "
                        "scenarios (e.g. V(s') vs Q(s, a) for models trained on different amounts of rollout data)")
    add_scenario_arguments(parser)
    add_backend_arguments(parser)


def run(args) -> int:
    if args.name not in STUDIES:
        raise choice_error("study", args.name, STUDIES)
    if args.resume is None and "planning" not in policy_class(args.policy).modes:
        raise UserError(f"policy {args.policy!r} has no planning mode, which every study varies; valid: a model-backed policy such as reference")

    def make_specs(args):
        args.mode = "direct"  # the base scenarios; the study adds its variants
        base, config = specs_from_args(args)
        specs = study_specs(args.name, base, args.candidates, args.aggregation, _checkpoints(args))
        for spec in specs:
            check_spec(spec)
        return specs, {**config, "mode": "study", "study": args.name}

    with runner(args) as chosen:
        store, specs, measurement = start_or_resume(args, make_specs, lambda specs: f"study-{args.name}")
        execute(store, specs, measurement, chosen)
    name = store.manifest["config"].get("study", args.name)
    print_summary(store)
    rows = study_table(*load(store))
    store.write_json("study.json", rows)
    save_study_plot(name, rows, store.path / "study.png")
    print_tables({"study": rows}, {"study": (f"study {name}: identical scenarios, one variable", [
        ("episodes", "episodes", "d"), ("success", "success", ".0%"), ("ms/decision", "latency_ms", ".1f"), ("PSNR", "future_psnr", ".2f"),
        ("copy PSNR", "baseline_psnr", ".2f"), ("AUROC", "auroc", ".3f"), ("regret", "regret", ".3f"), ("worse than direct", "worse_than_direct", ".0%"),
        ("direct only", "direct_only", "d"), ("planning only", "planning_only", "d"), ("McNemar p", "mcnemar_p", ".3f")])})
    print(f"results: {store.path} (study.json, study.png)")
    return 0


def _checkpoints(args) -> tuple[str, ...]:
    """--checkpoints as paths, each an existing file, for a policy that loads checkpoints."""
    if not args.checkpoints:
        return ()
    if "checkpoint" not in inspect.signature(policy_class(args.policy)).parameters:
        raise UserError(f"--checkpoints needs a policy that loads checkpoints; {args.policy!r} does not (valid: reference)")
    paths = tuple(c.strip() for c in args.checkpoints.split(",") if c.strip())
    missing = [c for c in paths if not Path(c).is_file()]
    if missing or not paths:
        raise UserError(f"--checkpoints: no such checkpoint file {missing[0] if missing else repr(args.checkpoints)}; give existing .pt files, comma-separated")
    return paths
