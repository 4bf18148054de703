"""The envs a worker keeps between episodes: building a scene costs seconds, resetting it milliseconds."""

from __future__ import annotations

from collections import OrderedDict

from stress.core.spec import ScenarioSpec
from stress.envs import make_env
from stress.envs.base import SimEnv, scene_key


def scene_of(spec: ScenarioSpec) -> tuple:
    """The scene a spec runs in: one env build serves every spec with this key (``EnvCache`` keeps envs by it, the
    runners' scheduler keeps a worker on it)."""
    return (spec.suite, spec.task_id, spec.image_size, scene_key(spec.perturbations))


class EnvCache:
    """Keeps the most recent env(s) of a worker, by scene."""

    def __init__(self, size: int = 1):
        self.size, self._envs = size, OrderedDict()

    def get(self, spec: ScenarioSpec) -> SimEnv:
        key = scene_of(spec)
        if key in self._envs:
            self._envs.move_to_end(key)
            return self._envs[key]
        while len(self._envs) >= self.size:
            self._envs.popitem(last=False)[1].close()
        env = make_env(spec.suite, spec.task_id, spec.image_size, spec.perturbations)
        self._envs[key] = env
        return env

    def close(self) -> None:
        # free the render contexts before the interpreter tears EGL down (avoids noisy __del__ errors)
        while self._envs:
            self._envs.popitem()[1].close()

    def drop(self, spec: ScenarioSpec) -> None:
        for key in [k for k in self._envs if k[:2] == (spec.suite, spec.task_id)]:
            self._envs.pop(key).close()
