"""``stress bench``: render-on-demand speed-up, runner overhead and memory (LIBERO); or, instead, the search's
planted-failure benchmark, a policy server's round trip or throughput, or ALOHA's figures."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from scenarios.planted import benchmark
from scenarios.samplers import SAMPLERS
from stress.bench.aloha import measure as measure_aloha
from stress.bench.libero import run_bench
from stress.bench.remote import measure as measure_remote
from stress.bench.remote import throughput, wires
from stress.cli.args import DEFAULT_SUITE, positive_int
from stress.cli.common import print_tables
from stress.core.errors import UserError


def add_arguments(bench) -> None:
    bench.add_argument("--suite", default=DEFAULT_SUITE)
    bench.add_argument("--task", type=int, default=0)
    bench.add_argument("--init", type=int, default=0)
    bench.add_argument("--repeats", type=int, default=2)
    bench.add_argument("--out", type=Path, default=Path("results") / "bench")
    bench.add_argument("--planted", action="store_true", help="instead: the search's planted-failure benchmark (no simulator; every sampler, 20 seeds, budget 100)")
    bench.add_argument("--seeds", type=positive_int, default=20, help="--planted: search seeds per sampler (default 20)")
    bench.add_argument("--remote", action="store_true", help="instead: a policy server's round trip vs an in-process call (two 256 px images, a best-of-8 reply)")
    bench.add_argument("--aloha", action="store_true", help="instead: ALOHA's render on demand vs gym-aloha's stock loop, snapshot + restore, and the ALOHA expert's success over --episodes init states per task (default 10; 0: no table)")
    bench.add_argument("--wires", action="store_true", help="instead: round trip per decision on 127.0.0.1 for each wire (stress-policy/1, openpi's), two 224 px images, a 10 x 7 chunk")
    bench.add_argument("--remote-throughput", action="store_true",
                       help="instead: episodes per hour of --workers simulator processes fed by one `stress serve --policy reference`, vs the model in-process")
    bench.add_argument("--episodes", type=int, default=10, help="--remote-throughput: clean direct episodes per side, init states 0..N-1; --aloha: init states per task in the expert table (default 10)")
    bench.add_argument("--workers", type=positive_int, default=2, help="--remote-throughput: simulator processes (default 2)")
    bench.add_argument("--max-steps", type=positive_int, help="--remote-throughput: step budget per episode (default: the suite's)")


def run(args) -> int:
    if args.planted:
        return _planted(args)
    if args.remote:
        print(json.dumps(measure_remote(max(20, args.repeats)), indent=1))
        return 0
    if args.wires:
        print(json.dumps(wires(max(20, args.repeats)), indent=1))
        return 0
    if args.aloha:
        if not 0 <= args.episodes <= 50:
            raise UserError(f"--episodes {args.episodes} invalid for --aloha; valid: 0-50 (init states per task in the expert's table)")
        print(json.dumps(measure_aloha(repeats=max(1, args.repeats), n_init=args.episodes), indent=1))
        return 0
    if args.remote_throughput:
        if args.episodes < 1:
            raise UserError(f"--episodes {args.episodes} invalid; valid: 1 or more")
        print(json.dumps(throughput(args.episodes, args.workers, args.suite, args.task, args.max_steps), indent=1))
        return 0
    run_bench(args.suite, args.task, args.init, args.repeats, args.out)
    return 0


def _planted(args) -> int:
    results = {shrinker: benchmark(SAMPLERS, args.seeds, 100, shrinker) for shrinker in ("greedy", "hypothesis")}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"planted-{date.today().isoformat()}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True))
    rows = [{"shrinker": shrinker, "sampler": name, **r} for shrinker, by_sampler in results.items() for name, r in by_sampler.items()]
    print_tables({"planted": rows}, {"planted": (f"planted-failure benchmark: {args.seeds} seeds x budget 100 (3 planted modes)", [
        ("shrinker", "shrinker", "s"), ("sampler", "sampler", "s"), ("violations/100", "violations_per_100", ".1f"), ("median first", "median_first_violation", ".1f"),
        ("all modes (seeds)", "all_modes_found", "d"), ("findings", "findings", "d"), ("thresholds exact", "thresholds_recovered", "d"),
        ("1-minimal", "one_minimal", "d"), ("shrink median", "median_shrink_evaluations", ".1f"), ("shrink max", "max_shrink_evaluations", "d")])})
    print(f"results: {path}")
    return 0
