"""``stress gallery RUN``: the run's static failure gallery (RUN/gallery/index.html)."""

from __future__ import annotations

from pathlib import Path

from stress.cli.reports import build_gallery


def add_arguments(parser) -> None:
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, help="gallery folder (default RUN/gallery)")
    parser.add_argument("--workers", type=int, default=1, help="processes replaying videos (each ~2 GB; default 1)")
    parser.add_argument("--max-cards", type=int, metavar="N", help="full cards (video, frames) for the N worst failures only; the rest in one line each")


def run(args) -> int:
    build_gallery(args.run, args.out, args.workers, args.max_cards)  # a video that could not be made is a warning; its card says why
    return 0
