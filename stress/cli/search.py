"""``stress search``: search the scenario space for the smallest scenarios that break a property; shrink and replay them."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scenarios import session
from scenarios.evaluate import PolicySetting
from scenarios.properties import properties
from stress.cli.args import DEFAULT_AGGREGATION, DEFAULT_CANDIDATES, DEFAULT_SUITE, add_backend_arguments, add_server_arguments, int_list, positive_int
from stress.cli.execution import remote_options, runner
from stress.cli.reports import print_search
from stress.core.errors import UserError, choice_error
from stress.envs import simulator_of
from stress.measurement.groundtruth import TRUE_FUTURES
from stress.report.search import save_search_plot
from stress.store import RunStore


def add_arguments(search) -> None:
    search.add_argument("--property", help="property to break (stress list properties)")
    search.add_argument("--properties", dest="properties_file", type=Path, help="a Python file of your own @register properties")
    search.add_argument("--budget", type=int, default=100, help="sampler evaluations (scenarios) to spend (default 100); shrinking comes on top")
    search.add_argument("--sampler", default="guided", help="random, halton, sobol, ce, bandit, novelty, guided, blind-ce, blind-novelty or blind-guided (default guided)")
    search.add_argument("--compare", help="also run this sampler (e.g. random) on the same space, budget and seed, for the report")
    search.add_argument("--space", type=Path, help="a JSON space file (suite, tasks, inits, families, max_families, cameras, seeds); overrides the flags below")
    search.add_argument("--suite", default=DEFAULT_SUITE, help=f"LIBERO suite (default {DEFAULT_SUITE})")
    search.add_argument("--tasks", type=int_list, default="0", help="task ids, e.g. 0,1 or 0-3 (default 0)")
    search.add_argument("--inits", type=int_list, default="0-9", help="shipped init states searched (default 0-9)")
    search.add_argument("--families", default="occlusion,lighting,object_pose", help="perturbation families searched (default occlusion,lighting,object_pose)")
    search.add_argument("--max-families", type=int, default=2, help="most families composed in one scenario (default 2)")
    search.add_argument("--cameras", default="both", help="camera targets of per-camera families: agentview, wrist, both (default both)")
    search.add_argument("--policy-seeds", type=int_list, default="0", help="policy seeds searched, e.g. 0-3 (default 0)")
    search.add_argument("--policy", default="reference", help="policy backend (default reference)")
    search.add_argument("--policy-server", metavar="URL", help="with --policy remote or openpi: the policy server, ws://HOST:PORT (stress serve; openpi's serve_policy.py)")
    add_server_arguments(search)
    search.add_argument("--mode", default="direct", help="mode of the property's own episodes: direct or planning (default direct)")
    search.add_argument("--candidates", type=positive_int, default=DEFAULT_CANDIDATES, help=f"best-of-N candidates (default {DEFAULT_CANDIDATES})")
    search.add_argument("--aggregation", default=DEFAULT_AGGREGATION, help=f"best-of-N aggregation (default {DEFAULT_AGGREGATION})")
    search.add_argument("--max-steps", type=positive_int, help="step budget per episode (default: the suite's)")
    search.add_argument("--true-futures", help="executed, all or none (default: executed when the property reads predicted futures, else none)")
    search.add_argument("--max-findings", type=int, default=5, help="violations of new modes shrunk into findings (default 5)")
    search.add_argument("--replays", type=int, default=1, help="fresh runs of each shrunk scenario to check it reproduces (default 1)")
    search.add_argument("--iid", type=int, help="uniform scenarios for the unbiased violation rate (default budget/5; none needed with --compare random)")
    search.add_argument("--workers", type=positive_int, default=1, help="simulator processes (default 1)")
    search.add_argument("--batch", type=int, help="scenarios proposed and run together (default: --workers); part of what the search's path depends on")
    search.add_argument("--shrinker", default="greedy", help="greedy (grid bisection, the default) or hypothesis (Hypothesis's shrinker; slower, see docs/search.md)")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--out", type=Path, default=Path("results"), help="results folder (default results/)")
    search.add_argument("--resume", type=Path, metavar="RUN", help="continue a search run folder (after a crash: nothing run twice)")
    add_backend_arguments(search)


def run(args) -> int:
    if args.resume is not None:
        store = RunStore.open(args.resume)
        if not session.is_search(store):
            raise UserError(f"{str(args.resume)!r} is not a search run; resume it with `stress run --resume`")
        workers = store.manifest["config"]["workers"]
    else:
        store, config = None, _config(args)
        workers = config["workers"]
    with runner(args, workers, env_cache=2) as chosen:
        store = store or session.start(args.out, config)
        _search(store, chosen)
    return 0


def _config(args) -> dict:
    """The search's configuration (its manifest's config) from the flags or a --space file."""
    if args.property is None and args.resume is None:
        raise UserError(f"search needs --property; valid: {', '.join(properties())}")
    if args.space is not None:
        space = session.load_space_file(args.space)
    else:
        space = {"suite": args.suite, "tasks": args.tasks, "inits": args.inits,
                 "families": [f.strip() for f in args.families.split(",") if f.strip()], "max_families": args.max_families,
                 "cameras": [c.strip() for c in args.cameras.split(",") if c.strip()], "seeds": args.policy_seeds}
    if args.true_futures is not None and args.true_futures not in TRUE_FUTURES:
        raise choice_error("--true-futures", args.true_futures, TRUE_FUTURES)
    iid = args.iid if args.iid is not None else (0 if "random" in (args.sampler, args.compare) else max(1, args.budget // 5))
    options, image_size, _ = remote_options(args)
    setting = PolicySetting(args.policy, args.mode, args.candidates, args.aggregation, args.max_steps, tuple(options),
                            image_size or simulator_of(str(space.get("suite"))).default_image_size)
    return {"property": args.property, "properties_file": str(args.properties_file) if args.properties_file else None, "sampler": args.sampler,
            "compare": args.compare, "budget": args.budget, "seed": args.seed, "iid": iid, "max_findings": args.max_findings, "replays": args.replays,
            "workers": args.workers, "batch": args.batch if args.batch is not None else args.workers, "shrinker": args.shrinker, "space": space,
            "true_futures": args.true_futures, **setting.config()}


def _search(store, chosen_runner) -> None:
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

        report = session.run(store, on_evaluation, runner=chosen_runner)
    save_search_plot(report, store.path / "search.png")
    print_search(report)
    print(f"episodes run: {report['episodes_run']} (sampling, shrinking, 1-minimality checks and i.i.d. slice together)")
    print(f"results: {store.path} (search.json, search.png, findings/); the episodes' tables: stress show {store.path}; "
          f"videos of the failures and findings: stress gallery {store.path}")
