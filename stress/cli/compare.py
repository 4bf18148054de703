"""``stress compare RUN_A RUN_B``: two runs on their common scenarios: paired success, prediction and selection figures."""

from __future__ import annotations

from pathlib import Path

from stress.cli.common import console, print_tables
from stress.core.errors import UserError
from stress.report.degradation import compare, load
from stress.store import RunStore


def add_arguments(parser) -> None:
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)


def run(args) -> int:
    stores = [RunStore.open(path) for path in (args.run_a, args.run_b)]
    for store in stores:
        store.consolidate()
    result = compare(load(stores[0]), load(stores[1]))
    if not result["common_scenarios"]:
        raise UserError(f"runs {stores[0].path.name} and {stores[1].path.name} share no scenario (task, init state, perturbation, seed); nothing to compare")
    console().print(f"A = {stores[0].path.name}, B = {stores[1].path.name}: {result['common_scenarios']} common scenarios (matched on {', '.join(result['matched_on'])})")
    print_tables(result, {
        "success": ("success on the common scenarios", [("n", "n", "d"), ("A", "a", ".0%"), ("B", "b", ".0%"), ("A only", "a_only", "d"), ("B only", "b_only", "d"),
                                                        ("McNemar p", "mcnemar_p", ".3f"), ("B - A", "difference", "+.0%")]),
        "figures": ("prediction and selection figures on the common scenarios", [
            (f"{label} {side.upper()}", f"{field}_{side}", spec) for label, field, spec in (
                ("PSNR", "future_psnr", ".2f"), ("AUROC", "auroc", ".3f"), ("over-est.", "overestimation", "+.3f"), ("regret", "regret", ".3f"))
            for side in "ab"]),
    })
    return 0
