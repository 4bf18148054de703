"""``stress`` command line. Thin: parse, call the library, print.

Exit codes: 0 success, 2 bad input (one line naming the bad value and the valid ones), 1 a failure
while running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks for updates on import

from stress.core.errors import UserError, choice_error  # noqa: E402
from stress.core.files import read_json_input  # noqa: E402

DEFAULT_SUITE = "libero_spatial"
DEFAULT_POLICY = "reference"
DEFAULT_CANDIDATES = 8
DEFAULT_AGGREGATION = "average"
DEFAULT_EPISODES = 3
DEFAULT_SEVERITIES = "1,3,5"
DEFAULT_TRAIN_STEPS = 8000  # what the shipped checkpoint was trained with
DEFAULT_OWN_ROUNDS = 2  # the shipped recipe: two DAgger rounds
DEFAULT_DECODER_STEPS = 2000  # the shipped recipe's last stage: the future decoder alone, squared error + SSIM
DEFAULT_OWN_STEPS = 6000  # fine-tuning steps per DAgger round (own rollouts labelled by the expert) of the shipped recipe
# the shipped recipe's last rounds: own rollouts on perturbed scenes (value AUROC 0.70 -> 0.78 on clean scenes,
# direct success 83.5 -> 90.5 %; docs/reference-model.md, "Attempts")
DEFAULT_PERTURBED_ROUNDS = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise UserError(message)


def _int_list(text: str, what: str) -> list[int]:
    """'0,2,5-7' -> [0, 2, 5, 6, 7]."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                out.extend(range(low, high + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise UserError(f"{what} {text!r} is not a list of integers; valid: e.g. 0,1 or 0-3") from None
    return out


def _add_scenario_arguments(run: argparse.ArgumentParser) -> None:
    """The scenario, policy and measurement arguments shared by ``run`` and ``study``."""
    # suite, tasks and episodes default to None: a --protocol run defaults them to the protocol's own
    run.add_argument("--suite", help=f"LIBERO suite (default {DEFAULT_SUITE}); run --protocol: the protocol's suites to run, comma-separated (default all)")
    run.add_argument("--tasks", help="task ids, e.g. 0,1 or 0-3 (default 0; run --protocol: every task)")
    run.add_argument("--episodes", "--trials", dest="episodes", type=int,
                     help=f"init states per task, the first N shipped ones (default {DEFAULT_EPISODES}; run --protocol: its trials, 50 for cosmos-libero)")
    run.add_argument("--perturb", action="append", default=[], metavar="NAME[:LEVEL]", help="perturbation; repeat to compose; a bare NAME sweeps --severities")
    run.add_argument("--severities", default=DEFAULT_SEVERITIES, help=f"levels for bare --perturb names (default {DEFAULT_SEVERITIES})")
    run.add_argument("--camera", default="both", help="camera targeted by per-camera perturbations: agentview, wrist, both")
    run.add_argument("--scenario", type=Path, help="JSON file with a list of ScenarioSpecs (explicit parameters) to run")
    run.add_argument("--policy", default=DEFAULT_POLICY, help=f"policy backend (default {DEFAULT_POLICY})")
    run.add_argument("--policy-server", metavar="URL", help="with --policy remote: the policy server, ws://HOST:PORT (stress serve); with --resume: a new address for the run's server")
    run.add_argument("--mode", default="auto", help="direct, planning, both, or auto (every mode the policy has)")
    run.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES, help=f"best-of-N candidates in planning mode (default {DEFAULT_CANDIDATES})")
    run.add_argument("--aggregation", default=DEFAULT_AGGREGATION, help=f"planning value aggregation: average, lcb, success_vote, majority_mean (default {DEFAULT_AGGREGATION})")
    run.add_argument("--no-baseline", action="store_true", help="skip the clean baseline episodes")
    run.add_argument("--true-futures", default="executed", metavar="WHICH",
                     help="predicted futures measured against the simulator's true one: executed (the executed chunk's, default), "
                          "all (every best-of-N candidate's; one chunk of physics and a render each), none")
    run.add_argument("--counterfactual-rollouts", type=int, default=0, metavar="K",
                     help="decisions per episode whose chunks (every candidate) are continued by the direct policy to the end, for their true outcome (default 0; expensive)")
    run.add_argument("--max-steps", type=int, help="step budget (default: the suite's)")
    run.add_argument("--workers", type=int, default=1, help="simulator processes (each ~2 GB; default 1)")
    run.add_argument("--out", type=Path, default=Path("results"), help="results folder (default results/)")
    run.add_argument("--seed", type=int, default=0, help="run seed: policy seed and perturbation seeds derive from it")
    run.add_argument("--policy-seeds", type=int, default=1, metavar="N",
                     help="run every scenario with N policy seeds (seed .. seed+N-1), the scene unchanged: seed sensitivity (default 1)")
    run.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in this folder, skipping stored episodes")


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Where episodes run, shared by ``run``, ``study`` and ``search`` (docs/ray.md)."""
    parser.add_argument("--backend", default="local", help="local (processes on this machine, the default) or ray (actors on a Ray cluster; pip install 'stress[ray]')")
    parser.add_argument("--ray-address", metavar="HOST:PORT", help="with --backend ray: join this cluster (`ray start --head`) instead of starting a private local one")
    parser.add_argument("--ray-gpus", type=float, default=0.0, metavar="N", help="with --backend ray: GPUs each actor asks for, for a policy on the GPU (default 0)")


def _runner(args, workers: int | None = None, env_cache: int = 1):
    """The runner of ``--backend`` (a context manager); a Ray cluster is started or joined now, so a bad address or a
    worker count it cannot place exits 2 before any run folder is written."""
    from stress.runners import BACKENDS, make_runner

    workers = args.workers if workers is None else workers
    if args.backend not in BACKENDS:
        raise choice_error("--backend", args.backend, BACKENDS)
    if args.backend != "ray" and (args.ray_address or args.ray_gpus):
        raise UserError(f"--ray-address and --ray-gpus are for --backend ray; got --backend {args.backend}")
    if workers < 1:
        raise UserError(f"--workers {workers} invalid; valid: 1 or more")
    runner = make_runner(args.backend, workers, env_cache, args.ray_address, args.ray_gpus)
    if args.backend == "ray":
        runner.start()
    return runner


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stress", description="Robustness and failure-mode stress suite for world-model robot policies.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run scenarios: clean baseline + perturbed, on the same init states")
    _add_scenario_arguments(run)
    _add_backend_arguments(run)
    run.add_argument("--protocol", metavar="NAME", help="a published evaluation protocol (stress list protocols; docs/protocols.md): its suites, trials, seeds, "
                     "image size, step limits and policy options; prints its figures beside the paper's and the reproduction verdict")
    run.add_argument("--gallery", nargs="?", type=int, const=0, metavar="WORKERS",
                     help="afterwards, build the run's failure gallery (stress gallery RUN), with WORKERS render processes (default: --workers)")

    study = sub.add_parser("study", help="one policy variable varied on identical scenarios: aggregation, value-source, denoising, candidates, temperature")
    study.add_argument("name", help="aggregation, value-source, denoising, candidates or temperature")
    study.add_argument("--checkpoints", help="comma-separated checkpoints of a model-backed policy: the study is repeated with each, on the same "
                       "scenarios (e.g. V(s') vs Q(s, a) for models trained on different amounts of rollout data)")
    _add_scenario_arguments(study)
    _add_backend_arguments(study)

    lst = sub.add_parser("list", help="list perturbations, policies or suites")
    lst.add_argument("what", help="perturbations, policies, suites, properties, samplers or protocols")

    show = sub.add_parser("show", help="summary of a run: success per perturbation and severity vs clean")
    show.add_argument("run", type=Path)
    show.add_argument("--episodes", action="store_true", help="also list every episode (keys for replay)")

    cmp = sub.add_parser("compare", help="two runs on their common scenarios: paired success, prediction and selection figures")
    cmp.add_argument("run_a", type=Path)
    cmp.add_argument("run_b", type=Path)

    gal = sub.add_parser("gallery", help="static failure gallery of a run (RUN/gallery/index.html): videos, failure modes, predictions")
    gal.add_argument("run", type=Path)
    gal.add_argument("--out", type=Path, help="gallery folder (default RUN/gallery)")
    gal.add_argument("--workers", type=int, default=1, help="processes replaying videos (each ~2 GB; default 1)")
    gal.add_argument("--max-cards", type=int, metavar="N", help="full cards (video, frames) for the N worst failures only; the rest in one line each")

    rep = sub.add_parser("replay", help="re-execute an episode's recorded actions and write an mp4; or re-run a search finding with the policy")
    rep.add_argument("run", type=Path, help="a run folder, or a finding file RUN/findings/ID.json")
    rep.add_argument("episode_key", nargs="?", help="the episode to replay (not with a finding)")
    rep.add_argument("--video", type=Path, help="mp4 path (default RUN/media/KEY.mp4)")
    rep.add_argument("--times", type=int, default=2, help="finding: how many fresh runs of the shrunk scenario (default 2)")
    rep.add_argument("--workers", type=int, default=1, help="finding: simulator processes (default 1)")

    search = sub.add_parser("search", help="search the scenario space for the smallest scenarios that break a property; shrink and replay them")
    search.add_argument("--property", help="property to break (stress list properties)")
    search.add_argument("--properties", dest="properties_file", type=Path, help="a Python file of your own @register properties")
    search.add_argument("--budget", type=int, default=100, help="sampler evaluations (scenarios) to spend (default 100); shrinking comes on top")
    search.add_argument("--sampler", default="ce", help="random, halton, sobol, ce or bandit (default ce)")
    search.add_argument("--compare", help="also run this sampler (e.g. random) on the same space, budget and seed, for the report")
    search.add_argument("--space", type=Path, help="a JSON space file (suite, tasks, inits, families, max_families, cameras, seeds); overrides the flags below")
    search.add_argument("--suite", default=DEFAULT_SUITE, help=f"LIBERO suite (default {DEFAULT_SUITE})")
    search.add_argument("--tasks", default="0", help="task ids, e.g. 0,1 or 0-3 (default 0)")
    search.add_argument("--inits", default="0-9", help="shipped init states searched (default 0-9)")
    search.add_argument("--families", default="occlusion,lighting,object_pose", help="perturbation families searched (default occlusion,lighting,object_pose)")
    search.add_argument("--max-families", type=int, default=2, help="most families composed in one scenario (default 2)")
    search.add_argument("--cameras", default="both", help="camera targets of per-camera families: agentview, wrist, both (default both)")
    search.add_argument("--policy-seeds", default="0", help="policy seeds searched, e.g. 0-3 (default 0)")
    search.add_argument("--policy", default="reference", help="policy backend (default reference)")
    search.add_argument("--policy-server", metavar="URL", help="with --policy remote: the policy server, ws://HOST:PORT (stress serve)")
    search.add_argument("--mode", default="direct", help="mode of the property's own episodes: direct or planning (default direct)")
    search.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES, help=f"best-of-N candidates (default {DEFAULT_CANDIDATES})")
    search.add_argument("--aggregation", default=DEFAULT_AGGREGATION, help=f"best-of-N aggregation (default {DEFAULT_AGGREGATION})")
    search.add_argument("--max-steps", type=int, help="step budget per episode (default: the suite's)")
    search.add_argument("--true-futures", help="executed, all or none (default: executed when the property reads predicted futures, else none)")
    search.add_argument("--max-findings", type=int, default=5, help="violations of new modes shrunk into findings (default 5)")
    search.add_argument("--replays", type=int, default=1, help="fresh runs of each shrunk scenario to check it reproduces (default 1)")
    search.add_argument("--iid", type=int, help="uniform scenarios for the unbiased violation rate (default budget/5; none needed with --compare random)")
    search.add_argument("--workers", type=int, default=1, help="simulator processes (default 1)")
    search.add_argument("--batch", type=int, help="scenarios proposed and run together (default: --workers); part of what the search's path depends on")
    search.add_argument("--shrinker", default="greedy", help="greedy (grid bisection, the default) or hypothesis (Hypothesis's shrinker; slower, see docs/search.md)")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--out", type=Path, default=Path("results"), help="results folder (default results/)")
    search.add_argument("--resume", type=Path, metavar="RUN", help="continue a search run folder (after a crash: nothing run twice)")
    _add_backend_arguments(search)

    train = sub.add_parser("train-reference", help="generate expert data and train the built-in reference model (CPU)")
    train.add_argument("--steps", type=int, default=DEFAULT_TRAIN_STEPS, help=f"optimiser steps (default {DEFAULT_TRAIN_STEPS})")
    train.add_argument("--own-steps", type=int, default=DEFAULT_OWN_STEPS,
                       help=f"steps of each DAgger round on the model's own rollouts; 0 skips the rounds (default {DEFAULT_OWN_STEPS})")
    train.add_argument("--own-rounds", type=int, default=DEFAULT_OWN_ROUNDS,
                       help=f"DAgger rounds, each rolling the latest model out and fine-tuning --own-steps steps (default {DEFAULT_OWN_ROUNDS})")
    train.add_argument("--perturbed-rounds", type=int, default=DEFAULT_PERTURBED_ROUNDS,
                       help=f"DAgger rounds after --own-rounds, rolled out on perturbed scenes (object pose, robot init, dynamics, pushes; default {DEFAULT_PERTURBED_ROUNDS})")
    train.add_argument("--recon-loss", default="l1", help="future autoencoder loss of the joint training: l1 (the shipped model) or mse (default l1)")
    train.add_argument("--decoder-steps", type=int, default=DEFAULT_DECODER_STEPS,
                       help=f"steps of the last stage, which trains only the future decoder (squared error + SSIM; actions and values unchanged); 0 skips it (default {DEFAULT_DECODER_STEPS})")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--workers", type=int, default=2, help="simulator processes for data generation (default 2)")
    train.add_argument("--inits", default="0-39", help="shipped init states to generate data from (default 0-39; 40-49 stay held out)")
    train.add_argument("--out", type=Path, default=Path("results") / "reference", help="checkpoint, manifest and resumable state (default results/reference)")
    train.add_argument("--data", type=Path, default=Path("results") / "data" / "reference", help="expert data shards (default results/data/reference)")
    train.add_argument("--evaluate", action="store_true", help="afterwards, run evaluate-reference on the new checkpoint")
    train.add_argument("--ship", action="store_true", help="copy the new checkpoint and manifest into the package (the default model)")

    ev = sub.add_parser("evaluate-reference", help="success, value AUROC, world-model error and latency of a reference checkpoint")
    ev.add_argument("--checkpoint", type=Path, help="checkpoint (default: the shipped one)")
    ev.add_argument("--inits", default="0-49", help="shipped init states for direct episodes (default 0-49)")
    ev.add_argument("--planning-inits", default="0-49", help="init states for best-of-N episodes (default 0-49; 'none' to skip)")
    ev.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES)
    ev.add_argument("--aggregation", default=DEFAULT_AGGREGATION)
    ev.add_argument("--future-inits", type=int, default=10, help="direct episodes per task whose predicted futures are checked against the simulator (default 10)")
    ev.add_argument("--workers", type=int, default=2)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", type=Path, default=Path("results"), help="results folder (default results/)")
    ev.add_argument("--resume", type=Path, metavar="RUN", help="continue an evaluation run folder")

    serve = sub.add_parser("serve", help="serve a policy over a websocket (docs/remote-policy.md) for `stress run --policy remote`")
    serve.add_argument("--policy", default=DEFAULT_POLICY, help=f"policy to serve: reference, or cosmos in Cosmos Policy's environment (default {DEFAULT_POLICY})")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only: the protocol has no authentication)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one, printed on start)")
    serve.add_argument("--threads", type=int, default=0, help="torch threads of the served model (default 0: torch's own choice)")
    from stress.policies.cosmos_server import add_arguments as add_cosmos_arguments  # light: numpy + msgpack

    add_cosmos_arguments(serve)

    bench = sub.add_parser("bench", help="measure render-on-demand speed-up, runner overhead and memory")
    bench.add_argument("--suite", default=DEFAULT_SUITE)
    bench.add_argument("--task", type=int, default=0)
    bench.add_argument("--init", type=int, default=0)
    bench.add_argument("--repeats", type=int, default=2)
    bench.add_argument("--out", type=Path, default=Path("results") / "bench")
    bench.add_argument("--planted", action="store_true", help="instead: the search's planted-failure benchmark (no simulator; every sampler, 20 seeds, budget 100)")
    bench.add_argument("--seeds", type=int, default=20, help="--planted: search seeds per sampler (default 20)")
    bench.add_argument("--remote", action="store_true", help="instead: a policy server's round trip vs an in-process call (two 256 px images, a best-of-8 reply)")
    bench.add_argument("--aloha", action="store_true", help="instead: ALOHA's render on demand vs gym-aloha's stock loop, snapshot + restore, and the ALOHA expert's success over --episodes init states per task (default 10; 0: no table)")
    bench.add_argument("--remote-throughput", action="store_true",
                       help="instead: episodes per hour of --workers simulator processes fed by one `stress serve --policy reference`, vs the model in-process")
    bench.add_argument("--episodes", type=int, default=10, help="--remote-throughput: clean direct episodes per side, init states 0..N-1; --aloha: init states per task in the expert table (default 10)")
    bench.add_argument("--workers", type=int, default=2, help="--remote-throughput: simulator processes (default 2)")
    bench.add_argument("--max-steps", type=int, help="--remote-throughput: step budget per episode (default: the suite's)")
    return parser


# --- run ---------------------------------------------------------------------------------------------
def _specs_from_args(args) -> tuple[list, dict]:
    from stress.core.spec import ScenarioSpec
    from stress.envs import check_task, simulator_of
    from stress.policies import policy_class
    from stress.runners.episode import check_spec

    if getattr(args, "protocol", None):
        return _protocol_specs(args)
    args.suite, args.tasks = args.suite or DEFAULT_SUITE, args.tasks or "0"
    args.episodes = DEFAULT_EPISODES if args.episodes is None else args.episodes
    sim = simulator_of(args.suite)  # an unknown suite -> one line listing them
    policy = policy_class(args.policy)
    policy_options, image_size, server = _remote_options(args)
    image_size = image_size or sim.default_image_size
    if args.mode == "auto":
        modes = list(policy.modes)
    elif args.mode == "both":
        modes = ["direct", "planning"]
    else:
        modes = [args.mode]
    if server is not None and args.mode == "auto":
        modes = [m for m in policy.modes if m in server["modes"]]
    for mode in modes:
        if mode not in ("direct", "planning"):
            raise UserError(f"unknown mode {mode!r}; valid: direct, planning, both, auto")
        if mode not in policy.modes:
            raise UserError(f"policy {args.policy!r} has no {mode!r} mode; valid: {', '.join(policy.modes)}")
    if "planning" in modes:
        from stress.policies.planning import check_aggregation

        check_aggregation(args.aggregation)
        if args.candidates < 1:
            raise UserError(f"--candidates {args.candidates} invalid; valid: 1 or more")
    if args.episodes < 1:
        raise UserError(f"--episodes {args.episodes} invalid; valid: 1 or more")
    if args.policy_seeds < 1:
        raise UserError(f"--policy-seeds {args.policy_seeds} invalid; valid: 1 or more")
    _check_run_numbers(args)
    tasks = _int_list(args.tasks, "--tasks")
    for task in tasks:
        check_task(args.suite, task)
    make_scenes = _scene_maker(args)

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("command", "resume")}
    if args.scenario is not None:
        data = read_json_input(args.scenario, "scenario file")
        entries = data if isinstance(data, list) else [data]
        specs = [ScenarioSpec.from_dict(d) for d in entries]
        for spec in specs:
            check_spec(spec)
        config["policy_server"] = _check_servers(specs)
        return specs, config

    specs = []
    for task in tasks:
        for init in range(args.episodes):
            for perturbations in make_scenes(init):
                for mode, policy_seed in ((m, s) for m in modes for s in range(args.seed, args.seed + args.policy_seeds)):
                    specs.append(
                        ScenarioSpec(
                            suite=args.suite, task_id=task, init_index=init, perturbations=perturbations,
                            policy=args.policy, mode=mode, seed=policy_seed, max_steps=args.max_steps,
                            n_candidates=args.candidates if mode == "planning" else 1,
                            aggregation=args.aggregation if mode == "planning" else None,
                            image_size=image_size, policy_options=policy_options,
                        )
                    )
    for spec in specs:
        check_spec(spec)
    config["policy_server"] = _check_servers(specs)
    return specs, config


def _remote_options(args) -> tuple[tuple, int | None, dict | None]:
    """(policy options, image size, handshake metadata) of ``--policy remote``: the served policy's identity and
    the server's address as options, and the image size the server expects (Cosmos: 256); ((), None, None) otherwise."""
    if args.policy != "remote":
        if args.policy_server:
            raise UserError(f"--policy-server is for --policy remote; got --policy {args.policy!r}")
        return (), None, None
    from stress.policies.remote import probe, served_id

    if not args.policy_server:
        raise UserError("policy 'remote' needs --policy-server ws://HOST:PORT (a running `stress serve`)")
    server = probe(args.policy_server)
    # the key holds what it serves, not where
    return (("served", served_id(server)), ("server", args.policy_server)), server["image_size"], server


def _check_run_numbers(args) -> None:
    if args.workers < 1:
        raise UserError(f"--workers {args.workers} invalid; valid: 1 or more")
    if args.counterfactual_rollouts < 0:
        raise UserError(f"--counterfactual-rollouts {args.counterfactual_rollouts} invalid; valid: 0 or more")
    from stress.measurement.groundtruth import TRUE_FUTURES

    if args.true_futures not in TRUE_FUTURES:
        raise choice_error("--true-futures", args.true_futures, TRUE_FUTURES)


def _scene_maker(args):
    """init index -> the perturbation tuples run on it: the clean scene (unless --no-baseline) and each --perturb
    combination, the perturbation seed derived from the run seed and the init index (the same for every mode)."""
    from perturbations.base import PerturbationSpec, parse_cli

    severities = _int_list(args.severities, "--severities")
    for level in severities:
        if level not in range(0, 6):
            raise UserError(f"severity {level} in --severities out of range; valid: 0-5")
    fixed = [parse_cli(t) for t in args.perturb if ":" in t]
    bare = [parse_cli(t).name for t in args.perturb if ":" not in t]
    combos = []  # each: tuple of PerturbationSpec without seed/camera yet
    if args.perturb:
        for level in severities if bare else [None]:
            combos.append(tuple(fixed) + tuple(PerturbationSpec(name, level) for name in bare))

    def scenes(init: int) -> list[tuple]:
        perturbation_seed = args.seed * 100_003 + init
        return ([()] if not args.no_baseline or not combos else []) + [
            tuple(PerturbationSpec(p.name, p.severity, perturbation_seed, args.camera) for p in combo) for combo in combos]

    return scenes


def _protocol_specs(args) -> tuple[list, dict]:
    """``stress run --protocol NAME``: the protocol's specs (scenarios/protocols.py) for the chosen suites, tasks
    and trials, clean and under any --perturb. Flags the protocol fixes are refused rather than ignored."""
    from scenarios.protocols import get_protocol, protocol_specs
    from stress.runners.episode import check_spec

    protocol = get_protocol(args.protocol)
    fixed = (("--mode", args.mode, ("auto", protocol.mode), f"its mode ({protocol.mode})"),
             ("--seed", args.seed, (0,), f"the policy seeds ({', '.join(map(str, protocol.seeds))})"),
             ("--policy-seeds", args.policy_seeds, (1,), f"the policy seeds ({', '.join(map(str, protocol.seeds))})"),
             ("--scenario", args.scenario, (None,), "the scenarios"),
             ("--no-baseline", args.no_baseline, (False,), "the clean episodes (perturbations run on top of them)"))
    for flag, value, allowed, what in fixed:
        if value not in allowed:
            raise UserError(f"{flag} {value if value is not True else ''}".rstrip() + f" conflicts with --protocol {protocol.name}, which fixes {what}; leave {flag} out")
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max-steps {args.max_steps} invalid; valid: 1 or more")
    _check_run_numbers(args)
    policy_options, _, server = _remote_options(args)
    suites = [s.strip() for s in args.suite.split(",") if s.strip()] if args.suite else None
    tasks = _int_list(args.tasks, "--tasks") if args.tasks else None
    served_settings = server.get("settings", {}) if server else None
    specs = protocol_specs(protocol, args.policy, suites, tasks, args.episodes, _scene_maker(args), args.max_steps, policy_options, served_settings)
    for spec in specs:
        check_spec(spec)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("command", "resume")}
    config["protocol_suites"] = sorted({s.suite for s in specs}, key=protocol.suites.index)
    # a server that cannot change a setting the protocol fixes runs with its own: recorded, and the verdict says so
    config["protocol_not_applied"] = {k: v for k, v in protocol.policy_options if served_settings is not None and k not in served_settings}
    config["policy_server"] = _check_servers(specs)  # a server must render what the protocol fixes (256 px), or exit 2
    for k, v in config["protocol_not_applied"].items():
        print(f"warning: the policy server at {args.policy_server} has no setting {k!r}; it runs with its own, not the protocol's {v}", file=sys.stderr)
    return specs, config


def _check_servers(specs, new_url: str | None = None) -> dict | None:
    """Reach every policy server the specs name and check it fits them (exit 2 otherwise, before any episode
    runs). Returns the handshake metadata (recorded in the manifest), or None without remote specs."""
    remote = [s for s in specs if s.policy == "remote"]
    if not remote:
        return None
    from stress.envs import simulator_of
    from stress.policies.remote import check_compatible, probe

    metadata, seen = None, {}
    for spec in remote:
        options = dict(spec.policy_options)
        url = options.get("server")
        if url not in seen:
            seen[url] = probe(url)
        metadata = seen[url]
        check_compatible(metadata, url, simulator_of(spec.suite), modes=(spec.mode,), aggregation=spec.aggregation, image_size=spec.image_size, served=options.get("served"),
                         instruction=simulator_of(spec.suite).tasks(spec.suite)[spec.task_id] if "instructions" in metadata else None)
    return metadata


def _start_or_resume(args, make_specs, label):
    """(store, specs, measurement) of a new run, or of ``--resume RUN`` as it began."""
    from stress.measurement.groundtruth import Measurement
    from stress.store import RunStore

    if args.resume is not None:
        store = RunStore.open(args.resume)
        config = store.manifest.get("config", {})
        specs = store.specs()
        if getattr(args, "policy_server", None):  # the run's server moved: same episodes (the URL is not in the key)
            from dataclasses import replace

            from stress.policies.remote import check_url

            check_url(args.policy_server)
            specs = [replace(s, policy_options=tuple(sorted({**dict(s.policy_options), "server": args.policy_server}.items())))
                     if s.policy == "remote" else s for s in specs]
        _check_servers(specs)
        return store, specs, Measurement(config.get("true_futures", "executed"), config.get("counterfactual_rollouts", 0))
    specs, config = make_specs(args)
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + label(specs)
    return RunStore.create(args.out, run_id, specs, config), specs, Measurement(args.true_futures, args.counterfactual_rollouts)


def _execute(store, specs, measurement, runner) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    done = store.done_keys()
    todo = [s for s in specs if s.key not in done]
    console.print(f"run {store.path}: {len(specs)} episodes, {len(specs) - len(todo)} already stored")
    _run_with_progress(store, todo, runner, console, measurement)
    store.consolidate()


def cmd_run(args) -> int:
    if args.gallery is not None and args.gallery < 0:
        raise UserError(f"--gallery {args.gallery} invalid; valid: a number of render processes, 1 or more (or none: --workers)")
    label = lambda specs: "-".join(([args.protocol] if args.protocol else []) + (sorted({p.name for s in specs for p in s.perturbations}) or ["clean"]))
    with _runner(args) as runner:
        store, specs, measurement = _start_or_resume(args, _specs_from_args, label)
        _execute(store, specs, measurement, runner)
    _print_headline(store)
    _print_protocol(store)
    impossible = store.query(
        "SELECT perturbation, any_value(error) AS example FROM episodes GROUP BY perturbation "
        "HAVING bool_and(coalesce(error LIKE 'invalid_scene%', false))"
    )
    if impossible:  # the run is stored, but the request itself cannot be met on these scenes
        bad = impossible[0]
        raise UserError(f"perturbation {bad['perturbation']} gave no valid scene on any init state ({bad['example']}); lower the severity or change its parameters")
    if args.gallery is not None:
        _build_gallery(store.path, None, args.gallery or args.workers, None)
    return 0


def _print_protocol(store) -> None:
    """A protocol run's figures beside the paper's, the verdict, and RUN/eval_info.json (stress.report.protocol)."""
    config = store.manifest.get("config", {})
    if not config.get("protocol"):
        return
    from scenarios.protocols import get_protocol
    from stress.report.protocol import protocol_tables, verdict_line, write_protocol_report

    report = write_protocol_report(store, get_protocol(config["protocol"]), config.get("protocol_suites"), config.get("protocol_not_applied"))
    _print_tables(*protocol_tables(report))
    print(verdict_line(report))
    print(f"LeRobot eval_info.json (clean episodes + the protocol report): {store.path / 'eval_info.json'}")


def _print_headline(store) -> None:
    """The end of ``stress run``: at most 15 lines (stress.report.headline); the full tables are ``stress show``'s."""
    from stress.report.headline import headline
    from stress.report.summary import error_counts, summarise

    tables = _write_degradation(store)
    print(f"results: {store.path}")
    for line in headline(store.path, summarise(store), tables):
        print(line)
    for e in error_counts(store):
        print(f"errors: {e['n']} x {e['kind']} (e.g. {e['example'][:160]})")


def cmd_study(args) -> int:
    from stress.policies import policy_class
    from stress.report.degradation import load
    from stress.report.study import STUDIES, save_study_plot, study_specs, study_table
    from stress.runners.episode import check_spec

    if args.name not in STUDIES:
        raise choice_error("study", args.name, STUDIES)
    if args.resume is None and "planning" not in policy_class(args.policy).modes:
        raise UserError(f"policy {args.policy!r} has no planning mode, which every study varies; valid: a model-backed policy such as reference")

    def make_specs(args):
        args.mode = "direct"  # the base scenarios; the study adds its variants
        base, config = _specs_from_args(args)
        specs = study_specs(args.name, base, args.candidates, args.aggregation, _study_checkpoints(args))
        for spec in specs:
            check_spec(spec)
        return specs, {**config, "mode": "study", "study": args.name}

    with _runner(args) as runner:
        store, specs, measurement = _start_or_resume(args, make_specs, lambda specs: f"study-{args.name}")
        _execute(store, specs, measurement, runner)
    name = store.manifest["config"].get("study", args.name)
    _print_summary(store)
    rows = study_table(*load(store))
    store.write_json("study.json", rows)
    save_study_plot(name, rows, store.path / "study.png")
    _print_tables({"study": rows}, {"study": (f"study {name}: identical scenarios, one variable", [
        ("episodes", "episodes", "d"), ("success", "success", ".0%"), ("ms/decision", "latency_ms", ".1f"), ("PSNR", "future_psnr", ".2f"),
        ("copy PSNR", "baseline_psnr", ".2f"), ("AUROC", "auroc", ".3f"), ("regret", "regret", ".3f"), ("worse than direct", "worse_than_direct", ".0%"),
        ("direct only", "direct_only", "d"), ("planning only", "planning_only", "d"), ("McNemar p", "mcnemar_p", ".3f")])})
    print(f"results: {store.path} (study.json, study.png)")
    return 0


def _study_checkpoints(args) -> tuple[str, ...]:
    import inspect

    from stress.policies import policy_class

    if not args.checkpoints:
        return ()
    if "checkpoint" not in inspect.signature(policy_class(args.policy)).parameters:
        raise UserError(f"--checkpoints needs a policy that loads checkpoints; {args.policy!r} does not (valid: reference)")
    paths = tuple(c.strip() for c in args.checkpoints.split(",") if c.strip())
    missing = [c for c in paths if not Path(c).is_file()]
    if missing or not paths:
        raise UserError(f"--checkpoints: no such checkpoint file {missing[0] if missing else repr(args.checkpoints)}; give existing .pt files, comma-separated")
    return paths


def _run_with_progress(store, specs, runner, console, measurement) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    counts = {"success": 0, "failure": 0, "error": 0}
    with Progress(
        TextColumn("[bold]episodes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[counts]}"), console=console, disable=not console.is_terminal,
    ) as progress:
        bar = progress.add_task("episodes", total=len(specs), counts="")

        def on_result(result):
            counts["error" if result.error else "success" if result.success else "failure"] += 1
            progress.update(bar, advance=1, counts=" ".join(f"{k} {v}" for k, v in counts.items()))

        runner.run(specs, store, on_result, measurement)


def _print_summary(store) -> None:
    from rich.table import Table

    from stress.report.summary import error_counts, summarise

    table = Table(title=f"{store.path.name}: success rate (95% Wilson interval)")
    for column in ("policy", "setting", "perturbation", "sev", "n", "success", "95% CI", "clean, same inits", "errors"):
        table.add_column(column, justify="left" if column in ("policy", "setting", "perturbation") else "right")
    for r in summarise(store):
        clean = "—" if r.clean_rate is None else f"{r.clean_rate:.0%} (n={r.clean_pairs})"
        rate = "—" if r.episodes == r.errors else f"{r.rate:.0%} ({r.successes}/{r.episodes - r.errors})"
        table.add_row(r.policy, r.setting, r.perturbation, str(r.severity), str(r.episodes), rate, f"{r.low:.0%}–{r.high:.0%}", clean, str(r.errors))
    console = _console()
    console.print(table)
    for e in error_counts(store):
        console.print(f"errors: {e['n']} x {e['kind']} (e.g. {e['example'][:160]})")


def _fmt(value, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def _print_degradation(store) -> None:
    """The degradation tables (stress.report.degradation); a table without data is one line saying how to get it."""
    tables = _write_degradation(store)
    for row in tables["failures"]:
        row["counts_text"] = ", ".join(f"{k} {v}" for k, v in sorted(row["counts"].items(), key=lambda kv: -kv[1]))
    _print_tables(tables, DEGRADATION_TABLES, DEGRADATION_HINTS)


def _write_degradation(store) -> dict:
    """RUN/degradation.json and RUN/degradation.png; returns the tables."""
    from stress.report.degradation import degradation, load
    from stress.report.degradation_plot import save_degradation_plot

    episodes, decisions = load(store)
    tables = degradation(episodes, decisions)
    store.write_json("degradation.json", tables)
    if episodes:
        save_degradation_plot(episodes, decisions, tables, store.path / "degradation.png")
    return tables


DEGRADATION_HINTS = {  # how to get a table a run has no data for
    "robustness": "keep the clean baseline (leave out --no-baseline)", "direct_vs_planning": "run with --mode both",
    "failures": "no episode failed", "seeds": "run with --policy-seeds 2", "world_model": "a policy with a world model and --true-futures executed",
    "value": "a policy that predicts values (--policy reference)", "selection": "run with --counterfactual-rollouts 1 and a planning mode",
}


DEGRADATION_TABLES = {
    "robustness": ("robustness vs clean on the same init states", [("pairs", "pairs", "d"), ("relative robustness", "relative_robustness", ".2f"), ("breakage", "breakage_rate", ".0%")]),
    "direct_vs_planning": ("best-of-N planning vs the direct policy, paired on the same scenarios", [
        ("n", "n", "d"), ("direct", "direct", ".0%"), ("planning", "planning", ".0%"), ("both", "both", "d"), ("direct only", "direct_only", "d"),
        ("planning only", "planning_only", "d"), ("neither", "neither", "d"), ("McNemar p", "mcnemar_p", ".3f"),
        ("P(plan fails | direct ok)", "p_planning_fails_given_direct_succeeds", ".0%"), ("P(plan ok | direct fails)", "p_planning_succeeds_given_direct_fails", ".0%")]),
    "failures": ("how the failures failed (signatures from simulator state)", [
        ("failures", "failures", "d"), ("most common", "top_signature", "s"), ("its share", "top_share", ".0%"), ("all", "counts_text", "s")]),
    "seeds": ("seed sensitivity: outcome flips when only the policy seed changes", [
        ("scenarios", "scenarios", "d"), ("seeds", "seeds", "d"), ("flip rate", "flip_rate", ".0%")]),
    "world_model": ("world model: predicted vs true future (copy-current-frame baseline)", [
        ("decisions", "decisions", "d"), ("PSNR", "future_psnr", ".2f"), ("copy PSNR", "baseline_psnr", ".2f"), ("SSIM", "future_ssim", ".3f"),
        ("copy SSIM", "baseline_ssim", ".3f"), ("PSNR agentview", "future_psnr_agentview", ".2f"), ("PSNR wrist", "future_psnr_wrist", ".2f"),
        ("PSNR occluded", "future_psnr_occluded", ".2f"), ("copy occluded", "baseline_psnr_occluded", ".2f"), ("PSNR visible", "future_psnr_visible", ".2f")]),
    "value": ("value predictions vs what happened", [
        ("decisions", "decisions", "d"), ("AUROC", "auroc", ".3f"), ("Brier", "brier", ".3f"), ("ECE", "ece", ".3f"),
        ("over-estimation", "overestimation", "+.3f"), ("over-est. (failed)", "overestimation_failed", "+.3f")]),
    "selection": ("best-of-N selection against counterfactual true outcomes", [
        ("decisions", "decisions", "d"), ("measured", "measured", "d"), ("regret", "regret", ".3f"), ("rank", "rank", ".2f"), ("Spearman", "spearman", "+.2f"),
        ("worse than direct", "worse_than_direct", ".0%"), ("better than direct", "better_than_direct", ".0%"), ("spread", "action_spread", ".2f")]),
}


def _print_tables(tables: dict[str, list[dict]], layout: dict, hints: dict[str, str] | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    for name, (title, columns) in layout.items():
        rows = tables.get(name)
        if name == "selection" and rows and not any(r.get("measured") for r in rows):
            rows = None  # decisions without a measured true outcome: nothing to show but the hint
        if not rows:
            if hints and name in hints:
                console.print(escape(f"{title}: no data in this run; {hints[name]}"), style="dim")
            continue
        keys = [k for k in ("policy", "mode", "setting", "perturbation", "severity") if k in rows[0]]
        table = Table(title=title)
        for column in keys + [c[0] for c in columns]:
            table.add_column(column, justify="left" if column in keys else "right")
        for r in rows:
            table.add_row(*[str(r[k]) for k in keys], *[_fmt(r.get(field), spec) for _, field, spec in columns])
        console.print(table)


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped: do not squeeze tables into 80 columns
        console = Console(width=160)
    return console


# --- other commands ----------------------------------------------------------------------------------
def cmd_show(args) -> int:
    from rich.table import Table

    from stress.store import RunStore

    store = RunStore.open(args.run)
    store.consolidate()
    from stress.report.search import load_report

    search = load_report(store.path)
    if search is not None:
        _print_search(search)
    _print_summary(store)
    _print_degradation(store)
    _print_protocol(store)
    if args.episodes:
        table = Table(title="episodes")
        for column in ("episode_key", "task", "init", "mode", "perturbation", "success", "steps", "wall_s", "error"):
            table.add_column(column)
        for r in store.query("SELECT * FROM episodes ORDER BY task_id, init_index, perturbation, mode"):
            table.add_row(r["episode_key"], str(r["task_id"]), str(r["init_index"]), r["mode"], r["perturbation"], str(r["success"]), str(r["steps"]), f"{r['wall_s']:.1f}", (r["error"] or "")[:60])
        _console().print(table)
    return 0


def cmd_gallery(args) -> int:
    _build_gallery(args.run, args.out, args.workers, args.max_cards)  # a video that could not be made is a warning; its card says why
    return 0


def _build_gallery(run, out, workers, max_cards):
    """Build a gallery with a progress bar for the videos; print where it is and what it cost."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from stress.report.gallery import build_gallery

    console = Console(stderr=True)
    started = time.perf_counter()
    with Progress(TextColumn("[bold]gallery videos"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=not console.is_terminal) as bars:
        task = bars.add_task("videos", total=None)
        result = build_gallery(run, out, workers=workers, max_cards=max_cards, progress=lambda done, total: bars.update(task, completed=done, total=total))
    for line in result.missing:
        console.print(f"warning: {line}", markup=False, highlight=False)
    print(f"gallery: {result.failures} failed episodes, {result.cards} full cards; videos: {result.rendered} rendered, {result.cached} cached "
          f"({time.perf_counter() - started:.0f} s)")
    print(f"open: {result.path.resolve().as_uri()}")
    return result


def cmd_compare(args) -> int:
    from stress.report.degradation import compare, load
    from stress.store import RunStore

    stores = [RunStore.open(path) for path in (args.run_a, args.run_b)]
    for store in stores:
        store.consolidate()
    result = compare(load(stores[0]), load(stores[1]))
    if not result["common_scenarios"]:
        raise UserError(f"runs {stores[0].path.name} and {stores[1].path.name} share no scenario (task, init state, perturbation, seed); nothing to compare")
    console = _console()
    console.print(f"A = {stores[0].path.name}, B = {stores[1].path.name}: {result['common_scenarios']} common scenarios (matched on {', '.join(result['matched_on'])})")
    _print_tables(result, {
        "success": ("success on the common scenarios", [("n", "n", "d"), ("A", "a", ".0%"), ("B", "b", ".0%"), ("A only", "a_only", "d"), ("B only", "b_only", "d"),
                                                        ("McNemar p", "mcnemar_p", ".3f"), ("B - A", "difference", "+.0%")]),
        "figures": ("prediction and selection figures on the common scenarios", [
            (f"{label} {side.upper()}", f"{field}_{side}", spec) for label, field, spec in (
                ("PSNR", "future_psnr", ".2f"), ("AUROC", "auroc", ".3f"), ("over-est.", "overestimation", "+.3f"), ("regret", "regret", ".3f"))
            for side in "ab"]),
    })
    return 0


def cmd_list(args) -> int:
    from rich.table import Table

    console = _console()
    if args.what == "perturbations":
        from rich.markup import escape

        from perturbations.base import registry

        table = Table(title="perturbations (--perturb NAME[:LEVEL], levels 0-5, 0 = identity)")
        for column in ("name", "layer", "simulators", "cameras", "what it does", "severity 1-5"):
            table.add_column(column)
        for name, cls in registry().items():
            cells = (name, cls.layer.value, ", ".join(cls.simulators), "one camera or both (all)" if cls.per_camera else "—", cls.summary, cls.severity_meaning)
            table.add_row(*(escape(c) for c in cells))  # '[dx, dy]' is not rich markup
        console.print(table)
        # each family's declared parameter space: explicit "params" of a scenario, and the search grid
        # (grid index i = identity (or default) + i * step; index 0 is the identity)
        for name, cls in registry().items():
            params = Table(title=f"{name} parameters", title_justify="left")
            for column in ("parameter", "kind", "range", "unit", "identity", "default", "search grid"):
                params.add_column(column, no_wrap=True)
            params.add_column("meaning")
            for row in cls.space.rows():
                cells = (row["name"], row["kind"], row["range"], row["unit"], row["identity"], row["default"], row["grid"], row["meaning"])
                params.add_row(*(escape(c) for c in cells))
            console.print(params)
    elif args.what == "policies":
        from stress.policies import policy_class, policy_names

        table = Table(title="policies (--policy NAME)")
        for column in ("name", "modes", "uses images", "description"):
            table.add_column(column)
        for name in policy_names():
            cls = policy_class(name)
            table.add_row(name, ", ".join(cls.modes), str(cls.uses_images), (cls.__doc__ or "").strip().splitlines()[0])
        console.print(table)
    elif args.what == "suites":
        from stress.envs import simulator, simulator_names

        for name in simulator_names():
            sim = simulator(name)
            console.print(f"[bold underline]{name}[/bold underline]: {sim.note}; cameras {', '.join(sim.cameras)}; {sim.action_dim}-D actions")
            for suite, max_steps in sim.suites.items():
                tasks = sim.tasks(suite)
                console.print(f"[bold]{suite}[/bold]: {len(tasks)} tasks, {max_steps} max steps")
                for i, text in enumerate(tasks):
                    console.print(f"  {i:2d}  {text} ({sim.n_init_states(suite, i)} init states)")
    elif args.what == "properties":
        from scenarios.properties import properties

        table = Table(title="properties (stress search --property NAME)")
        for column in ("name", "episodes per scenario", "needs", "violated when"):
            table.add_column(column)
        for name, prop in properties().items():
            table.add_row(name, ", ".join(prop.variants), ", ".join(prop.requires) or "—", prop.doc)
        console.print(table)
    elif args.what == "protocols":
        from scenarios.protocols import PROTOCOLS

        table = Table(title="protocols (stress run --protocol NAME; docs/protocols.md)")
        for column in ("name", "suites: step limit, paper %", "trials x seeds", "image, settle", "mode, policy options", "verdict", "what"):
            table.add_column(column)
        for p in PROTOCOLS.values():
            table.add_row(p.name, "\n".join(f"{s}: {p.step_limit(s)}, {p.paper_figure(s):.1f}" for s in p.suites) + f"\naverage {p.paper_average:.1f}",
                          f"{p.trials} x {', '.join(map(str, p.seeds))}", f"{p.image_size} px, {p.settle_steps} steps",
                          f"{p.mode}, " + (", ".join(f"{k}={v}" for k, v in p.policy_options) or "none"), f"average within ±{p.tolerance:.1f} points", p.summary)
        console.print(table)
    elif args.what == "samplers":
        from scenarios.samplers import SAMPLERS

        console.print("samplers (stress search --sampler NAME): " + ", ".join(SAMPLERS))
    else:
        raise UserError(f"unknown list {args.what!r}; valid: perturbations, policies, suites, properties, samplers, protocols")
    return 0


def cmd_replay(args) -> int:
    from stress.runners.replay import replay
    from stress.store import RunStore

    if args.run.suffix == ".json" or args.run.is_file():
        return _replay_finding(args)
    if args.episode_key is None:
        raise UserError("replay needs RUN EPISODE_KEY, or a finding file RUN/findings/ID.json")
    store = RunStore.open(args.run)
    result = replay(store, args.episode_key, args.video)
    verdict = "matches" if result.matches else "DIFFERS FROM"
    print(f"replayed {result.key}: success={result.success} steps={result.steps} ({verdict} the recorded success={result.recorded_success} steps={result.recorded_steps})")
    print(f"video: {result.video}")
    return 0 if result.matches else 1


def _bench_planted(args) -> int:
    from datetime import date

    from scenarios.planted import benchmark
    from scenarios.samplers import SAMPLERS

    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds} invalid; valid: 1 or more")
    results = {shrinker: benchmark(SAMPLERS, args.seeds, 100, shrinker) for shrinker in ("greedy", "hypothesis")}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"planted-{date.today().isoformat()}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True))
    rows = [{"shrinker": shrinker, "sampler": name, **r} for shrinker, by_sampler in results.items() for name, r in by_sampler.items()]
    _print_tables({"planted": rows}, {"planted": (f"planted-failure benchmark: {args.seeds} seeds x budget 100 (3 planted modes)", [
        ("shrinker", "shrinker", "s"), ("sampler", "sampler", "s"), ("violations/100", "violations_per_100", ".1f"), ("median first", "median_first_violation", ".1f"),
        ("all modes (seeds)", "all_modes_found", "d"), ("findings", "findings", "d"), ("thresholds exact", "thresholds_recovered", "d"),
        ("1-minimal", "one_minimal", "d"), ("shrink median", "median_shrink_evaluations", ".1f"), ("shrink max", "max_shrink_evaluations", "d")])})
    print(f"results: {path}")
    return 0


def _replay_finding(args) -> int:
    from scenarios.session import replay_finding

    if args.episode_key is not None:
        raise UserError(f"a finding replays as a whole; drop the episode key {args.episode_key!r}")
    result = replay_finding(args.run, args.times, args.workers)
    print(f"finding {result['id']} ({result['property']}): {result['scenario']}")
    print(f"violation reproduced {result['reproduced']} of {result['of']} fresh runs: {result['label']}")
    return 0 if result["reproduced"] == result["of"] else 1


def _search_config(args) -> dict:
    from scenarios.session import load_space_file

    if args.property is None and args.resume is None:
        from scenarios.properties import properties

        raise UserError(f"search needs --property; valid: {', '.join(properties())}")
    if args.space is not None:
        space = load_space_file(args.space)
    else:
        space = {"suite": args.suite, "tasks": _int_list(args.tasks, "--tasks"), "inits": _int_list(args.inits, "--inits"),
                 "families": [f.strip() for f in args.families.split(",") if f.strip()], "max_families": args.max_families,
                 "cameras": [c.strip() for c in args.cameras.split(",") if c.strip()], "seeds": _int_list(args.policy_seeds, "--policy-seeds")}
    if args.true_futures is not None:
        from stress.measurement.groundtruth import TRUE_FUTURES

        if args.true_futures not in TRUE_FUTURES:
            raise choice_error("--true-futures", args.true_futures, TRUE_FUTURES)
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max-steps {args.max_steps} invalid; valid: 1 or more")
    if args.candidates < 1:
        raise UserError(f"--candidates {args.candidates} invalid; valid: 1 or more")
    iid = args.iid if args.iid is not None else (0 if "random" in (args.sampler, args.compare) else max(1, args.budget // 5))
    from stress.envs import simulator_of

    options, image_size, _ = _remote_options(args)
    policy_options, image_size = dict(options), image_size or simulator_of(str(space.get("suite"))).default_image_size
    return {"property": args.property, "properties_file": str(args.properties_file) if args.properties_file else None, "sampler": args.sampler,
            "compare": args.compare, "budget": args.budget, "seed": args.seed, "iid": iid, "max_findings": args.max_findings, "replays": args.replays,
            "workers": args.workers, "batch": args.batch if args.batch is not None else args.workers, "shrinker": args.shrinker, "space": space, "policy": args.policy, "mode": args.mode, "candidates": args.candidates,
            "aggregation": args.aggregation, "max_steps": args.max_steps, "true_futures": args.true_futures,
            "policy_options": policy_options, "image_size": image_size}


def cmd_search(args) -> int:
    from scenarios import session
    from stress.store import RunStore

    if args.resume is not None:
        store = RunStore.open(args.resume)
        if not session.is_search(store):
            raise UserError(f"{str(args.resume)!r} is not a search run; resume it with `stress run --resume`")
        workers = store.manifest["config"]["workers"]
    else:
        store, config = None, _search_config(args)
        workers = config["workers"]
    with _runner(args, workers, env_cache=2) as runner:
        store = store or session.start(args.out, config)
        _search(store, runner)
    return 0


def _search(store, runner) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from scenarios import session

    config = store.manifest["config"]
    console = Console(stderr=True)
    console.print(f"search {store.path}: property {config['property']}, sampler {config['sampler']}, budget {config['budget']}"
                  + (f", compared with {config['compare']}" if config.get("compare") else ""))
    total = config["budget"] * (2 if config.get("compare") else 1) + config["iid"]
    counts = {"violations": 0, "findings": 0, "episodes": 0}
    with Progress(TextColumn("[bold]scenarios"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                  console=console, disable=not console.is_terminal) as progress:
        bar = progress.add_task("search", total=total, status="")

        def on_evaluation(phase, ev):
            counts["violations"] += int(ev.violated and phase in ("sample", "iid"))
            counts["episodes"] += ev.episodes_run
            if phase in ("sample", "iid"):
                progress.update(bar, advance=1)
            status = f"{counts['violations']} violations, {len(list((store.path / 'findings').glob('*.json'))) if (store.path / 'findings').is_dir() else 0} findings"
            progress.update(bar, status=status + (" (shrinking)" if phase in ("shrink", "minimality") else ""))

        report = session.run(store, on_evaluation, runner=runner)
    _print_search(report)
    print(f"episodes run: {report['episodes_run']} (sampling, shrinking, 1-minimality checks and i.i.d. slice together)")
    print(f"results: {store.path} (search.json, search.png, findings/); the episodes' tables: stress show {store.path}; "
          f"videos of the failures and findings: stress gallery {store.path}")


def _print_search(report: dict) -> None:
    from stress.report.search import search_tables

    tables = search_tables(report)
    _print_tables(tables, {
        "runs": (f"search for violations of {report['property']}: evaluations spent vs violations found", [
            ("run", "run", "s"), ("sampler", "sampler", "s"), ("scenarios", "evaluations", "d"), ("violations", "violations", "d"),
            ("per 100", "per_100", ".1f"), ("first at", "first", "d"), ("modes", "modes", "d"), ("invalid", "invalid", "d"), ("episodes run", "episodes", "d")]),
        "findings": ("findings: original -> shrunk (stress replay RUN/findings/ID.json)", [
            ("id", "id", "s"), ("failure mode", "failure_mode", "s"), ("original", "original", "s"), ("shrunk", "shrunk", "s"), ("fields", "fields", "s"),
            ("shrink evals", "shrink", "d"), ("1-minimal", "minimal", "s"), ("replay", "replay", "s"), ("verdict", "verdict", "s")]),
    })
    iid = report["iid"]
    if iid["n"]:
        low, high = iid["ci95"]
        print(f"unbiased estimate (i.i.d. {iid['source']} slice, n={iid['n']}): violation rate {iid['rate']:.1%} (95% Wilson {low:.1%}-{high:.1%}); "
              "the findings above are adversarial and say nothing about this rate")
    if not report["findings"]:
        print("no violation found within the budget")


def cmd_bench(args) -> int:
    from stress.bench.libero import run_bench

    if args.planted:
        return _bench_planted(args)
    if args.remote:
        from stress.bench.remote import measure

        figures = measure(max(20, args.repeats))
        print(json.dumps(figures, indent=1))
        return 0
    if args.aloha:
        from stress.bench.aloha import measure as measure_aloha

        if not 0 <= args.episodes <= 50:
            raise UserError(f"--episodes {args.episodes} invalid for --aloha; valid: 0-50 (init states per task in the expert's table)")
        print(json.dumps(measure_aloha(repeats=max(1, args.repeats), n_init=args.episodes), indent=1))
        return 0
    if args.remote_throughput:
        from stress.bench.remote import throughput

        for flag, value in (("--episodes", args.episodes), ("--workers", args.workers), ("--max-steps", args.max_steps)):
            if value is not None and value < 1:
                raise UserError(f"{flag} {value} invalid; valid: 1 or more")
        print(json.dumps(throughput(args.episodes, args.workers, args.suite, args.task, args.max_steps), indent=1))
        return 0
    run_bench(args.suite, args.task, args.init, args.repeats, args.out)
    return 0


def _stage_progress():
    """A rich progress bar per pipeline stage; returns (callback, progress context)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
    tasks = {}

    def update(stage, done, total):
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    return update, bars


def cmd_train_reference(args) -> int:
    import shutil

    from stress.training.build import TRAIN_TASKS, train_reference
    from stress.policies.reference.policy import SHIPPED_CHECKPOINT

    if args.steps < 1:
        raise UserError(f"--steps {args.steps} invalid; valid: 1 or more")
    from stress.training.train import RECON_LOSSES

    if args.recon_loss not in RECON_LOSSES:
        raise choice_error("--recon-loss", args.recon_loss, RECON_LOSSES)
    if args.own_steps < 0:
        raise UserError(f"--own-steps {args.own_steps} invalid; valid: 0 or more")
    if args.decoder_steps < 0:
        raise UserError(f"--decoder-steps {args.decoder_steps} invalid; valid: 0 or more")
    if args.own_rounds < 1:
        raise UserError(f"--own-rounds {args.own_rounds} invalid; valid: 1 or more (--own-steps 0 skips the DAgger rounds)")
    if args.perturbed_rounds < 0:
        raise UserError(f"--perturbed-rounds {args.perturbed_rounds} invalid; valid: 0 or more")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers} invalid; valid: 1 or more")
    inits = _int_list(args.inits, "--inits")
    bad = [i for i in inits if not 0 <= i < 50]
    if bad:
        raise UserError(f"init state {bad[0]} in --inits out of range; valid: 0-49")
    update, bars = _stage_progress()
    with bars:
        checkpoint = train_reference(args.out, args.data, args.steps, own_steps=args.own_steps, seed=args.seed, workers=args.workers, inits=tuple(inits),
                                     progress=update, recon_loss=args.recon_loss, own_rounds=args.own_rounds,
                                     decoder_steps=args.decoder_steps, perturbed_rounds=args.perturbed_rounds)
    print(f"checkpoint: {checkpoint} ({checkpoint.stat().st_size / 1e6:.1f} MB), manifest: {args.out / 'manifest.json'}")
    if args.ship:
        SHIPPED_CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, SHIPPED_CHECKPOINT)
        shutil.copyfile(args.out / "manifest.json", SHIPPED_CHECKPOINT.with_name("manifest.json"))
        print(f"shipped: {SHIPPED_CHECKPOINT}")
    if args.evaluate:
        ev = build_parser().parse_args(["evaluate-reference", "--checkpoint", str(checkpoint), "--workers", str(args.workers)])
        cmd_evaluate_reference(ev, tasks=TRAIN_TASKS)
    return 0


def cmd_evaluate_reference(args, tasks=None) -> int:
    from stress.training.build import TRAIN_TASKS
    from stress.training.evaluate import evaluate, evaluation_specs
    from stress.policies.reference.policy import checkpoint_path, load_checkpoint
    from stress.policies.planning import check_aggregation
    from stress.store import RunStore

    checkpoint = args.checkpoint or checkpoint_path()
    load_checkpoint(checkpoint)  # a bad checkpoint fails here, with its one-line message
    check_aggregation(args.aggregation)
    tasks = tasks or TRAIN_TASKS
    inits = _int_list(args.inits, "--inits")
    planning_inits = [] if args.planning_inits == "none" else _int_list(args.planning_inits, "--planning-inits")
    for i in inits + planning_inits:
        if not 0 <= i < 50:
            raise UserError(f"init state {i} out of range; valid: 0-49")
    if args.resume:
        store = RunStore.open(args.resume)
    else:
        specs = evaluation_specs(tasks, inits, ("direct",), args.candidates, args.aggregation, args.seed) + evaluation_specs(tasks, planning_inits, ("planning",), args.candidates, args.aggregation, args.seed)
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "command"}
        store = RunStore.create(args.out, datetime.now().strftime("%Y%m%d-%H%M%S") + "-evaluate-reference", specs, config)
    print(f"evaluation run: {store.path}")
    update, bars = _stage_progress()
    with bars:
        figures = evaluate(store, checkpoint, tasks, inits, planning_inits, args.candidates, args.aggregation, args.future_inits, args.workers, args.seed, progress=update)
    _print_evaluation(figures)
    print(f"figures: {store.path / 'evaluation.json'}")
    return 0


def _print_evaluation(figures: dict) -> None:
    from rich.console import Console
    from rich.table import Table

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


def cmd_serve(args) -> int:
    from stress.policies import policy_class, policy_names
    from stress.core.policy import Observation
    from stress.policies.cosmos_server import given_flags, make_server
    from stress.policies.serve import PolicyServer

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port} invalid; valid: 0-65535")
    if args.threads < 0:
        raise UserError(f"--threads {args.threads} invalid; valid: 0 (torch's choice) or more")
    if args.policy != "cosmos" and given_flags(args):
        raise UserError(f"{', '.join(given_flags(args))} only apply to --policy cosmos; got --policy {args.policy!r}")
    if args.policy == "cosmos":  # normally run in Cosmos Policy's own environment (docs/cosmos-policy.md)
        server = make_server(args)
    else:
        if args.policy == "remote":
            raise UserError("policy 'remote' cannot be served (it is the client); valid: reference, cosmos")
        if args.policy not in policy_names():
            raise choice_error("policy", args.policy, ("reference", "cosmos"))
        cls = policy_class(args.policy)
        if not hasattr(cls, "serving_metadata"):
            raise UserError(f"policy {args.policy!r} cannot be served (it reads the simulator's state, not images); valid: reference, cosmos")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        first = cls()
        server = PolicyServer(cls, first.serving_metadata(), host=args.host, port=args.port, observation_type=Observation, user_errors=(UserError,))
        server._idle.append(first)
    identity = "{name}:{version}".format(**server.metadata["policy"])
    try:
        server.serve_forever(ready=lambda port: print(f"stress serve: {identity} on ws://{args.host}:{port}", file=sys.stderr, flush=True))
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    return 0


COMMANDS = {"serve": cmd_serve, "train-reference": cmd_train_reference, "evaluate-reference": cmd_evaluate_reference, "run": cmd_run, "list": cmd_list, "show": cmd_show, "compare": cmd_compare, "study": cmd_study, "replay": cmd_replay, "bench": cmd_bench,
            "search": cmd_search, "gallery": cmd_gallery}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
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


if __name__ == "__main__":
    sys.exit(main())
