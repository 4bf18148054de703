"""``stress card``: the five known failure modes of world-model policies tested as pre-declared hypotheses on one
policy (scenarios/card.py designs the experiment, stress/report/card.py tests and writes it): card.json, card.md,
card.html in the card folder (a run folder) and at most 20 lines here."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from scenarios.card import (DEFAULT_BUDGET, FEW_CANDIDATES, FLIP_SEEDS, HYPOTHESES, MIN_UNITS, Context, blocks_for, boundary_severities,
                            context_to_dict, design, language_swap, replan_option, smallest_budget, applicability, units_of)
from scenarios.grid import check_servers
from stress.cli.args import DEFAULT_AGGREGATION, DEFAULT_CANDIDATES, DEFAULT_POLICY, DEFAULT_SUITE, add_backend_arguments, add_server_arguments, int_list, positive_int
from stress.cli.execution import execute, remote_options, runner, start_or_resume
from stress.core.errors import UserError
from stress.core.files import atomic_write
from stress.core.spec import DEFAULT_SEVERITY
from stress.envs import simulator_of
from stress.report.card import card_report, summary, write_card
from stress.store import RunStore


def add_arguments(parser) -> None:
    parser.add_argument("--policy", default=DEFAULT_POLICY, help=f"policy backend (default {DEFAULT_POLICY})")
    parser.add_argument("--suite", default=DEFAULT_SUITE, help=f"suite (default {DEFAULT_SUITE})")
    parser.add_argument("--tasks", type=int_list, default=[0], help="task ids, e.g. 0,1 or 0-3 (default 0); scenarios are spread over them")
    parser.add_argument("--budget-episodes", type=positive_int, default=DEFAULT_BUDGET, metavar="N",
                        help=f"the most distinct episodes the card's design may hold, reused ones included (default {DEFAULT_BUDGET})")
    parser.add_argument("--map", action="append", default=[], type=Path, metavar="RUN",
                        help="a failure-boundary map (stress map): families mapped by severity run at their 50 %% threshold's level; repeatable")
    parser.add_argument("--reuse", nargs="+", default=[], type=Path, metavar="RUN",
                        help="earlier run folders: their stored episodes of the card's scenarios (same episode key) are copied, not run again")
    parser.add_argument("--policy-server", metavar="URL", help="with --policy remote or openpi: the policy server, ws://HOST:PORT")
    add_server_arguments(parser)
    parser.add_argument("--candidates", type=positive_int, default=DEFAULT_CANDIDATES, help=f"best-of-N candidates (default {DEFAULT_CANDIDATES})")
    parser.add_argument("--aggregation", default=DEFAULT_AGGREGATION, help=f"planning value aggregation (default {DEFAULT_AGGREGATION})")
    parser.add_argument("--max-steps", type=positive_int, help="step budget (default: the suite's)")
    parser.add_argument("--seed", type=int, default=0, help="run seed: policy seeds and perturbation seeds derive from it (as stress run's)")
    parser.add_argument("--counterfactual-rollouts", type=int, default=0, metavar="K", help="decisions per episode whose candidates are continued to the end: the ledger's regret (default 0)")
    parser.add_argument("--workers", type=positive_int, default=1, help="simulator processes (each ~2 GB; default 1)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder (default results/)")
    parser.add_argument("--resume", type=Path, metavar="CARD", help="continue the card in this folder, running only what is missing")
    add_backend_arguments(parser)


def run(args) -> int:
    args.true_futures = "none"  # no figure of the card needs the true futures: renders spared
    if args.counterfactual_rollouts < 0:
        raise UserError(f"--counterfactual-rollouts {args.counterfactual_rollouts} invalid; valid: 0 or more")
    with runner(args) as chosen:
        store, specs, measurement = start_or_resume(args, make_specs, lambda specs: f"card-{args.policy}")
        _record(store, reuse(store, specs, args.reuse), 0)  # recorded now: a card stopped mid-run still counts what it copied
        before = len(store.done_keys())
        execute(store, specs, measurement, chosen)
        _record(store, 0, len(store.done_keys()) - before)
    report = card_report(store)
    write_card(store.path, report)
    for line in summary(report):
        print(line)
    return 0


def make_specs(args) -> tuple[list, dict]:
    """The card's design from its flags: one warning line per hypothesis it cannot test, exit 2 when none can."""
    simulator = simulator_of(args.suite)
    policy_options, image_size, server = remote_options(args)
    units = units_of(args.suite, args.tasks)
    maps = boundary_severities(args.map)
    families, untestable = applicability(args.policy, args.suite, server)
    if "mode_collapse" not in untestable and args.candidates <= FEW_CANDIDATES:
        untestable["mode_collapse"] = f"--candidates {args.candidates} leaves no best-of-N above best-of-{FEW_CANDIDATES} to compare with; valid: {FEW_CANDIDATES + 1} or more"
    for h in HYPOTHESES:
        if h.id in untestable:
            print(f"card: H{h.number} {h.title} not testable: {untestable[h.id]}", file=sys.stderr)
    option = replan_option(args.policy)
    severities = {name: m["severity"] for name, m in maps.items()}
    context = Context(suite=args.suite, policy=args.policy, seed=args.seed, max_steps=args.max_steps, image_size=image_size or simulator.default_image_size,
                      candidates=args.candidates, aggregation=args.aggregation, options=policy_options,
                      severities=severities, replan=(option, simulator.chunk_size, max(1, simulator.chunk_size // 4)) if option else None,
                      families=families, language_swap=language_swap(args.suite, families, severities))
    runnable = [h.id for h in HYPOTHESES if h.id not in untestable]
    if not runnable:
        raise UserError(f"policy {args.policy!r} on suite {args.suite} can be tested for none of the five failure modes; valid: a policy with a planning mode "
                        "and a value head (reference, remote), or a seeded policy on a suite with the families the hypotheses need")
    blocks = blocks_for(context, runnable)
    smallest, block = smallest_budget(context, blocks, units)
    if args.budget_episodes < smallest:
        raise UserError(f"--budget-episodes {args.budget_episodes} is too small for any hypothesis; valid: {smallest} or more "
                        f"(the smallest useful budget: {block} on {MIN_UNITS} scenarios)")
    specs, allocation = design(context, blocks, units, args.budget_episodes)
    thin = [name for name, got in allocation.items() if len(got) < MIN_UNITS]
    notes = [f"{name} got {len(allocation[name])} scenario(s) at this budget (fewer than {MIN_UNITS}); a larger --budget-episodes gives it more" for name in thin]
    used = {n for block in blocks for n in families.get(block, ())}
    config = {"command": "card", "policy": args.policy, "suite": args.suite, "tasks": args.tasks, "seed": args.seed, "true_futures": "none",
              "counterfactual_rollouts": args.counterfactual_rollouts, "policy_server": check_servers(specs),
              "card": {"context": context_to_dict(context), "budget": args.budget_episodes, "units": [list(u) for u in units[: len(units)]],
                       "allocation": {k: [list(u) for u in v] for k, v in allocation.items()}, "untestable": untestable, "flip_seeds": FLIP_SEEDS,
                       "thresholds": maps, "simulator": simulator.name, "notes": notes,
                       "severity_sources": {n: maps.get(n, {"severity": DEFAULT_SEVERITY, "source": "default level (no map given)"}) for n in sorted(used)}}}
    return specs, config


def reuse(store: RunStore, specs: list, runs: list[Path]) -> int:
    """Copy the episodes of ``specs`` stored in earlier run folders ``runs`` (same episode key: the same episode)
    into the card folder: actions, decisions and frames first, the part last (its presence means done)."""
    done = store.done_keys()
    wanted = {s.key for s in specs} - done
    copied = 0
    for run in runs:
        other = RunStore.open(run)
        for key in sorted(wanted & other.done_keys()):
            for folder, ext in (("actions", "npz"), ("decisions", "parquet"), ("frames", "npz"), ("parts", "parquet")):
                source = other.path / folder / f"{key}.{ext}"
                if source.is_file():
                    atomic_write(store.path / folder / f"{key}.{ext}", lambda tmp, s=source: shutil.copyfile(s, tmp))
            wanted.discard(key)
            copied += 1
    return copied


def _record(store: RunStore, reused: int, ran: int) -> None:
    """How many episodes this invocation copied and ran, added to the manifest's count (a resumed card adds up)."""
    manifest = store.manifest
    card = manifest["config"]["card"]
    card["reused"] = card.get("reused", 0) + reused
    card["ran"] = card.get("ran", 0) + ran
    store.write_json("manifest.json", manifest)
