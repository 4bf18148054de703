"""``stress bench``: the named benchmarks (``--only NAME,...``; stress.bench.named), each written with its raw repeats
into ``OUT/bench.json``; ``--docs FILE`` regenerates the tables of docs/benchmarks.md and docs/ray.md from such a file.
Plain ``stress bench``: LIBERO's render, overhead, snapshot, groundtruth and families. The older flags (--planted, --maps,
--remote, --aloha, --wires, --remote-throughput) are the benchmarks of those names."""

from __future__ import annotations

import json
from pathlib import Path

from scenarios.boundary import pair_parts
from scenarios.planted import KINDS, MODES_PER_LANDSCAPE
from stress.bench.docs import block, regenerate
from stress.bench.named import BENCHMARKS, DEFAULT, load, parse_only, record, run_named
from stress.cli.args import DEFAULT_SUITE, int_list_in, positive_int
from stress.cli.common import print_tables
from stress.core.errors import UserError

FLAGS = {"planted": "planted", "maps": "maps", "remote": "remote", "aloha": "aloha", "wires": "wires", "remote_throughput": "throughput"}


def add_arguments(bench) -> None:
    bench.add_argument("--suite", default=DEFAULT_SUITE)
    bench.add_argument("--task", type=int, default=0)
    bench.add_argument("--init", type=int, default=0)
    bench.add_argument("--only", metavar="NAMES", help=f"comma-separated benchmarks, or all: {', '.join(BENCHMARKS)} (default: {','.join(DEFAULT)})")
    bench.add_argument("--docs", type=Path, metavar="BENCH_JSON", help="instead: regenerate the marked tables of docs/benchmarks.md and docs/ray.md from this bench.json")
    bench.add_argument("--repeats", type=positive_int, default=2, help="timed repeats of each loop, kept raw in bench.json (default 2)")
    bench.add_argument("--out", type=Path, default=Path("results") / "bench", help="folder of bench.json (default results/bench; other benchmarks there are kept)")
    bench.add_argument("--scaling-episodes", type=positive_int, default=20, metavar="N",
                       help="workers, ray: expert episodes per task of each whole command, 2 tasks (default 20: 40 episodes, the steady state over 38 or 39)")
    bench.add_argument("--planted", action="store_true",
                       help="= --only planted: the search's planted-failure benchmark (no simulator; every sampler on the landscapes of --tune-seeds and of --report-seeds)")
    bench.add_argument("--tune-seeds", type=int_list_in(0, 10**6), default=list(range(0, 20)), help="--planted: the landscapes the samplers' constants were tuned on (default 0-19)")
    bench.add_argument("--report-seeds", type=int_list_in(0, 10**6), default=list(range(100, 120)), help="--planted: held-out landscapes, the figure to report (default 100-119)")
    bench.add_argument("--budget", type=positive_int, default=100, help="--planted: scenarios per search (default 100; modes are also counted at 25 and 50)")
    bench.add_argument("--shrinker", default="greedy", help="--planted: greedy or hypothesis (default greedy)")
    bench.add_argument("--maps", action="store_true",
                       help="= --only maps: the failure-boundary maps' benchmark (no simulator): adaptive threshold estimation vs a 5-level grid on synthetic curves with a known threshold, "
                            "and pair maps on synthetic surfaces with a known boundary curve")
    bench.add_argument("--map-seeds", type=int_list_in(0, 10**6), default=list(range(100, 200)), help="--maps: the synthetic curves (default 100-199)")
    bench.add_argument("--pair-seeds", type=int_list_in(0, 10**6), default=list(range(300, 340)), help="--maps: the synthetic surfaces of the pair maps (default 300-339)")
    bench.add_argument("--map-budget", type=positive_int, default=300, help="--maps: most episodes per curve and design (default 300)")
    bench.add_argument("--widths", default="0.2,0.1", help="--maps: target widths of the threshold's 95%% interval, shares of the axis (default 0.2,0.1)")
    bench.add_argument("--remote", action="store_true", help="= --only remote: a policy server's round trip vs an in-process call (two 256 px images, a best-of-8 reply)")
    bench.add_argument("--aloha", action="store_true", help="= --only aloha: ALOHA's render on demand vs gym-aloha's stock loop, snapshot + restore, and the ALOHA expert's success over --episodes init states per task (default 10; 0: no table)")
    bench.add_argument("--wires", action="store_true", help="= --only wires: round trip per decision on 127.0.0.1 for each wire (stress-policy/1, openpi's: two 224 px images, a 10 x 7 chunk; "
                       "Cosmos Policy's deploy.py: three 224 px images, deploy.py's direct reply)")
    bench.add_argument("--remote-throughput", action="store_true",
                       help="= --only throughput: episodes per hour of --workers simulator processes fed by one policy server, per wire (stress-policy/1, openpi, deploy.py), vs the model in-process")
    bench.add_argument("--episodes", type=int, default=10, help="throughput: clean direct episodes per side, init states 0..N-1; aloha: init states per task in the expert table (default 10)")
    bench.add_argument("--workers", type=positive_int, default=2, help="--remote-throughput: simulator processes (default 2)")
    bench.add_argument("--max-steps", type=positive_int, help="--remote-throughput: step budget per episode (default: the suite's)")


def run(args) -> int:
    if args.docs is not None:
        changed = regenerate(Path.cwd(), load(args.docs))
        print("\n".join(f"rewrote {p}" for p in changed) or "docs already current")
        return 0
    names = parse_only(args.only) if args.only else [name for flag, name in FLAGS.items() if getattr(args, flag)] or list(DEFAULT)
    _check(args, names)
    for name in names:
        entry = run_named(name, args)
        path = record(args.out, name, entry)
        PRINTERS.get(name, _print_block)(args, name, entry)
    print(f"results: {path}")
    return 0


def _check(args, names: list[str]) -> None:
    """The flags the chosen benchmarks read, checked before any of them runs."""
    if "aloha" in names and not 0 <= args.episodes <= 50:
        raise UserError(f"--episodes {args.episodes} invalid for --aloha; valid: 0-50 (init states per task in the expert's table)")
    if "throughput" in names and args.episodes < 1:
        raise UserError(f"--episodes {args.episodes} invalid; valid: 1 or more")
    if "planted" in names:
        overlap = sorted(set(args.tune_seeds) & set(args.report_seeds))
        if overlap:
            raise UserError(f"--report-seeds {overlap[0]} invalid; valid: seeds not in --tune-seeds (held-out landscapes)")
    if "maps" in names:
        args.widths = _widths(args.widths)


def _print_block(args, name: str, entry: dict) -> None:
    print(f"## {name}\n{block(name, entry)}\n")


def _print_planted(args, name: str, entry: dict) -> None:
    results = entry["figures"]
    rows = {split: [{"sampler": name, **r} for name, r in by_sampler.items()] for split, by_sampler in results.items()}
    modes = [(f"modes @{b}", f"modes_{b}", ".0%") for b in (25, 50, 100) if b <= args.budget]
    kinds = [(kind, f"found_{kind}", ".0%") for kind in KINDS]
    columns = [("sampler", "sampler", "s"), *modes, ("recorded modes", "recorded_modes", ".1f"), ("own set", "own_set", ".0%"), ("violations/100", "violations_per_100", ".1f"), ("x random", "vs_random", ".2f"),
               ("median first", "median_first_violation", ".1f"), ("findings", "findings", "d"), ("exact corner", "exact", "d"), ("1-minimal", "one_minimal", "d"),
               ("shrink median", "median_shrink_evaluations", ".1f"), ("shrink max", "max_shrink_evaluations", "d")]
    layout = {split: (f"planted landscapes, {name} seeds {_span(seeds)}: {len(seeds)} landscapes x {MODES_PER_LANDSCAPE} modes, budget {args.budget}, shrinker {args.shrinker}", columns)
              for split, name, seeds in (("tune", "tuning", args.tune_seeds), ("report", "held-out", args.report_seeds))}
    layout["kinds"] = (f"held-out seeds {_span(args.report_seeds)}: share of planted modes of each kind found by budget {args.budget}", [("sampler", "sampler", "s"), *kinds])
    print_tables({**rows, "kinds": rows["report"]}, layout)


def _widths(text: str) -> tuple[float, ...]:
    try:
        widths = tuple(float(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if not widths or not all(0 < w < 1.4 for w in widths):
        raise UserError(f"--widths {text!r} invalid; valid: comma-separated shares of the axis in (0, 1.4), e.g. 0.2,0.1")
    return widths


def _print_maps(args, name: str, entry: dict) -> None:
    result, budget = entry["figures"], args.map_budget
    rows = []
    for width, by in result["by_width"].items():
        for design in ("adaptive", "grid"):
            r = by[design]
            rows.append({"width": width, "design": design if design == "adaptive" else "5-level grid", **r,
                         "reached_text": f"{r['reached']}/{len(args.map_seeds)}"})
        p = by["paired"]
        rows.append({"width": width, "design": f"paired ({p['n']} curves both reached)", "mean_episodes": None, "median_episodes": None,
                     "reached_text": f"{p['adaptive_episodes']} vs {p['grid_episodes']}", "saved": p["median_saved"]})
    columns = [("target width", "width", "s"), ("design", "design", "s"), ("median episodes", "median_episodes", ".0f"), ("mean episodes", "mean_episodes", ".1f"),
               ("reached", "reached_text", "s"), ("coverage", "coverage", ".0%"), ("median |error|", "median_error", ".3f"), ("levels", "median_levels", ".0f"),
               ("median saved", "saved", ".0%")]
    title = f"threshold of {len(args.map_seeds)} synthetic curves (seeds {_span(args.map_seeds)}), axis of {result['high']} steps, cap {budget} episodes, batch {result['batch']}"
    print_tables({"maps": rows}, {"maps": (title, columns)})
    if "pairs" in result:
        _print_pair_maps(args, result["pairs"])


def _print_pair_maps(args, result: dict) -> None:
    adaptive, grid = result["designs"]
    rows = []
    for width, by in result["by_width"].items():
        for part in pair_parts(result["pair_levels"]):
            paired = by["paired"] if part == "whole pair" else by["paired_parts"][part]
            for design in (adaptive, grid):
                r = by[design][part]
                rows.append({"width": width, "part": part, "design": design, **r, "reached_text": f"{r['reached']}/{r['n']}",
                             "saved": paired["median_saved"] if design == adaptive else None,
                             "both": f"{paired['adaptive_episodes']} vs {paired['grid_episodes']} ({paired['n']})" if design == adaptive else ""})
    columns = [("target width", "width", "s"), ("part", "part", "s"), ("design", "design", "s"), ("median episodes", "median_episodes", ".0f"),
               ("mean episodes", "mean_episodes", ".1f"), ("reached", "reached_text", "s"), ("coverage", "coverage", ".0%"), ("median |error|", "median_error", ".3f"),
               ("both reached: episodes (cases)", "both", "s"), ("median saved", "saved", ".0%")]
    title = (f"pair maps on {len(args.pair_seeds)} synthetic surfaces (seeds {_span(args.pair_seeds)}): the second axis alone, then the first axis at "
             f"{result['pair_levels']} levels of the second; axes of {result['high']} steps, cap {args.map_budget} episodes per part")
    print_tables({"pairs": rows}, {"pairs": (title, columns)})


PRINTERS = {"planted": _print_planted, "maps": _print_maps, "aloha": lambda args, name, entry: print(json.dumps(entry, indent=1))}


def _span(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds))
