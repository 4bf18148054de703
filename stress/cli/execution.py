"""Running episodes from the command line, shared by ``run``, ``study`` and ``search``: the runner of ``--backend``,
a remote policy's options, a new run or a resumed one, and its episodes with a progress bar."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from rich.console import Console

from scenarios.grid import check_servers
from stress.cli.args import DEFAULT_SUITE
from stress.cli.common import episode_progress
from stress.core.errors import UserError, choice_error
from stress.core.spec import ScenarioSpec
from stress.envs import simulator_of
from stress.measurement.groundtruth import Measurement
from stress.policies import cosmos_deploy, lerobot_client, openpi
from stress.policies.client import API_KEY_ENV, HTTP, WEBSOCKET
from stress.policies.remote import check_url, probe, served_id
from stress.runners import BACKENDS, make_runner
from stress.runners.preflight import first_observation
from stress.store import RunStore


def runner(args, workers: int | None = None, env_cache: int = 1):
    """The runner of ``--backend`` (a context manager); a Ray cluster is started or joined now, so a bad address or a
    worker count it cannot place exits 2 before any run folder is written."""
    workers = args.workers if workers is None else workers
    if getattr(args, "api_key", None):  # before any worker starts: they inherit it; never written into the run
        os.environ[API_KEY_ENV] = args.api_key
    if args.backend not in BACKENDS:
        raise choice_error("--backend", args.backend, BACKENDS)
    if args.backend != "ray" and (args.ray_address or args.ray_gpus):
        raise UserError(f"--ray-address and --ray-gpus are for --backend ray; got --backend {args.backend}")
    chosen = make_runner(args.backend, workers, env_cache, args.ray_address, args.ray_gpus)
    if args.backend == "ray":
        chosen.start()
    return chosen


CLIENTS = ("remote", "openpi", "cosmos-deploy")  # the backends that talk to a policy server (--policy-server)


def remote_options(args) -> tuple[tuple, int | None, dict | None]:
    """(policy options, image size, handshake metadata) of a policy server's client: the served policy's identity
    and the server's address as options (openpi: its ``replan_steps`` too), and the image size the server expects
    (Cosmos: 256; openpi: its mapping's, 256 on LIBERO and gym-aloha's 480x640 on ALOHA, resized to 224 as openpi's
    clients do); ((), None, None) otherwise. The
    metadata is stress-policy/1's (None for openpi, whose metadata is free-form)."""
    replan = getattr(args, "replan_steps", None)
    if args.policy != "openpi" and replan is not None:
        raise UserError(f"--replan-steps is for --policy openpi; got --policy {args.policy!r}")
    if args.policy == "lerobot":
        return lerobot_options(args)
    for flag in ("policy_path", "lerobot_python"):
        if getattr(args, flag, None):
            raise UserError(f"--{flag.replace('_', '-')} is for --policy lerobot; got --policy {args.policy!r}")
    if args.policy not in CLIENTS:
        if args.policy_server:
            raise UserError(f"--policy-server is for --policy remote, openpi or cosmos-deploy; got --policy {args.policy!r}")
        return (), None, None
    if not args.policy_server:
        what = {"remote": "ws://HOST:PORT (a running `stress serve`)", "openpi": "ws://HOST:PORT (openpi's serve_policy.py, or `stress serve --wire openpi`)",
                "cosmos-deploy": "http://HOST:PORT (Cosmos Policy's deploy.py)"}[args.policy]
        raise UserError(f"policy {args.policy!r} needs --policy-server {what}")
    if args.policy == "cosmos-deploy":  # no handshake: one real request with the first scenario's observation says what is served
        url = cosmos_deploy.check_server_url(args.policy_server)
        server = cosmos_deploy.probe(url, first_observation(_first_scene(args))[0])
        return (("served", server["served"]), ("server", url)), cosmos_deploy.RENDER_SIZE, server
    if args.policy == "openpi":
        mapping = openpi.mapping_of(simulator_of(getattr(args, "suite", None) or DEFAULT_SUITE).name)
        replan = openpi.check_replan_steps(mapping.replan_steps if replan is None else replan)
        metadata = openpi.probe(args.policy_server)
        return ((("replan_steps", replan), ("served", openpi.served_id(metadata)), ("server", args.policy_server), ("simulator", mapping.simulator)),
                mapping.render_size, None)
    server = probe(args.policy_server)
    # the key holds what it serves, not where
    return (("served", served_id(server)), ("server", args.policy_server)), server["image_size"], server


def _first_scene(args) -> ScenarioSpec:
    """The clean first scene of run's, search's or map's flags (its suite, first task, init 0), for deploy.py's probe."""
    suite = getattr(args, "suite", None) or "aloha"
    if simulator_of(suite).name not in cosmos_deploy.CosmosDeployPolicy.simulators:
        raise UserError(f"--policy cosmos-deploy drives --suite aloha (deploy.py is Cosmos Policy's ALOHA server); got --suite {suite}")
    task = (getattr(args, "tasks", None) or [getattr(args, "task", None) or 0])[0]  # --tasks is parsed to ints (int_list)
    return ScenarioSpec(suite=suite, task_id=task, init_index=0, policy="cosmos-deploy", seed=getattr(args, "seed", 0) or 0,
                        image_size=cosmos_deploy.RENDER_SIZE, policy_options=(("server", args.policy_server),))


def lerobot_options(args) -> tuple[tuple, int, None]:
    """``--policy lerobot``: the directory checked against the suite's simulator (exit 2 naming the mismatch), LeRobot's
    Python, what is served (its digest), and the render size LeRobot's env of that simulator uses."""
    if args.policy_server:
        raise UserError("--policy-server is for --policy remote, openpi or cosmos-deploy; --policy lerobot starts its own server (--lerobot-python)")
    if not getattr(args, "policy_path", None):
        raise UserError("--policy lerobot needs --policy-path DIR (a LeRobot policy directory)")
    simulator = simulator_of(getattr(args, "suite", None) or DEFAULT_SUITE).name
    if simulator not in lerobot_client.LerobotPolicy.simulators:
        raise UserError(f"--policy lerobot has no mapping for simulator {simulator!r}; valid: {', '.join(lerobot_client.LerobotPolicy.simulators)}")
    python = lerobot_client.check_python(getattr(args, "lerobot_python", None) or os.environ.get(lerobot_client.PYTHON_ENV))
    served = lerobot_client.check_policy(args.policy_path, simulator)
    path = str(Path(args.policy_path).resolve())
    return (("policy_path", path), ("python", python), ("served", served), ("simulator", simulator)), lerobot_client.image_size(path, simulator), None


def start_or_resume(args, make_specs, label):
    """(store, specs, measurement) of a new run, or of ``--resume RUN`` as it began."""
    if args.resume is not None:
        store = RunStore.open(args.resume)
        config = store.manifest.get("config", {})
        specs = store.specs()
        if getattr(args, "policy_server", None):  # the run's server moved: same episodes (the URL is not in the key)
            check_url(args.policy_server, HTTP if any(s.policy == "cosmos-deploy" for s in specs) else WEBSOCKET)
            specs = [replace(s, policy_options=tuple(sorted({**dict(s.policy_options), "server": args.policy_server}.items())))
                     if s.policy in CLIENTS else s for s in specs]
        check_servers(specs)
        return store, specs, Measurement(config.get("true_futures", "executed"), config.get("counterfactual_rollouts", 0))
    specs, config = make_specs(args)
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + label(specs)
    return RunStore.create(args.out, run_id, specs, config), specs, Measurement(args.true_futures, args.counterfactual_rollouts)


def execute(store, specs, measurement, chosen_runner) -> None:
    """The specs not stored yet, run into the store with a progress bar; then the store consolidated."""
    done = store.done_keys()
    todo = [s for s in specs if s.key not in done]
    Console(stderr=True).print(f"run {store.path}: {len(specs)} episodes, {len(specs) - len(todo)} already stored")
    episode_progress(store, todo, chosen_runner, measurement)
    store.consolidate()
