"""Running many specs into a store, on a backend: ``local`` (``stress.runners.local``) or ``ray``
(``stress.runners.ray_backend``). One episode: ``stress.runners.episode``; the scene-affine dispatch both backends
share: ``stress.runners.schedule``; their workers: ``stress.runners.pool``."""

from __future__ import annotations

from typing import Callable

from stress.core.episode import EpisodeResult
from stress.core.registry import Registry
from stress.core.spec import ScenarioSpec
from stress.measurement.groundtruth import Measurement
from stress.runners.local import LocalRunner
from stress.runners.ray_backend import RayRunner



def _local_runner(workers: int, env_cache: int, address: str | None = None, gpus: float = 0.0) -> LocalRunner:
    """The local backend's factory (``address`` and ``gpus`` are Ray's)."""
    return LocalRunner(workers, env_cache)


# backend name -> factory (workers, env_cache, address=None, gpus=0.0) -> runner; plug-ins add theirs through the
# "stress.backends" entry points
BACKENDS = Registry("backend", "stress.backends")
BACKENDS.register("local", _local_runner)
BACKENDS.register("ray", RayRunner)


def make_runner(backend: str = "local", workers: int = 1, env_cache: int = 1, ray_address: str | None = None, gpus: float = 0.0):
    """The runner of a backend: ``local`` (this process, or a spawn process pool) or ``ray`` (actors on a local or
    joined Ray cluster). Both are ``stress.runners.schedule.Runner``s: context manager,
    ``run(specs, store, on_result, measurement)``, ``close()``."""
    return BACKENDS.get(backend)(workers, env_cache, address=ray_address, gpus=gpus)


def run_specs(specs: list[ScenarioSpec], store, workers: int = 1, on_result: Callable[[EpisodeResult], None] | None = None,
              measurement: Measurement | None = Measurement(), backend: str = "local", ray_address: str | None = None) -> None:
    """Run specs not yet in ``store`` and write each finished episode at once (so a crash loses nothing).
    ``measurement``: the ground truth measured at each decision (default: true futures, no rollouts)."""
    with make_runner(backend, workers, ray_address=ray_address) as runner:
        runner.run(specs, store, on_result, measurement)
