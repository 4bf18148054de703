"""One pool abstraction for every set of workers: the episode runners' (this process, spawn processes, Ray actors in
``stress.runners.ray_backend``) and the gallery's video renderers.

A pool holds ``workers`` worker objects, each built once by a picklable zero-argument ``factory`` inside its own
process (an env cache, a policy cache: what is expensive to build and cheap to reuse). ``submit(worker, method,
*args)`` calls a method of one chosen worker and returns a handle, ``wait_one(handles)`` the first finished one,
``result(handle)`` its value (the method's exception, or ``WorkerCrashed`` when the worker's process died),
``restart(worker)`` replaces a dead worker, ``close()`` ends them all. ``drive`` is the loop around them; which job
goes to which worker is its caller's: ``stress.runners.schedule.dispatch`` keeps each worker on its scenes,
``run_each`` hands out jobs in order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Callable, Hashable


class WorkerCrashed(Exception):
    """A worker process (or actor) died while running a job."""

    def __init__(self, message: str = "the worker process died (a simulator segfault, the OOM killer)"):
        super().__init__(message)


class Pool(ABC):
    workers: int

    @abstractmethod
    def submit(self, worker: int, method: str, *args) -> Hashable:
        """Start ``method(*args)`` on worker ``worker`` (idle: one job in flight per worker); a handle to wait on."""

    @abstractmethod
    def wait_one(self, handles: list) -> Hashable:
        """The first of ``handles`` to finish (blocks until one has)."""

    @abstractmethod
    def result(self, handle) -> Any:
        """A finished job's value; raises the job's exception, or WorkerCrashed if its worker died."""

    @abstractmethod
    def restart(self, worker: int) -> None:
        """Replace worker ``worker`` after a WorkerCrashed: the next job goes to a fresh one."""

    @abstractmethod
    def close(self) -> None:
        """End the workers; a later submit starts fresh ones."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessPool(Pool):
    """One worker, in this process: a job runs at ``submit``. Its worker is closed (``close()``, where it has one)
    with the pool, so its simulators free their render contexts before the interpreter ends."""

    workers = 1

    def __init__(self, factory: Callable[[], Any]):
        self.factory, self._worker = factory, None

    def submit(self, worker: int, method: str, *args) -> Future:
        if self._worker is None:
            self._worker = self.factory()
        future = Future()
        try:
            future.set_result(getattr(self._worker, method)(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def wait_one(self, handles: list) -> Future:
        return handles[0]  # every job is finished at submit

    def result(self, handle: Future) -> Any:
        return handle.result()

    def restart(self, worker: int) -> None:
        self.close()  # never called by a crash (a crash here ends this process), but a pool must be restartable

    def close(self) -> None:
        if self._worker is not None and hasattr(self._worker, "close"):
            self._worker.close()
        self._worker = None


# the worker object of a ProcessPool process, built by the process's initializer
_held: Any = None


def _build(factory: Callable[[], Any]) -> None:
    global _held
    _held = factory()


def _call(method: str, args: tuple) -> Any:
    return getattr(_held, method)(*args)


class ProcessPool(Pool):
    """``workers`` spawn processes, each a single-process executor of its own so that the caller, not the executor,
    picks the process a job runs in (an episode goes to the process holding its scene). A crashed process breaks
    only its own executor; ``restart`` replaces it on the next submit."""

    def __init__(self, workers: int, factory: Callable[[], Any]):
        self.workers, self.factory = workers, factory
        self._executors: list[ProcessPoolExecutor | None] = [None] * workers

    def submit(self, worker: int, method: str, *args) -> Future:
        if self._executors[worker] is None:
            self._executors[worker] = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=_build,
                                                          initargs=(self.factory,))
        return self._executors[worker].submit(_call, method, args)

    def wait_one(self, handles: list) -> Future:
        return next(iter(wait(handles, return_when=FIRST_COMPLETED)[0]))

    def result(self, handle: Future) -> Any:
        try:
            return handle.result()
        except BrokenProcessPool:
            raise WorkerCrashed() from None

    def restart(self, worker: int) -> None:
        # the process died (e.g. a segfault in the simulator) and broke its executor: a fresh one on the next submit
        self._executors[worker].shutdown(cancel_futures=True)
        self._executors[worker] = None

    def close(self) -> None:
        for worker, executor in enumerate(self._executors):
            if executor is not None:
                executor.shutdown(cancel_futures=True)
                self._executors[worker] = None


def drive(pool: Pool, method: str, take: Callable[[list[int], bool], list[tuple[int, Any, tuple]]],
          done: Callable[[int, Any, Any], None]) -> None:
    """The loop of every pool user, one job in flight per worker, until none is. ``take(idle, running)``: the jobs to
    start now, as (worker, job, args) with ``worker`` one of ``idle`` (in index order; ``running``: whether any job
    is in flight); ``done(worker, job, value)``: a finished job's value, its result or the exception it raised or
    WorkerCrashed (its worker is restarted already)."""
    inflight: dict[Hashable, tuple[int, Any]] = {}
    idle = set(range(pool.workers))

    def fill() -> None:
        for worker, job, args in take(sorted(idle), bool(inflight)):
            idle.remove(worker)
            inflight[pool.submit(worker, method, *args)] = (worker, job)

    fill()
    while inflight:
        handle = pool.wait_one(list(inflight))
        worker, job = inflight.pop(handle)
        try:
            value = pool.result(handle)
        except WorkerCrashed as exc:
            pool.restart(worker)
            value = exc
        except Exception as exc:
            value = exc
        idle.add(worker)
        done(worker, job, value)
        fill()


def run_each(pool: Pool, method: str, jobs: list[tuple], done: Callable[[int, Any], None]) -> None:
    """Call ``method(*job)`` for every job, a free worker taking the next job in order; ``done(index, value)`` as each
    finishes. A job that raised, or whose worker died, is done with its exception as the value: one bad job does not
    stop the others."""
    pending = deque(enumerate(jobs))

    def take(idle: list[int], running: bool) -> list[tuple[int, int, tuple]]:
        return [(worker, *pending.popleft()) for worker in idle[:len(pending)]]

    drive(pool, method, take, lambda worker, index, value: done(index, value))
