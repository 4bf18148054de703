"""``stress run``: scenarios (a flag grid, a --scenario file or a --protocol), clean baseline and perturbed, on the
same init states; stored, then summed up in at most 15 lines."""

from __future__ import annotations

import sys
from pathlib import Path

from scenarios.grid import check_servers, file_specs, grid_specs, run_modes, scene_maker
from scenarios.protocols import get_protocol, protocol_specs
from stress.cli.args import DEFAULT_EPISODES, DEFAULT_SUITE, add_backend_arguments, add_scenario_arguments
from stress.cli.execution import execute, remote_options, runner, start_or_resume
from stress.cli.reports import build_gallery, print_protocol, write_degradation
from stress.core.errors import UserError, choice_error
from stress.measurement.groundtruth import TRUE_FUTURES
from stress.report.headline import headline
from stress.report.summary import error_counts, summarise
from stress.runners.episode import check_spec


def add_arguments(parser) -> None:
    add_scenario_arguments(parser)
    add_backend_arguments(parser)
    parser.add_argument("--protocol", metavar="NAME", help="a published evaluation protocol (stress list protocols; docs/protocols.md): its suites, trials, seeds, "
                        "image size, step limits and policy options; prints its figures beside the paper's and the reproduction verdict")
    parser.add_argument("--gallery", nargs="?", type=int, const=0, metavar="WORKERS",
                        help="afterwards, build the run's failure gallery (stress gallery RUN: videos of the worst 4 cards), with WORKERS render processes (default: --workers)")


def run(args) -> int:
    if args.gallery is not None and args.gallery < 0:
        raise UserError(f"--gallery {args.gallery} invalid; valid: a number of render processes, 1 or more (or none: --workers)")
    label = lambda specs: "-".join(([args.protocol] if args.protocol else []) + (sorted({p.name for s in specs for p in s.perturbations}) or ["clean"]))
    with runner(args) as chosen:
        store, specs, measurement = start_or_resume(args, specs_from_args, label)
        execute(store, specs, measurement, chosen)
    print_headline(store)
    print_protocol(store)
    impossible = store.query(
        "SELECT perturbation, any_value(error) AS example FROM episodes GROUP BY perturbation "
        "HAVING bool_and(coalesce(error LIKE 'invalid_scene%', false))"
    )
    if impossible:  # the run is stored, but the request itself cannot be met on these scenes
        bad = impossible[0]
        raise UserError(f"perturbation {bad['perturbation']} gave no valid scene on any init state ({bad['example']}); lower the severity or change its parameters")
    if args.gallery is not None:
        build_gallery(store.path, None, args.gallery or args.workers, None)
    return 0


def specs_from_args(args) -> tuple[list, dict]:
    """(specs, the manifest's config) of run's (or study's) flags: a --protocol's, a --scenario file's, or the grid's."""
    if getattr(args, "protocol", None):
        return _protocol_specs(args)
    args.suite, args.tasks = args.suite or DEFAULT_SUITE, args.tasks or [0]
    args.episodes = DEFAULT_EPISODES if args.episodes is None else args.episodes
    _check_measurement(args)
    policy_options, image_size, server = remote_options(args)
    config = _config(args)
    if args.scenario is not None:
        specs = file_specs(args.scenario)
    else:
        modes = run_modes(args.mode, args.policy, server["modes"] if server is not None else None)
        specs = grid_specs(args.suite, args.tasks, args.episodes, _scenes(args), args.policy, modes, range(args.seed, args.seed + args.policy_seeds),
                           args.candidates, args.aggregation, args.max_steps, image_size, policy_options)
    config["policy_server"] = check_servers(specs)
    return specs, config


def _config(args) -> dict:
    """The flags as the manifest records them (what a resumed run and `stress show` read back)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("command", "resume")}


def _scenes(args):
    return scene_maker(args.perturb, args.severities, args.camera, not args.no_baseline, args.seed)


def _check_measurement(args) -> None:
    if args.true_futures not in TRUE_FUTURES:
        raise choice_error("--true-futures", args.true_futures, TRUE_FUTURES)


def _protocol_specs(args) -> tuple[list, dict]:
    """``stress run --protocol NAME``: the protocol's specs (scenarios/protocols.py) for the chosen suites, tasks
    and trials, clean and under any --perturb. Flags the protocol fixes are refused rather than ignored."""
    protocol = get_protocol(args.protocol)
    fixed = (("--mode", args.mode, ("auto", protocol.mode), f"its mode ({protocol.mode})"),
             ("--seed", args.seed, (0,), f"the policy seeds ({', '.join(map(str, protocol.seeds))})"),
             ("--policy-seeds", args.policy_seeds, (1,), f"the policy seeds ({', '.join(map(str, protocol.seeds))})"),
             ("--scenario", args.scenario, (None,), "the scenarios"),
             ("--no-baseline", args.no_baseline, (False,), "the clean episodes (perturbations run on top of them)"))
    for flag, value, allowed, what in fixed:
        if value not in allowed:
            raise UserError(f"{flag} {value if value is not True else ''}".rstrip() + f" conflicts with --protocol {protocol.name}, which fixes {what}; leave {flag} out")
    _check_measurement(args)
    policy_options, _, server = remote_options(args)
    suites = [s.strip() for s in args.suite.split(",") if s.strip()] if args.suite else None
    served_settings = server.get("settings", {}) if server else None
    specs = protocol_specs(protocol, args.policy, suites, args.tasks, args.episodes, _scenes(args), args.max_steps, policy_options, served_settings)
    for spec in specs:
        check_spec(spec)
    config = _config(args)
    config["protocol_suites"] = sorted({s.suite for s in specs}, key=protocol.suites.index)
    # a server that cannot change a setting the protocol fixes runs with its own: recorded, and the verdict says so
    config["protocol_not_applied"] = {k: v for k, v in protocol.policy_options if served_settings is not None and k not in served_settings}
    config["policy_server"] = check_servers(specs)  # a server must render what the protocol fixes (256 px), or exit 2
    for k, v in config["protocol_not_applied"].items():
        print(f"warning: the policy server at {args.policy_server} has no setting {k!r}; it runs with its own, not the protocol's {v}", file=sys.stderr)
    return specs, config


def print_headline(store) -> None:
    """The end of ``stress run``: at most 15 lines (stress.report.headline); the full tables are ``stress show``'s."""
    tables = write_degradation(store)
    print(f"results: {store.path}")
    for line in headline(store.path, summarise(store), tables, {(s.policy, s.policy_options) for s in store.specs()}):
        print(line)
    for e in error_counts(store):
        print(f"errors: {e['n']} x {e['kind']} (e.g. {e['example'][:160]})")
