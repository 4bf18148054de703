"""Scene-affine dispatch, shared by every runner backend (``stress.runners.local``: this process or spawn processes,
``stress.runners.ray_backend``: Ray actors): which pending episode a free worker runs next, the loop that hands
episodes out to a pool's workers (``stress.runners.pool``) and collects them, and ``Runner``, what both backends are.

Building a scene costs ~9 s, resetting it milliseconds, so a worker is kept on the scenes it holds: a free
worker gets (1) more of a scene it holds, else (2) the largest scene nobody holds, else (3) a share of a scene
other workers hold, but only when that is faster than leaving it to them: the holders would start its last pending
episode about ``(pending - 0.5) * episode_s / holders`` from now, the newcomer after a build (``build_s``); a worker
that holds no scene yet (just started) always joins, its first build being due anyway. The
episode and build times are learnt from the results (a worker's first episode on a scene includes the build).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Hashable

from stress.core.episode import EpisodeResult
from stress.core.spec import ScenarioSpec
from stress.envs.cache import scene_of
from stress.measurement.groundtruth import Measurement
from stress.runners.episode import crashed_result
from stress.runners.pool import Pool, WorkerCrashed, drive

BUILD_S, EPISODE_S = 9.0, 5.0  # priors until measured: a LIBERO scene build, a short episode


@dataclass
class _Worker:
    scenes: OrderedDict = field(default_factory=OrderedDict)  # the scenes its env cache holds, most recent last
    busy: bool = False


class SceneScheduler:
    """Pending episodes grouped by scene, and which scenes each worker holds; kept across ``add`` calls (a search
    runs many small batches on the same workers)."""

    def __init__(self, workers: int, env_cache: int = 1):
        self.env_cache = env_cache
        self.workers = [_Worker() for _ in range(workers)]
        self.pending: OrderedDict[Hashable, deque] = OrderedDict()
        self.episode_s, self.build_s = EPISODE_S, BUILD_S
        self._measured = {"episode": 0, "build": 0}

    def add(self, specs: list[ScenarioSpec]) -> None:
        for spec in sorted(specs, key=lambda s: (s.suite, s.task_id, s.init_index)):
            self.pending.setdefault(scene_of(spec), deque()).append(spec)

    def retry(self, spec: ScenarioSpec) -> None:
        """Run this spec again (its worker crashed): first in its scene's queue."""
        self.pending.setdefault(scene_of(spec), deque()).appendleft(spec)

    def __len__(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def _holders(self, scene) -> list[_Worker]:
        return [w for w in self.workers if scene in w.scenes]

    def take(self, worker: int, force: bool = False) -> ScenarioSpec | None:
        """The next spec for this free worker, or None: nothing pending, or (unless ``force``) all of it better
        left to the workers holding its scenes."""
        w = self.workers[worker]
        live = [s for s, q in self.pending.items() if q]
        mine = [s for s in reversed(w.scenes) if s in live]
        if mine:
            scene = mine[0]
        else:
            free = [s for s in live if not self._holders(s)]
            if free:
                scene = max(free, key=lambda s: len(self.pending[s]))
            else:  # every pending scene is held by someone else: join the one whose holders need help most
                def backlog(s):
                    return (len(self.pending[s]) - 0.5) * self.episode_s / len(self._holders(s))

                scene = max(live, key=backlog, default=None)
                # a worker that holds no scene yet (just started) has its build to pay anyway: it joins
                if scene is None or (backlog(scene) <= self.build_s and not force and w.scenes):
                    return None
        spec = self.pending[scene].popleft()
        if not self.pending[scene]:
            del self.pending[scene]
        w.busy = True
        fresh = scene not in w.scenes
        w.scenes[scene] = fresh
        w.scenes.move_to_end(scene)
        while len(w.scenes) > self.env_cache:
            w.scenes.popitem(last=False)
        return spec

    def finished(self, worker: int, spec: ScenarioSpec, wall_s: float) -> None:
        """A worker's episode is done: learn the episode and build times from it."""
        w = self.workers[worker]
        w.busy = False
        scene = scene_of(spec)
        fresh = w.scenes.get(scene, False)
        if scene in w.scenes:
            w.scenes[scene] = False
        kind, value = ("build", wall_s - self.episode_s) if fresh else ("episode", wall_s)
        if kind == "build" and not self._measured["episode"]:
            return  # a build measured against the episode prior says little
        n = self._measured[kind] = self._measured[kind] + 1
        current = self.build_s if kind == "build" else self.episode_s
        updated = current + (max(0.0, value) - current) / min(n, 10)  # running mean, then a moving one
        if kind == "build":
            self.build_s = updated
        else:
            self.episode_s = updated

    def lost(self, worker: int) -> None:
        """The worker died: its replacement holds no scene."""
        self.workers[worker] = _Worker()

    def idle(self) -> list[int]:
        return [i for i, w in enumerate(self.workers) if not w.busy]


def dispatch(scheduler: SceneScheduler, pool: Pool, measurement: Measurement | None, finish: Callable[[EpisodeResult], None]) -> None:
    """Run everything pending in ``scheduler`` on the pool's workers (``EpisodeWorker.run``), one episode in flight per
    worker. An episode whose worker dies is run once more; dying again it is stored as ``worker_crashed``.
    ``finish`` (the store write) runs here, in the driver, once per episode."""
    crashes: dict[str, int] = {}

    def take(idle: list[int], running: bool) -> list[tuple[int, ScenarioSpec, tuple]]:
        starts = [(worker, spec) for worker in idle if (spec := scheduler.take(worker)) is not None]
        if not starts and not running and len(scheduler) and idle:  # never stall: nothing runs, so someone must
            starts = [(idle[0], scheduler.take(idle[0], force=True))]
        return [(worker, spec, (spec.to_json(), measurement)) for worker, spec in starts]

    def done(worker: int, spec: ScenarioSpec, value) -> None:
        if isinstance(value, WorkerCrashed):
            scheduler.lost(worker)
            crashes[spec.key] = crashes.get(spec.key, 0) + 1
            if crashes[spec.key] > 1:
                finish(crashed_result(spec))
            else:
                scheduler.retry(spec)
        elif isinstance(value, Exception):
            raise value  # run_episode records every fault of an episode: this is a bug, and stops the run
        else:
            scheduler.finished(worker, spec, value.wall_s)
            finish(value)

    drive(pool, "run", take, done)


def pending_specs(specs: list[ScenarioSpec], store) -> list[ScenarioSpec]:
    """The specs not yet stored, each key once."""
    done = store.done_keys()
    return list({s.key: s for s in specs if s.key not in done}.values())


def store_result(store, on_result: Callable[[EpisodeResult], None] | None):
    """The driver's write of a finished episode (the only writer of the store), then the caller's callback."""
    def finish(result: EpisodeResult) -> None:
        store.write_episode(result.row(), result.actions, result.decisions, result.decision_steps, frames=result.frames)
        if on_result:
            on_result(result)

    return finish


class Runner:
    """Runs specs on a pool of ``EpisodeWorker``s, keeping the workers (and the simulators and policies in them) alive
    between calls: a search runs many small batches, and rebuilding a scene costs ~9 s. Episodes are handed out scene
    by scene, and every result is written by the driver, so a run's folder, keys and ``--resume`` are the same on every
    backend. A context manager; ``run(specs, store, on_result, measurement)``, ``close()``."""

    def __init__(self, pool: Pool, env_cache: int = 1):
        self.pool = pool
        self.scheduler = SceneScheduler(pool.workers, env_cache)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, specs: list[ScenarioSpec], store, on_result: Callable[[EpisodeResult], None] | None = None,
            measurement: Measurement | None = Measurement()) -> None:
        """Run the specs not yet in ``store``, writing each finished episode at once (so a crash loses nothing).
        ``measurement``: the ground truth measured at each decision (default: true futures, no rollouts)."""
        self.scheduler.add(pending_specs(specs, store))
        if len(self.scheduler):
            dispatch(self.scheduler, self.pool, measurement, store_result(store, on_result))

    def close(self) -> None:
        self.pool.close()
