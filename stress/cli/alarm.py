"""``stress alarm RUN``: the policy's own value and world model as a runtime failure alarm, calibrated by conformal
prediction on clean successful episodes and evaluated per perturbation (docs/alarm.md); writes RUN/alarm.json and
RUN/alarm.png."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from stress.report.alarm import SIGNALS, alarm_report, markdown_lines, summary_lines, write_alarm


def probability(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text} invalid; valid: a false-positive rate strictly between 0 and 1, e.g. 0.05")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("run", type=Path, help="the run to test the alarm on")
    parser.add_argument("--calibration", type=Path, metavar="RUN",
                        help="calibrate on this run's clean successful episodes (same policy and suite); default: every other clean episode of RUN, the rest held out")
    parser.add_argument("--alpha", type=probability, default=0.05, help="false-positive rate the alarm may have on clean successful episodes (default 0.05)")
    parser.add_argument("--markdown", action="store_true", help="also print every figure with its 95%% interval as a Markdown table, each family's severities pooled")
    parser.add_argument("--signals", default=",".join(SIGNALS), help=f"comma-separated, from {', '.join(SIGNALS)} (default all)")


def run(args) -> int:
    signals = [s.strip() for s in args.signals.split(",") if s.strip()]
    report = alarm_report(args.run, args.calibration, args.alpha, signals)
    json_path, png = write_alarm(report, args.run)
    print("\n".join(summary_lines(report) + (["", *markdown_lines(report)] if args.markdown else [])))
    print(f"wrote {json_path} and {png}")
    return 0
