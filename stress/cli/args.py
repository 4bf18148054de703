"""What several commands parse alike: the parser class, argparse ``type=`` checks, the CLI's defaults and the
argument groups of ``run`` / ``study`` / ``search``. Light on purpose: the entry point imports it for every command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from stress.core.errors import UserError

DEFAULT_SUITE = "libero_spatial"
DEFAULT_POLICY = "reference"
DEFAULT_CANDIDATES = 8
DEFAULT_AGGREGATION = "average"
DEFAULT_EPISODES = 3
DEFAULT_SEVERITIES = "1,3,5"


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise UserError(_flag_first(message))


def _flag_first(message: str) -> str:
    """argparse words a rejected value 'argument --steps: 0 invalid; valid: 1 or more'; the house writes it
    '--steps 0 invalid; valid: 1 or more' (the flag's first name: --episodes, not --episodes/--trials)."""
    match = re.fullmatch(r"argument (-[\w-]+)(?:/-[\w-]+)*: (\S+ invalid; valid: .+)", message)
    return f"{match[1]} {match[2]}" if match else message


# --- type= checks: each names the bad value and the valid ones ---------------------------------------------------
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None  # argparse's own wording


def int_at_least(low: int):
    """An integer >= ``low``."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} invalid; valid: {low} or more")
        return value

    parse.__name__ = f"int_at_least_{low}"  # argparse names a type in its messages
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def int_in(low: int, high: int):
    """An integer in ``low``..``high``."""

    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} invalid; valid: {low}-{high}")
        return value

    parse.__name__ = f"int_in_{low}_{high}"
    return parse


def int_list(text: str) -> list[int]:
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
            raise argparse.ArgumentTypeError(f"{text!r} invalid; valid: a list of integers, e.g. 0,1 or 0-3") from None
    return out


def int_list_in(low: int, high: int):
    """An ``int_list`` whose every entry lies in ``low``..``high``."""

    def parse(text: str) -> list[int]:
        values = int_list(text)
        bad = [v for v in values if not low <= v <= high]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad[0]} invalid; valid: {low}-{high}")
        return values

    parse.__name__ = f"int_list_in_{low}_{high}"
    return parse


def none_or(parse):
    """'none' -> [] (nothing of this kind), else ``parse(text)``."""

    def parse_or_none(text: str):
        return [] if text == "none" else parse(text)

    parse_or_none.__name__ = parse.__name__
    return parse_or_none


# --- argument groups -----------------------------------------------------------------------------------------------
def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """A policy server's client options, shared by ``run``, ``study`` and ``search`` (docs/remote-policy.md)."""
    parser.add_argument("--replan-steps", type=positive_int, metavar="N", help="with --policy openpi: actions executed from each returned chunk before the next query (default: openpi's example client's, 5 on LIBERO, 10 on ALOHA)")
    parser.add_argument("--api-key", metavar="KEY", help="with a policy server that needs one: sent as 'Authorization: Api-Key KEY' (default: $STRESS_POLICY_API_KEY); never stored in the run")
    parser.add_argument("--policy-path", metavar="DIR", help="with --policy lerobot: a LeRobot policy directory (config.json, model.safetensors, processor files)")
    parser.add_argument("--lerobot-python", metavar="PATH", help="with --policy lerobot: the python of LeRobot's own environment, which serves the policy (default: $STRESS_LEROBOT_PYTHON)")


def add_scenario_arguments(run: argparse.ArgumentParser) -> None:
    """The scenario, policy and measurement arguments shared by ``run`` and ``study``."""
    # suite, tasks and episodes default to None: a --protocol run defaults them to the protocol's own
    run.add_argument("--suite", help=f"LIBERO suite (default {DEFAULT_SUITE}); run --protocol: the protocol's suites to run, comma-separated (default all)")
    run.add_argument("--tasks", type=int_list, help="task ids, e.g. 0,1 or 0-3 (default 0; run --protocol: every task)")
    run.add_argument("--episodes", "--trials", dest="episodes", type=positive_int,
                     help=f"init states per task, the first N shipped ones (default {DEFAULT_EPISODES}; run --protocol: its trials, 50 for cosmos-libero)")
    run.add_argument("--perturb", action="append", default=[], metavar="NAME[:LEVEL]", help="perturbation; repeat to compose; a bare NAME sweeps --severities")
    run.add_argument("--severities", type=int_list_in(0, 5), default=DEFAULT_SEVERITIES, help=f"levels for bare --perturb names (default {DEFAULT_SEVERITIES})")
    run.add_argument("--camera", default="both", help="camera targeted by per-camera perturbations: agentview, wrist, both")
    run.add_argument("--scenario", type=Path, help="JSON file with a list of ScenarioSpecs (explicit parameters) to run")
    run.add_argument("--policy", default=DEFAULT_POLICY, help=f"policy backend (default {DEFAULT_POLICY})")
    run.add_argument("--policy-server", metavar="URL", help="with --policy remote or openpi: the policy server, ws://HOST:PORT (stress serve; openpi's serve_policy.py); with --policy cosmos-deploy: "
                     "http://HOST:PORT (Cosmos Policy's ALOHA deploy.py); with --resume: a new address for the run's server")
    add_server_arguments(run)
    run.add_argument("--mode", default="auto", help="direct, planning, both, or auto (every mode the policy has)")
    run.add_argument("--candidates", type=positive_int, default=DEFAULT_CANDIDATES, help=f"best-of-N candidates in planning mode (default {DEFAULT_CANDIDATES})")
    run.add_argument("--aggregation", default=DEFAULT_AGGREGATION, help=f"planning value aggregation: average, lcb, success_vote, majority_mean (default {DEFAULT_AGGREGATION})")
    run.add_argument("--no-baseline", action="store_true", help="skip the clean baseline episodes")
    run.add_argument("--true-futures", default="executed", metavar="WHICH",
                     help="predicted futures measured against the simulator's true one: executed (the executed chunk's, default), "
                          "all (every best-of-N candidate's; one chunk of physics and a render each), none")
    run.add_argument("--counterfactual-rollouts", type=non_negative_int, default=0, metavar="K",
                     help="decisions per episode whose chunks (every candidate) are continued by the direct policy to the end, for their true outcome (default 0; expensive)")
    run.add_argument("--max-steps", type=positive_int, help="step budget (default: the suite's)")
    run.add_argument("--workers", type=positive_int, default=1, help="simulator processes (each ~2 GB; default 1)")
    run.add_argument("--out", type=Path, default=Path("results"), help="results folder (default results/)")
    run.add_argument("--seed", type=int, default=0, help="run seed: policy seed and perturbation seeds derive from it")
    run.add_argument("--policy-seeds", type=positive_int, default=1, metavar="N",
                     help="run every scenario with N policy seeds (seed .. seed+N-1), the scene unchanged: seed sensitivity (default 1)")
    run.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in this folder, skipping stored episodes")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Where episodes run, shared by ``run``, ``study`` and ``search`` (docs/ray.md)."""
    parser.add_argument("--backend", default="local", help="local (processes on this machine, the default) or ray (actors on a Ray cluster; pip install 'stress[ray]')")
    parser.add_argument("--ray-address", metavar="HOST:PORT", help="with --backend ray: join this cluster (`ray start --head`) instead of starting a private local one")
    parser.add_argument("--ray-gpus", type=float, default=0.0, metavar="N", help="with --backend ray: GPUs each actor asks for, for a policy on the GPU (default 0)")
