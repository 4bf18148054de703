"""``stress run``'s scenarios from its flags: tasks x init states x scenes (clean, and each --perturb combination)
x modes x policy seeds, or a --scenario file's; every spec checked by the runner's ``check_spec`` before it runs.
Also the check that every policy server the specs name fits them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from perturbations.base import parse_cli
from stress.core.errors import UserError
from stress.core.files import read_json_input
from stress.core.spec import PerturbationSpec, ScenarioSpec, perturbation_seed
from stress.envs import check_task, simulator_of
from stress.policies import cosmos_deploy, openpi, policy_class
from stress.policies.remote import check_compatible, probe
from stress.runners.episode import check_spec
from stress.runners.preflight import check_first, first_observation

RUN_MODES = ("direct", "planning", "both", "auto")  # --mode: one mode, both, or every mode the policy has


def run_modes(mode: str, policy: str, served_modes=None) -> list[str]:
    """--mode as a list of modes; ``auto`` keeps only those a policy server serves (``served_modes``), if one."""
    if mode not in RUN_MODES:
        raise UserError(f"unknown mode {mode!r}; valid: {', '.join(RUN_MODES)}")
    if mode == "auto":
        return [m for m in policy_class(policy).modes if served_modes is None or m in served_modes]
    return ["direct", "planning"] if mode == "both" else [mode]


def scene_maker(perturb: list[str], severities: list[int], camera: str, baseline: bool, run_seed: int) -> Callable[[int], list[tuple]]:
    """init index -> the perturbation tuples run on it: the clean scene (if ``baseline``, or without any --perturb)
    and each --perturb combination (``NAME:LEVEL`` fixed, a bare ``NAME`` at each of ``severities``), seeded by
    ``perturbation_seed`` (the same scene for every mode and policy seed)."""
    fixed = [parse_cli(t) for t in perturb if ":" in t]
    bare = [parse_cli(t).name for t in perturb if ":" not in t]
    combos = []  # each: tuple of PerturbationSpec without seed/camera yet
    if perturb:
        for level in severities if bare else [None]:
            combos.append(tuple(fixed) + tuple(PerturbationSpec(name, level) for name in bare))

    def scenes(init: int) -> list[tuple]:
        seed = perturbation_seed(run_seed, init)
        return ([()] if baseline or not combos else []) + [
            tuple(PerturbationSpec(p.name, p.severity, seed, camera) for p in combo) for combo in combos]

    return scenes


def grid_specs(suite: str, tasks: list[int], episodes: int, scenes: Callable[[int], list[tuple]], policy: str, modes: list[str],
               seeds: range, candidates: int, aggregation: str, max_steps: int | None, image_size: int | None,
               policy_options: tuple[tuple[str, Any], ...] = ()) -> list[ScenarioSpec]:
    """Every task x init state 0..episodes-1 x scene x mode x policy seed, checked; ``image_size`` None: the
    simulator's default."""
    image_size = image_size or simulator_of(suite).default_image_size  # an unknown suite -> one line listing them
    for task in tasks:
        check_task(suite, task)
    specs = [
        ScenarioSpec(suite=suite, task_id=task, init_index=init, perturbations=perturbations, policy=policy, mode=mode, seed=seed,
                     max_steps=max_steps, n_candidates=candidates if mode == "planning" else 1,
                     aggregation=aggregation if mode == "planning" else None, image_size=image_size, policy_options=policy_options)
        for task in tasks for init in range(episodes) for perturbations in scenes(init) for mode in modes for seed in seeds
    ]
    for spec in specs:
        check_spec(spec)
    return specs


def file_specs(path: Path) -> list[ScenarioSpec]:
    """The specs of a --scenario JSON file (one spec or a list), checked."""
    data = read_json_input(path, "scenario file")
    specs = [ScenarioSpec.from_dict(d) for d in (data if isinstance(data, list) else [data])]
    for spec in specs:
        check_spec(spec)
    return specs


def check_servers(specs: list[ScenarioSpec]) -> dict | None:
    """Reach every policy server the specs name and check it fits them, then send each one real observation of
    the first scenario (``stress.runners.preflight``): UserError otherwise, before any episode runs. Returns the
    handshake metadata (recorded in the manifest; deploy.py's: what its probe reply showed), or None without
    remote specs."""
    metadata, seen = None, {}
    for spec in (s for s in specs if s.policy == "cosmos-deploy"):  # no handshake: one real request says what is served
        options = dict(spec.policy_options)
        url = cosmos_deploy.check_server_url(options.get("server"))
        if url not in seen:
            seen[url] = cosmos_deploy.probe(url, first_observation(spec)[0])
        metadata = seen[url]
        cosmos_deploy.check_served(metadata, url, spec.mode, spec.n_candidates, options.get("served"))
    for spec in (s for s in specs if s.policy == "openpi"):  # openpi's metadata is free-form: reachable, and the same server
        options = dict(spec.policy_options)
        url = options.get("server")
        if url not in seen:
            seen[url] = openpi.probe(url)
        metadata = seen[url]
        if options.get("served") is not None and openpi.served_id(metadata) != options["served"]:
            raise UserError(f"policy server {url} serves {openpi.served_id(metadata)!r}; the run was started with {options['served']!r}")
    for spec in (s for s in specs if s.policy == "remote"):
        options = dict(spec.policy_options)
        url = options.get("server")
        if url not in seen:
            seen[url] = probe(url)
        metadata = seen[url]
        sim = simulator_of(spec.suite)
        check_compatible(metadata, url, sim, modes=(spec.mode,), aggregation=spec.aggregation, image_size=spec.image_size, served=options.get("served"),
                         instruction=sim.tasks(spec.suite)[spec.task_id] if "instructions" in metadata else None)
    check_first(specs)
    return metadata
