"""The local backend: episodes in this process (one worker) or in spawn processes on this machine."""

from __future__ import annotations

from functools import partial

from stress.runners.episode import EpisodeWorker
from stress.runners.pool import InProcessPool, ProcessPool
from stress.runners.schedule import Runner


class LocalRunner(Runner):
    """Runs specs in this process (``workers`` 1) or in ``workers`` spawn processes, ``env_cache`` envs kept per worker
    (a search alternates between a few scenes). A process that dies (a simulator segfault) is replaced."""

    def __init__(self, workers: int = 1, env_cache: int = 1):
        if workers <= 1:
            pool = InProcessPool(partial(EpisodeWorker, env_cache))
        else:
            pool = ProcessPool(workers, partial(EpisodeWorker, env_cache, own_process=True))
        super().__init__(pool, env_cache)
