"""Evaluating search points on real scenes: point -> the property's variant ScenarioSpecs -> runner -> store
-> rows -> verdict. Every episode lands in the run's ordinary store, so ``stress show`` (and the gallery)
read a search run like any other, and a resumed search finds its verdicts there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scenarios.properties import Episode, Property
from scenarios.search import Evaluation
from scenarios.searchspace import SearchSpace, perturbation_specs
from stress.core.spec import ScenarioSpec
from stress.store import RunStore


@dataclass
class PolicySetting:
    """The policy a search runs, in one place: built from a search's configuration (``from_config``, what the CLI
    writes with ``config``) and stored with each finding (``record``, read back by ``from_record``)."""

    policy: str = "reference"
    mode: str = "direct"  # of the 'scenario' and 'clean' variants
    n_candidates: int = 8
    aggregation: str = "average"
    max_steps: int | None = None
    options: tuple = ()  # policy_options of every spec (remote: the served model and the server's address)
    image_size: int = 128

    def config(self) -> dict:
        """The setting's fields of a search configuration (the run's manifest)."""
        return {"policy": self.policy, "mode": self.mode, "candidates": self.n_candidates, "aggregation": self.aggregation,
                "max_steps": self.max_steps, "policy_options": dict(self.options), "image_size": self.image_size}

    @classmethod
    def from_config(cls, config: dict) -> "PolicySetting":
        return cls(config["policy"], config["mode"], config["candidates"], config["aggregation"], config.get("max_steps"),
                   tuple((config.get("policy_options") or {}).items()), config.get("image_size", 128))

    def record(self, true_futures: str) -> dict:
        """The ``policy`` of a finding file (with the ground truth the search measured)."""
        return {"policy": self.policy, "mode": self.mode, "n_candidates": self.n_candidates, "aggregation": self.aggregation,
                "max_steps": self.max_steps, "true_futures": true_futures, "policy_options": dict(self.options), "image_size": self.image_size}

    @classmethod
    def from_record(cls, record: dict) -> "PolicySetting":
        return cls(record["policy"], record["mode"], record["n_candidates"], record["aggregation"], record["max_steps"],
                   tuple((record.get("policy_options") or {}).items()), record.get("image_size", 128))

    def spec(self, space: SearchSpace, point: dict, mode: str, perturbations) -> ScenarioSpec:
        ctx = space.context_values(point)
        planning = mode == "planning"
        return ScenarioSpec(suite=space.suite, task_id=ctx["task"], init_index=ctx["init"], perturbations=perturbations, policy=self.policy, mode=mode,
                            n_candidates=self.n_candidates if planning else 1, aggregation=self.aggregation if planning else None,
                            seed=ctx["seed"], max_steps=self.max_steps, image_size=self.image_size, policy_options=tuple(sorted(self.options)))


def variant_specs(space: SearchSpace, prop: Property, setting: PolicySetting, point: dict) -> dict[str, ScenarioSpec]:
    perturbations = perturbation_specs(space, point)
    modes = {"scenario": setting.mode, "direct": "direct", "planning": "planning", "clean": setting.mode}
    return {v: setting.spec(space, point, modes[v], () if v == "clean" else perturbations) for v in prop.variants}


class LiberoEvaluator:
    """Runs each point's variant episodes (those not yet stored) with ``runner`` into ``store``."""

    def __init__(self, store: RunStore, space: SearchSpace, prop: Property, setting: PolicySetting, runner, measurement, on_episode=None):
        self.store, self.space, self.prop, self.setting = store, space, prop, setting
        self.runner, self.measurement, self.on_episode = runner, measurement, on_episode

    def specs(self, point: dict) -> dict[str, ScenarioSpec]:
        return variant_specs(self.space, self.prop, self.setting, point)

    def evaluate(self, points: list[dict]) -> list[Evaluation]:
        by_point = [self.specs(p) for p in points]
        specs = [s for variants in by_point for s in variants.values()]
        done = self.store.done_keys()
        self.store.add_specs(specs)
        self.runner.run(specs, self.store, self.on_episode, self.measurement)
        return [self._verdict(self.store, p, variants, done) for p, variants in zip(points, by_point)]

    def _verdict(self, store: RunStore, point: dict, variants: dict[str, ScenarioSpec], done: set[str]) -> Evaluation:
        keys = [s.key for s in variants.values()]
        rows = {r["episode_key"]: r for r in store.query("SELECT * FROM episodes WHERE episode_key IN (SELECT unnest(?))", [keys])}
        decisions: dict[str, list] = {k: [] for k in keys}
        if "values" in self.prop.requires or "futures" in self.prop.requires:
            for d in store.query("SELECT * FROM decisions WHERE episode_key IN (SELECT unnest(?))", [keys]) if (store.path / "decisions").is_dir() else []:
                decisions[d["episode_key"]].append(d)
        ran = sum(1 for k in set(keys) if k not in done)
        errors = [rows[k]["error"] for k in keys if rows[k]["error"]]
        if errors:
            return Evaluation(point, None, None, keys, ran, errors[0][:200])
        episodes = {v: Episode(rows[s.key], decisions[s.key]) for v, s in variants.items()}
        verdict = self.prop.check(episodes)
        return Evaluation(point, verdict, rows[variants[self.prop.subject].key]["failure"], keys, ran)

    def replay(self, point: dict, times: int, tag: str) -> list[bool | None]:
        """Run the point's episodes afresh ``times`` times (each in its own store under ``replays/``), not
        from the search's store; None where an episode errored."""
        out = []
        for i in range(times):
            out.append(replay_point(self.store.path / "replays" / f"{tag}-{i}", self, point))
        return out


def replay_point(folder: Path, evaluator: LiberoEvaluator, point: dict) -> bool | None:
    variants = evaluator.specs(point)
    store = RunStore.open(folder) if (folder / "manifest.json").is_file() else RunStore.create(folder.parent, folder.name, list(variants.values()), {"replay_of": str(evaluator.store.path)})
    evaluator.runner.run(list(variants.values()), store, None, evaluator.measurement)
    ev = evaluator._verdict(store, point, variants, set())
    return None if ev.verdict is None else ev.verdict.violated


def specs_json(evaluator: LiberoEvaluator, point: dict) -> dict:
    return {v: json.loads(s.to_json()) for v, s in evaluator.specs(point).items()}
