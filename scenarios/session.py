"""A search as a run folder: start or resume it, run it into the store, write findings and the report.

A search run is an ordinary run folder (``stress.store``) whose manifest says ``"kind": "search"`` and
holds the search's whole configuration; its specs are added as the search proposes them. Beside the usual
tables it has ``findings/<id>.json`` (one per shrunk violation, written as soon as it is complete),
``search.json`` (curves, the i.i.d. estimate, every evaluation); whoever runs it draws ``search.png`` from the report
(``stress.report.search.save_search_plot``).
"""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from perturbations.base import family
from scenarios import properties
from scenarios.evaluate import LiberoEvaluator, PolicySetting, replay_point, specs_json
from scenarios.samplers import SAMPLERS
from scenarios.search import FINDING_FORMAT, SHRINKERS, Search
from scenarios.searchspace import SearchSpace, suite_space
from stress.core.errors import UserError, choice_error
from stress.core.files import read_json_input
from stress.envs import simulator_of
from stress.measurement.groundtruth import Measurement
from stress.policies import policy_class
from stress.policies.planning import check_aggregation
from stress.policies import openpi
from stress.policies.remote import check_compatible, probe
from stress.runners.local import LocalRunner
from stress.store import RunStore

SPACE_FIELDS = ("suite", "tasks", "inits", "families", "max_families", "cameras", "seeds", "limits")


def space_from_config(space: dict) -> SearchSpace:
    unknown = set(space) - set(SPACE_FIELDS)
    if unknown:
        raise UserError(f"unknown space field(s) {sorted(unknown)}; valid: {', '.join(SPACE_FIELDS)}")
    for key in ("tasks", "inits", "families", "cameras", "seeds"):
        value = space.get(key)
        if not isinstance(value, list) or not value:
            raise UserError(f"space field {key!r} must be a non-empty list, got {value!r}")
    for key in ("tasks", "inits", "seeds"):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in space[key]):
            raise UserError(f"space field {key!r} must list integers, got {space[key]!r}")
    return suite_space(str(space.get("suite")), space["tasks"], space["inits"], space["families"], space["cameras"], space["seeds"],
                        space.get("max_families", 2), space.get("limits"))


def load_space_file(path: Path) -> dict:
    data = read_json_input(path, "space file")
    if not isinstance(data, dict):
        raise UserError(f"space file {str(path)!r} must hold a JSON object with {', '.join(SPACE_FIELDS)}")
    return data


def check_config(config: dict) -> tuple[SearchSpace, properties.Property]:
    """Validate a search configuration; raise UserError naming the first bad value."""
    if config.get("properties_file"):
        properties.load_file(Path(config["properties_file"]))
    prop = properties.get(config["property"])
    for key in ("sampler", "compare"):
        if config.get(key) is not None and config[key] not in SAMPLERS:
            raise choice_error("sampler" if key == "sampler" else "--compare sampler", config[key], SAMPLERS)
    SHRINKERS.get(config.get("shrinker", "greedy"))  # an unknown name -> UserError listing the valid ones
    for key, low in (("budget", 1), ("workers", 1), ("replays", 0), ("iid", 0), ("max_findings", 0), ("batch", 1)):
        if not isinstance(config[key], int) or config[key] < low:
            raise UserError(f"--{key.replace('_', '-')} {config[key]!r} invalid; valid: an integer >= {low}")
    space = space_from_config(config["space"])
    policy = policy_class(config["policy"])
    if config["mode"] not in policy.modes:
        raise UserError(f"policy {config['policy']!r} has no {config['mode']!r} mode; valid: {', '.join(policy.modes)}")
    properties.check_supported(prop, policy, [family(n) for n in space.names])
    _check_server(config)
    if "planning" in policy.modes or "planning" in prop.variants:
        check_aggregation(config["aggregation"])
    return space, prop


def start(out: Path, config: dict) -> RunStore:
    check_config(config)
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S") + f"-search-{config['property']}"
    return RunStore.create(out, run_id, [], {**config, "kind": "search"})


def is_search(store: RunStore) -> bool:
    return store.manifest.get("config", {}).get("kind") == "search"


def run(store: RunStore, on_evaluation: Callable | None = None, on_episode: Callable | None = None, runner=None) -> dict[str, Any]:
    """Run (or continue) the search stored in ``store``: everything already stored is reused; returns the report
    (written to ``search.json``). ``runner``: where the episodes run (``stress.runners.make_runner``; kept open
    by the caller); default a local pool of the config's workers."""
    config = store.manifest["config"]
    space, prop = check_config(config)
    setting = PolicySetting.from_config(config)
    true_futures = config.get("true_futures") or ("executed" if "futures" in prop.requires else "none")
    with nullcontext(runner) if runner is not None else LocalRunner(config["workers"], env_cache=2) as runner:
        evaluator = LiberoEvaluator(store, space, prop, setting, runner, Measurement(true_futures, 0), on_episode)

        def on_finding(finding):
            finding["replay_command"] = f"stress replay {store.path / 'findings' / (finding['id'] + '.json')}"
            finding["run"] = str(store.path)
            finding["policy"] = setting.record(true_futures)
            finding["space"] = config["space"]
            store.write_json(f"findings/{finding['id']}.json", finding)

        search = Search(space, prop.name, evaluator, config["sampler"], config["budget"], config["seed"], config["max_findings"], config["replays"],
                        config["iid"], config.get("compare"), on_evaluation, on_finding, lambda p: specs_json(evaluator, p),
                        config.get("shrinker", "greedy"), _hypothesis_database(store), config.get("batch", 1))
        result = search.run()
    report = result["report"]
    report["findings"] = [{"id": f["id"], "mode": f["mode"], "verdict": f["verdict"], "original": f["original"]["scenario"], "shrunk": f["shrunk"]["scenario"],
                           "fields": f["fields"], "shrink_evaluations": f["shrink_evaluations"], "one_minimal": f["one_minimal"], "replay": f["replay"]}
                          for f in result["findings"]]
    store.write_json("search.json", report)  # atomic, like every file of the run folder
    store.consolidate()
    return report


def _check_server(config: dict) -> None:
    """A remote policy's server must be reachable and fit the search before any episode runs (exit 2)."""
    if config["policy"] == "openpi":
        openpi.probe((config.get("policy_options") or {}).get("server"))
        return
    if config["policy"] != "remote":
        return
    options = config.get("policy_options") or {}
    modes = ("direct", "planning") if "planning" in properties.get(config["property"]).variants else (config["mode"],)
    check_compatible(probe(options.get("server")), options.get("server"), simulator_of(str(config["space"].get("suite"))), modes=modes, aggregation=config["aggregation"],
                     image_size=config.get("image_size", 128), served=options.get("served"))


def _hypothesis_database(store: RunStore):
    """Hypothesis's example database lives in the run folder (only the hypothesis shrinker uses it)."""
    # third-party and slow to import: loaded when a search runs, not whenever the CLI imports this module
    from hypothesis.database import DirectoryBasedExampleDatabase

    return DirectoryBasedExampleDatabase(str(store.path / "hypothesis"))


# --- findings -----------------------------------------------------------------------------------------
def load_finding(path: Path) -> dict:
    path = Path(path)
    finding = read_json_input(path, "finding file")
    if not isinstance(finding, dict) or "format" not in finding:
        raise UserError(f"{str(path)!r} is not a finding (no 'format'); findings live in RUN/findings/<id>.json")
    if finding["format"] != FINDING_FORMAT:
        raise UserError(f"finding {str(path)!r} has format {finding['format']!r}; this version reads {FINDING_FORMAT!r}")
    for key in ("property", "shrunk", "policy", "space", "id"):
        if key not in finding:
            raise UserError(f"finding {str(path)!r} lacks {key!r}; it is malformed")
    return finding


def replay_finding(path: Path, times: int, workers: int = 1) -> dict:
    """Re-run a finding's shrunk scenario ``times`` times with the policy: does the violation reproduce?"""
    if times < 1:
        raise UserError(f"--times {times} invalid; valid: 1 or more")
    finding = load_finding(path)
    space = space_from_config(finding["space"])
    prop = properties.get(finding["property"])
    p = finding["policy"]
    setting = PolicySetting.from_record(p)
    point = finding["shrunk"]["point"]
    folder = Path(path).resolve().parent.parent / "replays"
    with LocalRunner(workers) as runner:
        evaluator = LiberoEvaluator(RunStore(Path(path).resolve().parent.parent), space, prop, setting, runner, Measurement(p.get("true_futures", "none"), 0))
        tag = f"{finding['id']}-manual-{uuid.uuid4().hex[:6]}"  # fresh episodes, never the stored ones
        verdicts = [replay_point(folder / f"{tag}-{i}", evaluator, point) for i in range(times)]
    reproduced = sum(1 for v in verdicts if v)
    return {"id": finding["id"], "property": finding["property"], "scenario": finding["shrunk"]["scenario"], "reproduced": reproduced, "of": times,
            "verdicts": verdicts, "label": "reproduces" if reproduced == times else "flaky" if reproduced else "does not reproduce"}
