"""``stress map``: failure-boundary maps (docs/maps.md). For one task, each axis of the given families and each
policy setting: the success probability along the axis with Wilson intervals and the 50 % threshold with its 95 %
interval, found adaptively or on a fixed grid (``--grid N``, the baseline); ``--sides both``: toward each end of a
two-sided axis; ``--pair A,B``: the threshold along A at a few levels of B. Writes ``map.json`` and ``map.png`` in an
ordinary run folder (resumable)."""

from __future__ import annotations

from pathlib import Path

from scenarios import maps
from stress.cli.args import DEFAULT_AGGREGATION, DEFAULT_CANDIDATES, DEFAULT_SUITE, add_backend_arguments, add_server_arguments, int_in, int_list, positive_int
from stress.cli.execution import remote_options, runner
from stress.cli.reports import print_map
from stress.core.errors import UserError
from stress.envs import simulator_of
from stress.report.maps import save_map_plot
from stress.store import RunStore


def add_arguments(parser) -> None:
    parser.add_argument("--suite", default=DEFAULT_SUITE, help=f"LIBERO suite (default {DEFAULT_SUITE})")
    parser.add_argument("--task", type=int, default=0, help="task id (default 0)")
    parser.add_argument("--families", help="families whose axes are mapped one at a time (default lighting,occlusion; none with --pair alone)")
    parser.add_argument("--axes", help="only these axes, e.g. occlusion.area_fraction,lighting.ambient (default: every axis of the families)")
    parser.add_argument("--sides", default="far", help="far: each axis toward the end where it goes furthest from rest; both: a two-sided axis toward each end (default far)")
    parser.add_argument("--pair", action="append", metavar="FAMILY.AXIS,FAMILY.AXIS",
                        help="a 2-D boundary: the threshold along the first axis at --pair-levels levels of the second (repeatable)")
    parser.add_argument("--pair-levels", type=int, default=3, help="levels of a pair's second axis, evenly spaced from rest to where it fails alone (default 3)")
    parser.add_argument("--inits", type=int_list, default="0-49", help="init states the repeats at a level cycle through (default 0-49)")
    parser.add_argument("--policy-seeds", type=int_list, default="0", help="policy seeds, after the init states are used up (default 0)")
    parser.add_argument("--camera", default="both", help="camera target of per-camera families (default both)")
    parser.add_argument("--policy", default="reference", help="policy backend (default reference)")
    parser.add_argument("--policy-server", metavar="URL", help="with --policy remote or openpi: the policy server")
    add_server_arguments(parser)
    parser.add_argument("--modes", default="direct", help="policy settings mapped, e.g. direct,planning to compare best-of-N at the boundary (default direct)")
    parser.add_argument("--candidates", type=positive_int, default=DEFAULT_CANDIDATES, help=f"best-of-N candidates (default {DEFAULT_CANDIDATES})")
    parser.add_argument("--aggregation", default=DEFAULT_AGGREGATION, help=f"best-of-N aggregation (default {DEFAULT_AGGREGATION})")
    parser.add_argument("--max-steps", type=positive_int, help="step budget per episode (default: the suite's)")
    parser.add_argument("--width", type=float, default=0.2, help="stop a curve when its threshold's 95%% interval is at most this share of the axis (default 0.2)")
    parser.add_argument("--budget", type=int, default=40, help="most episodes per curve (default 40)")
    parser.add_argument("--batch", type=int, default=4, help="episodes per step at the chosen level (default 4)")
    parser.add_argument("--grid", type=int_in(2, maps.GRID_MAX), metavar="N",
                        help="the fixed-grid baseline: the same estimate and stopping rule fed round-robin episodes at N evenly spaced levels "
                             "of each axis (a pair: along the first axis in each row) instead of the adaptive choice; --batch does not apply (default: adaptive)")
    parser.add_argument("--workers", type=positive_int, default=1, help="simulator processes (default 1)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder (default results/)")
    parser.add_argument("--resume", type=Path, metavar="RUN", help="continue a map run folder (nothing run twice)")
    add_backend_arguments(parser)


def run(args) -> int:
    if args.resume is not None:
        store = RunStore.open(args.resume)
        if not maps.is_map(store):
            raise UserError(f"{str(args.resume)!r} is not a map run; valid: a folder written by stress map")
        workers = store.manifest["config"]["workers"]
    else:
        store, config = None, _config(args)
        maps.check_config(config)
        workers = config["workers"]
    with runner(args, workers, env_cache=2) as chosen:
        store = store or maps.start(args.out, config)
        print(f"map {store.path}")
        report = maps.run(store, chosen)
    save_map_plot(report, store.path / "map.png")
    print_map(report)
    print(f"episodes: {report['episodes']} ({report['episodes_run']} run now); results: {store.path} (map.json, map.png); "
          f"the episodes' tables: stress show {store.path}; the gallery: stress gallery {store.path} --videos 0")
    return 0


def _config(args) -> dict:
    options, image_size, _ = remote_options(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes:
        raise UserError(f"--modes {args.modes!r} invalid; valid: direct, planning or direct,planning")
    pairs = [[a.strip() for a in p.split(",")] for p in args.pair or []]
    if args.families is not None:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
    elif args.axes:  # the families of the axes named
        families = list(dict.fromkeys(a.strip().partition(".")[0] for a in args.axes.split(",") if a.strip()))
    else:
        families = [] if pairs else ["lighting", "occlusion"]
    return {"suite": args.suite, "task": args.task, "families": families, "sides": args.sides, "pairs": pairs, "pair_levels": args.pair_levels,
            "axes": [a.strip() for a in args.axes.split(",") if a.strip()] if args.axes else None, "inits": args.inits, "seeds": args.policy_seeds,
            "camera": args.camera, "policy": args.policy, "modes": modes, "candidates": args.candidates, "aggregation": args.aggregation,
            "max_steps": args.max_steps, "policy_options": dict(options), "image_size": image_size or simulator_of(args.suite).default_image_size,
            "width": args.width, "budget": args.budget, "batch": args.batch, "grid": args.grid, "workers": args.workers}
