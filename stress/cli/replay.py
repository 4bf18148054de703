"""``stress replay``: re-execute an episode's recorded actions into an mp4, or re-run a search finding with the policy."""

from __future__ import annotations

from pathlib import Path

from scenarios.session import replay_finding
from stress.core.errors import UserError
from stress.runners.replay import replay
from stress.store import RunStore


def add_arguments(parser) -> None:
    parser.add_argument("run", type=Path, help="a run folder, or a finding file RUN/findings/ID.json")
    parser.add_argument("episode_key", nargs="?", help="the episode to replay (not with a finding)")
    parser.add_argument("--video", type=Path, help="mp4 path (default RUN/media/KEY.mp4)")
    parser.add_argument("--times", type=int, default=2, help="finding: how many fresh runs of the shrunk scenario (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="finding: simulator processes (default 1)")


def run(args) -> int:
    if args.run.suffix == ".json" or args.run.is_file():
        return _replay_finding(args)
    if args.episode_key is None:
        raise UserError("replay needs RUN EPISODE_KEY, or a finding file RUN/findings/ID.json")
    result = replay(RunStore.open(args.run), args.episode_key, args.video)
    verdict = "matches" if result.matches else "DIFFERS FROM"
    print(f"replayed {result.key}: success={result.success} steps={result.steps} ({verdict} the recorded success={result.recorded_success} steps={result.recorded_steps})")
    print(f"video: {result.video}")
    return 0 if result.matches else 1


def _replay_finding(args) -> int:
    if args.episode_key is not None:
        raise UserError(f"a finding replays as a whole; drop the episode key {args.episode_key!r}")
    result = replay_finding(args.run, args.times, args.workers)
    print(f"finding {result['id']} ({result['property']}): {result['scenario']}")
    print(f"violation reproduced {result['reproduced']} of {result['of']} fresh runs: {result['label']}")
    return 0 if result["reproduced"] == result["of"] else 1
