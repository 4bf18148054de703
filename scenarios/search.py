"""Property-based scenario search: propose, evaluate, shrink each new failure mode, check, replay.

The loop (one direction: specs -> runner -> store -> verdicts -> sampler):

1. the sampler proposes a point of the space (``scenarios.samplers``), the evaluator turns it into the
   property's episodes and a :class:`~scenarios.properties.Verdict` (``scenarios.evaluate`` runs them on
   LIBERO through the runner and store; ``scenarios.planted`` is a synthetic stand-in for benchmarks);
2. the sampler learns from the graded score;
3. the first violation of each new *mode* (failure signature x families) is shrunk to a 1-minimal
   scenario (``scenarios.shrink``), its 1-minimality checked and its replay verdict taken (k fresh
   episodes), and written as a finding;
4. after the budget: an i.i.d. slice (uniform points from their own generator, or the ``--compare random``
   run, whose points are i.i.d. too) gives an unbiased violation rate with a 95 % Wilson interval, kept
   apart from the adversarial finds.

Everything is a deterministic function of (space, property, sampler, budget, seed) and the verdicts, and
every verdict comes from the store: a resumed search re-walks the same path with stored episodes (nothing
run twice) and runs only what is missing, including in the middle of a shrink.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from scenarios.properties import Verdict
from scenarios.samplers import make_sampler
from scenarios.searchspace import SearchSpace, family_label, point_key
from scenarios.shrink import one_minimal, shrink, shrink_hypothesis
from stress.core.registry import Registry
from stress.core.metrics import wilson_interval

FINDING_FORMAT = "stress-finding/1"


def _greedy(space: SearchSpace, point: dict, violated: Callable[[dict, str], bool], database=None, prefetch=None, width: int = 1) -> tuple[dict, list[dict]]:
    """The default shrinker (it keeps no example database); ``width`` scenarios evaluated together ahead of its walk."""
    return shrink(space, point, violated, prefetch, width)


def _hypothesis(space: SearchSpace, point: dict, violated: Callable[[dict, str], bool], database=None, prefetch=None, width: int = 1) -> tuple[dict, list[dict]]:
    """Hypothesis's shrinker asks one scenario at a time (it cannot be told ahead)."""
    return shrink_hypothesis(space, point, violated, database)


# the shrinkers: (space, point, violated, database, prefetch, width) -> (1-minimal point, path) each; ``database`` is
# the run folder's example store (Hypothesis's); ``prefetch(points)`` evaluates up to ``width`` scenarios together (one
# per worker) that the shrinker may ask next, its result must not depend on them; plug-ins add theirs through the
# "stress.shrinkers" entry points
SHRINKERS = Registry("shrinker", "stress.shrinkers")
SHRINKERS.register("greedy", _greedy)
SHRINKERS.register("hypothesis", _hypothesis)


@dataclass
class Evaluation:
    point: dict
    verdict: Verdict | None  # None: the scenario could not be evaluated (invalid scene, episode error)
    signature: str | None = None  # failure signature of the property's subject episode
    episode_keys: list[str] = field(default_factory=list)
    episodes_run: int = 0  # episodes this evaluation actually ran (0 when all came from the store)
    error: str | None = None

    @property
    def violated(self) -> bool:
        return self.verdict is not None and self.verdict.violated

    @property
    def mode(self) -> str | None:
        """Failure mode of a violation: the subject's failure signature x the families perturbed."""
        return f"{self.signature or 'violated'} x {family_label(self.point)}" if self.violated else None


class Evaluator(Protocol):
    def evaluate(self, points: list[dict]) -> list[Evaluation]: ...

    def replay(self, point: dict, times: int, tag: str) -> list[bool | None]: ...


def finding_id(property_name: str, point: dict) -> str:
    return hashlib.sha256(f"{property_name}:{point_key(point)}".encode()).hexdigest()[:12]


class Search:
    """One search over ``space`` for violations of ``property_name``. ``on_evaluation(phase, evaluation)``
    reports progress; ``on_finding(finding)`` stores each finding as soon as it is complete."""

    def __init__(self, space: SearchSpace, property_name: str, evaluator: Evaluator, sampler: str = "guided", budget: int = 100, seed: int = 0,
                 max_findings: int = 5, replays: int = 1, iid: int = 0, compare: str | None = None,
                 on_evaluation: Callable[[str, Evaluation], None] | None = None, on_finding: Callable[[dict], None] | None = None,
                 describe_scenario: Callable[[dict], Any] | None = None, shrinker: str = "greedy", hypothesis_database=None, batch: int = 1):
        self.space, self.property_name, self.evaluator = space, property_name, evaluator
        self.sampler_name, self.budget, self.seed = sampler, budget, seed
        self.max_findings, self.replays, self.iid, self.compare = max_findings, replays, iid, compare
        self.on_evaluation, self.on_finding = on_evaluation or (lambda *a: None), on_finding or (lambda f: None)
        self.describe_scenario = describe_scenario or (lambda p: p)
        SHRINKERS.get(shrinker)  # an unknown name -> UserError listing the valid ones
        self.shrinker, self.hypothesis_database, self.batch = shrinker, hypothesis_database, max(1, batch)
        self.cache: dict[str, Evaluation] = {}
        self.ahead: set[str] = set()  # evaluated ahead of the shrink's walk (``_prefetch``), not yet logged
        self.log: list[dict] = []

    # --- evaluation with a cache by scenario --------------------------------------------------------
    def _evaluate(self, points: list[dict], phase: str, run: str = "search") -> list[Evaluation]:
        todo = [p for p in {point_key(p): p for p in points if point_key(p) not in self.cache}.values()]
        fresh = {point_key(p) for p in points} & self.ahead
        self.ahead -= fresh
        for ev in self.evaluator.evaluate(todo) if todo else []:
            self.cache[point_key(ev.point)] = ev
            fresh.add(point_key(ev.point))
        out = []
        for p in points:
            key = point_key(p)
            ev = self.cache[key]
            self.log.append({"run": run, "phase": phase, "scenario": self.space.describe(p), "point": p, "violated": ev.violated,
                             "score": None if ev.verdict is None else ev.verdict.score, "mode": ev.mode, "signature": ev.signature,
                             "fields": self.space.fields(p), "episodes_run": ev.episodes_run if key in fresh else 0,
                             "evaluated": key in fresh, "episode_keys": ev.episode_keys, "error": ev.error})
            fresh.discard(key)  # a point asked twice in one batch is run once
            self.on_evaluation(phase, ev)
            out.append(ev)
        return out

    def _violated(self, point: dict, change: str) -> bool:
        return self._evaluate([point], "shrink")[0].violated

    def _prefetch(self, points: list[dict]) -> None:
        """Evaluate together (one per worker) the scenarios a shrink may ask next; each is logged when the
        walk asks it, or as ``speculative`` once the finding is done if it never does."""
        todo = [p for p in {point_key(p): p for p in points if point_key(p) not in self.cache}.values()]
        for ev in self.evaluator.evaluate(todo) if todo else []:
            self.cache[point_key(ev.point)] = ev
            self.ahead.add(point_key(ev.point))

    def _spent_ahead(self) -> None:
        for key in sorted(self.ahead):
            self._evaluate([self.cache[key].point], "speculative")

    # --- the sampler loop ---------------------------------------------------------------------------
    def _sample(self, sampler_name: str, run: str, shrink_new: bool) -> list[dict]:
        """``budget`` proposals, ``batch`` at a time (evaluated together: one per worker), each new mode shrunk."""
        sampler = make_sampler(sampler_name, self.space, self.seed)
        findings, modes, spent = [], set(), 0
        while spent < self.budget:
            us = [sampler.propose() for _ in range(min(self.batch, self.budget - spent))]
            evaluations = self._evaluate([self.space.decode(u) for u in us], "sample", run)
            spent += len(us)
            for u, ev in zip(us, evaluations):
                sampler.update(u, None if ev.verdict is None else ev.verdict.score, ev.violated, ev.mode)
            for ev in evaluations:
                if not (shrink_new and ev.violated and ev.mode not in modes and len(findings) < self.max_findings):
                    continue
                modes.add(ev.mode)
                finding = self._finding(ev)
                sampler.explained(set(finding["shrunk"]["point"]["families"]))
                modes.add(finding["mode_shrunk"])
                if any(f["id"] == finding["id"] for f in findings):  # shrank onto a known finding
                    next(f for f in findings if f["id"] == finding["id"])["also_from"].append(finding["original"])
                else:
                    findings.append(finding)
                    self.on_finding(finding)
        return findings

    def _finding(self, original: Evaluation) -> dict:
        prefetch = self._prefetch if self.batch > 1 else None
        shrunk, path = SHRINKERS.get(self.shrinker)(self.space, original.point, self._violated, self.hypothesis_database, prefetch, self.batch)
        minimality = one_minimal(self.space, shrunk, lambda p, c: self._evaluate([p], "minimality")[0].violated, prefetch)
        self._spent_ahead()
        final = self._evaluate([shrunk], "shrunk")[0]
        fid = finding_id(self.property_name, shrunk)
        replays = self.evaluator.replay(shrunk, self.replays, fid) if self.replays else []
        reproduced = sum(1 for r in replays if r)
        finding = {
            "format": FINDING_FORMAT, "id": fid, "property": self.property_name, "verdict": "flaky" if reproduced < len(replays) else "violated",
            "mode": original.mode, "mode_shrunk": final.mode, "also_from": [], "failure": final.signature, "original_failure": original.signature,
            "original": self._scenario(original), "shrunk": self._scenario(final),
            "shrink_path": path, "shrink_evaluations": len({step["scenario"] for step in path}), "one_minimal": minimality["one_minimal"], "relaxations": minimality["relaxations"],
            "fields": {"original": self.space.fields(original.point), "shrunk": self.space.fields(shrunk)},
            "replay": {"reproduced": reproduced, "of": len(replays), "runs": replays},
        }
        return finding

    def _scenario(self, ev: Evaluation) -> dict:
        return {"point": ev.point, "scenario": self.space.describe(ev.point), "score": ev.verdict.score if ev.verdict else None,
                "violated": ev.violated, "episode_keys": ev.episode_keys, "specs": self.describe_scenario(ev.point)}

    def run(self) -> dict:
        findings = self._sample(self.sampler_name, "search", shrink_new=True)
        runs = {"search": self.sampler_name}
        if self.compare:
            self._sample(self.compare, "compare", shrink_new=False)
            runs["compare"] = self.compare
        if self.iid and not (self.sampler_name == "random" or self.compare == "random"):
            rng = np.random.default_rng([self.seed, 0x11D])
            points = [self.space.decode(rng.random(self.space.dims)) for _ in range(self.iid)]
            for i in range(0, len(points), self.batch):
                self._evaluate(points[i:i + self.batch], "iid", "iid")
        return {"findings": findings, "report": self.report(runs)}

    # --- the report ---------------------------------------------------------------------------------
    def report(self, runs: dict[str, str]) -> dict:
        curves = {}
        for run, sampler in runs.items():
            rows = [r for r in self.log if r["run"] == run and r["phase"] == "sample"]
            curves[run] = _curve(sampler, rows)
        iid_run = "search" if self.sampler_name == "random" else "compare" if self.compare == "random" else "iid"
        iid_rows = [r for r in self.log if r["run"] == iid_run and r["phase"] in ("sample", "iid") and r["score"] is not None]
        violations = sum(r["violated"] for r in iid_rows)
        low, high = wilson_interval(violations, len(iid_rows)) if iid_rows else (None, None)
        return {
            "property": self.property_name, "sampler": self.sampler_name, "budget": self.budget, "seed": self.seed, "space": self.space.to_dict(),
            "runs": curves,
            "iid": {"source": iid_run, "n": len(iid_rows), "violations": violations, "rate": violations / len(iid_rows) if iid_rows else None,
                    "ci95": [low, high]},
            "episodes_run": sum(r["episodes_run"] for r in self.log),
            "evaluations": {phase: sum(1 for r in self.log if r["phase"] == phase) for phase in ("sample", "shrink", "speculative", "minimality", "shrunk", "iid")},
            "log": self.log,
        }


def _curve(sampler: str, rows: list[dict]) -> dict:
    """Violations and distinct modes against evaluations spent (cumulative), and the first violation."""
    violations, modes, seen, first = [], [], set(), None
    for i, r in enumerate(rows):
        if r["violated"]:
            seen.add(r["mode"])
            first = i + 1 if first is None else first
        violations.append((violations[-1] if violations else 0) + int(r["violated"]))
        modes.append(len(seen))
    invalid = sum(1 for r in rows if r["score"] is None)
    return {"sampler": sampler, "evaluations": len(rows), "violations": violations[-1] if violations else 0, "invalid": invalid,
            "violations_per_100": 100.0 * (violations[-1] if violations else 0) / max(1, len(rows)), "first_violation": first,
            "modes": sorted(seen), "violations_curve": violations, "modes_curve": modes,
            "episodes_run": sum(r["episodes_run"] for r in rows)}
