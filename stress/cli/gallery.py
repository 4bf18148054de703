"""``stress gallery RUN``: the run's static failure gallery (RUN/gallery/index.html)."""

from __future__ import annotations

from pathlib import Path

from stress.cli.reports import build_gallery
from stress.core.errors import UserError
from stress.report.gallery import DEFAULT_VIDEOS


def add_arguments(parser) -> None:
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, help="gallery folder (default RUN/gallery)")
    parser.add_argument("--workers", type=int, default=1, help="processes replaying videos (each ~2 GB; default 1)")
    parser.add_argument("--videos", default=str(DEFAULT_VIDEOS), metavar="N|all",
                        help=f"replay videos for the N worst cards and their clean twins (default {DEFAULT_VIDEOS}; cached ones always show); all: every card's")
    parser.add_argument("--max-cards", type=int, metavar="N", help="full cards (video, frames) for the N worst failures only; the rest in one line each")


def run(args) -> int:
    build_gallery(args.run, args.out, args.workers, args.max_cards, videos_count(args.videos))  # a video that could not be made is a warning; its card says why
    return 0


def videos_count(text: str) -> int | None:
    """``--videos``: a count of 0 or more, or ``all`` (None)."""
    if text == "all":
        return None
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise UserError(f"--videos {text} invalid; valid: 0 or more, or all")
    return count
