"""The policies a worker keeps between episodes: loading a model costs seconds, resetting a policy nothing."""

from __future__ import annotations

from stress.policies import policy_class


class PolicyCache:
    def __init__(self):
        self._policies = {}

    def get(self, name: str, slot: str = "episode", options: tuple = ()):
        """One instance per backend, slot and constructor options: the ground truth's continuations get
        their own slot ("continuation"), so they never touch the episode's policy state."""
        key = (name, slot, options)
        if key not in self._policies:
            self._policies[key] = policy_class(name)(**dict(options))
        return self._policies[key]
