"""The policies a worker keeps between episodes: loading a model costs seconds, resetting a policy nothing."""

from __future__ import annotations

from stress.policies import policy_class, simulator_argument


class PolicyCache:
    def __init__(self):
        self._policies = {}

    def get(self, name: str, slot: str = "episode", options: tuple = (), simulator: str | None = None):
        """One instance per backend, slot and constructor options: the ground truth's continuations get
        their own slot ("continuation"), so they never touch the episode's policy state. A backend that declares
        ``per_simulator`` is also told the episode's simulator (one instance per simulator)."""
        cls = policy_class(name)
        extra = simulator_argument(cls, simulator)
        key = (name, slot, options, extra.get("simulator"))
        if key not in self._policies:
            self._policies[key] = cls(**dict(options), **extra)
        return self._policies[key]
