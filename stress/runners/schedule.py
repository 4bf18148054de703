"""Scene-affine dispatch, shared by every runner backend (``stress.runners.episode`` local processes, ``stress.runners.ray_backend``
actors): which pending episode a free worker runs next, and the loop that hands episodes out and collects them.

Building a scene costs ~9 s, resetting it milliseconds, so a worker is kept on the scenes it holds: a free
worker gets (1) more of a scene it holds, else (2) the largest scene nobody holds, else (3) a share of a scene
other workers hold, but only when that is faster than leaving it to them: the holders would start its last pending
episode about ``(pending - 0.5) * episode_s / holders`` from now, the newcomer after a build (``build_s``); a worker
that holds no scene yet (just started) always joins, its first build being due anyway. The
episode and build times are learnt from the results (a worker's first episode on a scene includes the build).
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from stress.core.spec import ScenarioSpec
from stress.envs.base import scene_key

BUILD_S, EPISODE_S = 9.0, 5.0  # priors until measured: a LIBERO scene build, a short episode
CRASH_ENV = "STRESS_TEST_CRASH_DIR"  # tests: a file <dir>/<episode key> holding n > 0 makes the worker exit n times on it


def scene_of(spec: ScenarioSpec) -> tuple:
    """What a worker's env cache is keyed on (``runner.EnvCache``): one build serves every spec with this key."""
    return (spec.suite, spec.task_id, spec.image_size, scene_key(spec.perturbations))


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


class WorkerCrashed(Exception):
    """A worker process (or actor) died while running an episode."""


def dispatch(scheduler: SceneScheduler, submit: Callable[[int, ScenarioSpec], Any], wait_one: Callable[[list], Any],
             collect: Callable[[Any], Any], restart: Callable[[int], None], finish: Callable[[Any], None],
             crashed: Callable[[ScenarioSpec], Any]) -> None:
    """Run everything pending in ``scheduler`` on the backend's workers: ``submit(worker, spec)`` starts an episode
    and returns a handle, ``wait_one(handles)`` returns a finished one, ``collect(handle)`` its EpisodeResult (or
    raises WorkerCrashed), ``restart(worker)`` replaces a dead worker. An episode whose worker dies is run once
    more; dying again it is stored as ``crashed(spec)`` (``worker_crashed``). ``finish`` (the store write) runs
    here, in the driver, once per episode."""
    inflight: dict[Any, tuple[int, ScenarioSpec]] = {}
    crashes: dict[str, int] = {}

    def fill() -> None:
        for worker in scheduler.idle():
            spec = scheduler.take(worker)
            if spec is not None:
                inflight[submit(worker, spec)] = (worker, spec)
        if not inflight and len(scheduler) and scheduler.idle():  # never stall: nothing runs, so someone must
            worker = scheduler.idle()[0]
            spec = scheduler.take(worker, force=True)
            inflight[submit(worker, spec)] = (worker, spec)

    fill()
    while inflight:
        handle = wait_one(list(inflight))
        worker, spec = inflight.pop(handle)
        try:
            result = collect(handle)
        except WorkerCrashed:
            restart(worker)
            scheduler.lost(worker)
            crashes[spec.key] = crashes.get(spec.key, 0) + 1
            if crashes[spec.key] > 1:
                finish(crashed(spec))
            else:
                scheduler.retry(spec)
        else:
            scheduler.finished(worker, spec, result.wall_s)
            finish(result)
        fill()


def crash_hook(key: str) -> None:
    """Tests only: exit this worker process abruptly (as a simulator segfault would) when ``$STRESS_TEST_CRASH_DIR/<key>``
    holds a count > 0, counting it down. Unset (always, outside tests), it costs one environment lookup."""
    folder = os.environ.get(CRASH_ENV)
    if not folder:
        return
    path = os.path.join(folder, key)
    try:
        with open(path) as f:
            left = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return
    if left > 0:
        with open(path, "w") as f:
            f.write(str(left - 1))
        os._exit(1)
