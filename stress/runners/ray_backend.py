"""The Ray backend: the same runner as ``stress.runners.local.LocalRunner`` (``stress.runners.schedule.Runner``: context
manager, ``run(specs, store, on_result, measurement)``, ``close()``), its pool's workers Ray actors (``RayPool``).

Each actor is one worker process holding a simulator cache and a policy cache (``stress.runners.episode.EpisodeWorker``,
~2 GB); the driver hands out episodes scene by scene (``stress.runners.schedule``, on ``ray.wait``) and alone writes the store,
so the run folder, its keys and ``--resume`` are the same as the local pool's. An actor that dies is restarted by
Ray (``max_restarts=-1``); its episode is not retried by Ray (``max_task_retries=0``: a retried crash would burn
the restarts) but once by the driver, then stored as ``worker_crashed``.

Without ``address`` a private local cluster is started: one CPU per worker, no dashboard, usage statistics off,
token auth off (Ray 2.60 would otherwise write ``~/.ray/auth_token``), its session files in a temporary folder
removed at ``close()``. With ``address`` (``HOST:PORT`` of ``ray start --head``) the run joins that cluster.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

from stress.core.errors import UserError
from stress.runners.episode import EpisodeWorker
from stress.runners.pool import Pool, WorkerCrashed
from stress.runners.schedule import Runner

ROOT = str(Path(__file__).resolve().parent.parent)  # the folder holding stress/, scenarios/, perturbations/
PASSED_ENV = ("PYTHONPATH", "MUJOCO_GL", "PYOPENGL_PLATFORM", "NO_ALBUMENTATIONS_UPDATE")  # plus every STRESS_* variable
PROBE_S = 5.0  # how often a wait for results looks at the cluster's health
# no result for this long means the cluster stalled: the longest episode seen so far times STALL_FACTOR, at least
# STALL_MIN_S, or FIRST_RESULT_S before any result (a first episode builds its scene and loads its policy);
# STRESS_RAY_STALL_S overrides all three (tests)
STALL_FACTOR, STALL_MIN_S, FIRST_RESULT_S = 10.0, 600.0, 1800.0
RESTART_S = 300.0  # an actor restart re-imports the simulator stack: seconds, minutes on a loaded node


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'stress[ray]' (or run with --backend local)") from None
    return ray


def check_address(address: str) -> None:
    """Exit 2 at once for an address no cluster answers on (``ray.init`` would retry for minutes)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} invalid; valid: HOST:PORT of a Ray head (`ray start --head` prints it)")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_S).close()
    except OSError as exc:
        raise UserError(f"--ray-address {address}: no Ray cluster answers ({exc.strerror or exc}); start one with "
                        "`ray start --head`, or leave --ray-address out for a private local cluster") from None


def actor_env() -> dict[str, str]:
    """The environment actors get (a joined cluster's workers do not inherit the driver's): this checkout first on
    PYTHONPATH so actors import the driver's code, and the stress/render settings."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith("STRESS_")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != ROOT])
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return env


class ClusterLost(RuntimeError):
    """The Ray cluster can no longer run the actors (its node died, or it stopped answering): the run stops, what
    finished is stored, and ``--resume`` on either backend finishes it."""

    def __init__(self, why: str):
        super().__init__(f"{why}; the finished episodes are stored: finish the run with `stress run --resume RUN` "
                         "(--backend local works too)")


class _Actor:
    """One Ray actor: a pool worker in a process of its own (``ray.remote`` is applied at start)."""

    def __init__(self, factory: Callable[[], Any]):
        self._worker = factory()

    def call(self, method: str, *args) -> Any:
        return getattr(self._worker, method)(*args)

    def info(self) -> dict:
        import resource

        return {"pid": os.getpid(), "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


class RayPool(Pool):
    """``workers`` Ray actors (each asking for 1 CPU and ``gpus`` GPUs), each holding one ``factory()`` worker; the
    cluster is started (or joined) on the first submit, or by ``start()``."""

    def __init__(self, workers: int, factory: Callable[[], Any], address: str | None = None, gpus: float = 0.0):
        if workers < 1:
            raise UserError(f"--workers {workers} invalid; valid: 1 or more")
        if gpus < 0:
            raise UserError(f"--ray-gpus {gpus} invalid; valid: 0 or more GPUs per actor (e.g. 0.5, 1)")
        self.workers, self.factory, self.address, self.gpus = workers, factory, address, gpus
        self._ray = self._temp = None
        self._actors: list = []
        self._owner: dict = {}  # object ref -> the worker running it
        self._started: dict = {}  # object ref -> when it was submitted (monotonic s)
        self._longest_s = 0.0  # the longest job so far: the stall bound follows it
        self._last_result = time.monotonic()
        self._owned_env: dict[str, str | None] = {}

    def start(self) -> None:
        """Start (or join) the cluster and create the actors."""
        if self._ray is not None:
            return
        ray = import_ray()
        self._setenv("RAY_USAGE_STATS_ENABLED", "0")
        common = dict(include_dashboard=False, log_to_driver=False, logging_level="WARNING", runtime_env={"env_vars": actor_env()})
        if self.address:
            check_address(self.address)
            try:
                ray.init(address=self.address, **common)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"--ray-address {self.address}: could not join ({str(exc).splitlines()[0][:200]}); "
                                "check the address `ray start --head` printed") from None
        else:
            self._setenv("RAY_AUTH_MODE", "disabled")  # else Ray 2.60 writes ~/.ray/auth_token
            self._temp = tempfile.mkdtemp(prefix="stress-ray-")  # short: Ray's socket paths must fit 107 bytes
            ray.init(num_cpus=self.workers, _node_ip_address="127.0.0.1", _temp_dir=self._temp, **common)
        self._ray = ray
        self._check_resources()
        self._actors = [self._new_actor() for _ in range(self.workers)]

    def _setenv(self, name: str, value: str) -> None:
        if name not in os.environ:
            self._owned_env[name] = None
            os.environ[name] = value

    def _check_resources(self) -> None:
        have = self._ray.cluster_resources()
        cpus, gpus = have.get("CPU", 0), have.get("GPU", 0)
        if cpus < self.workers or gpus + 1e-9 < self.gpus * self.workers:
            where = f"the cluster at {self.address}" if self.address else "this machine"
            need = f"{self.workers} CPU" + (f" and {self.gpus * self.workers:g} GPU" if self.gpus else "")
            self.close()
            raise UserError(f"--workers {self.workers}: {where} cannot place {need} ({cpus:g} CPU, {gpus:g} GPU); "
                            "lower --workers or --ray-gpus, or add nodes")

    def _new_actor(self):
        ray = self._ray
        cls = ray.remote(_Actor).options(num_cpus=1, num_gpus=self.gpus, max_restarts=-1, max_task_retries=0)
        return cls.remote(self.factory)

    def info(self) -> list[dict]:
        """Each actor's pid and peak memory."""
        self.start()
        return self._ray.get([a.info.remote() for a in self._actors])

    def submit(self, worker: int, method: str, *args):
        self.start()
        if not self._owner:  # idle until now (a search between batches): the stall clock starts here
            self._last_result = time.monotonic()
        ref = self._actors[worker].call.options(max_task_retries=0).remote(method, *args)
        self._owner[ref] = worker
        self._started[ref] = time.monotonic()
        return ref

    def wait_one(self, handles: list):
        """The first finished handle; raises ClusterLost instead of waiting on a cluster that is gone or stalled."""
        while True:
            ready, _ = self._ray.wait(handles, num_returns=1, timeout=PROBE_S)
            if ready:
                return ready[0]
            self._check_alive()

    def _stall_bound(self) -> float:
        if os.environ.get("STRESS_RAY_STALL_S"):
            return float(os.environ["STRESS_RAY_STALL_S"])
        return max(STALL_MIN_S, STALL_FACTOR * self._longest_s) if self._longest_s else FIRST_RESULT_S

    def _check_alive(self) -> None:
        try:
            nodes = self._ray.nodes()
        except Exception as exc:  # the cluster's control store does not answer
            raise ClusterLost(f"the Ray cluster does not answer ({type(exc).__name__})") from None
        dead = [n.get("NodeManagerAddress", "?") for n in nodes if not n.get("Alive")]
        if not any(n.get("Alive") for n in nodes) or (self.address is None and dead):
            raise ClusterLost(f"the Ray node running the actors died ({', '.join(dead) or 'no node alive'}: its raylet "
                              "stopped or missed its heartbeats)")
        waited = time.monotonic() - self._last_result
        if waited > self._stall_bound():
            raise ClusterLost(f"no episode finished on the Ray actors for {waited:.0f} s (the bound: "
                              f"{self._stall_bound():.0f} s, from the longest episode so far)")

    def result(self, handle) -> Any:
        ray, worker = self._ray, self._owner.pop(handle)
        self._last_result = time.monotonic()
        self._longest_s = max(self._longest_s, self._last_result - self._started.pop(handle, self._last_result))
        try:
            return ray.get(handle)
        except ray.exceptions.ActorDiedError:
            self._actors[worker] = self._new_actor()  # gone for good (its node died): a new actor
            raise WorkerCrashed() from None
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
            raise WorkerCrashed() from None  # Ray restarts the actor (max_restarts=-1)

    def restart(self, worker: int) -> None:
        """Wait until Ray has restarted the worker's actor (a call sent while it restarts fails as unavailable)."""
        ray = self._ray
        deadline = time.monotonic() + RESTART_S
        while True:
            try:
                ray.get(self._actors[worker].info.remote(), timeout=PROBE_S)
                return
            except ray.exceptions.ActorDiedError:
                self._actors[worker] = self._new_actor()
            except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                self._check_alive()  # an actor whose node is gone never comes back: say so instead of waiting
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Ray actor {worker} did not come back within {RESTART_S:.0f} s of a crash") from None
                time.sleep(0.2)

    def close(self) -> None:
        if self._ray is not None:
            for actor in self._actors:
                try:
                    self._ray.kill(actor, no_restart=True)
                except Exception:  # its node is gone (ClusterLost): nothing left to kill
                    pass
            self._actors = []
            self._owner, self._started = {}, {}
            self._ray.shutdown()
            self._ray = None
        if self._temp:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
        for name in self._owned_env:
            os.environ.pop(name, None)
        self._owned_env = {}


class RayRunner(Runner):
    """Runs specs on ``workers`` Ray actors (each asking for 1 CPU and ``gpus`` GPUs), kept alive between calls."""

    def __init__(self, workers: int = 1, env_cache: int = 1, address: str | None = None, gpus: float = 0.0):
        super().__init__(RayPool(workers, partial(EpisodeWorker, env_cache, own_process=True), address, gpus), env_cache)

    def start(self) -> None:
        """Start (or join) the cluster and create the actors; the CLI calls it before any episode, so a cluster that
        cannot place the workers exits 2 at once."""
        self.pool.start()

    def info(self) -> list[dict]:
        return self.pool.info()
