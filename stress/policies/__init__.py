"""Policy backends. The registry maps a CLI name to the class implementing the policy protocol."""

from __future__ import annotations

from importlib import import_module

from stress.core.errors import choice_error

# name -> (module, class); imported lazily so listing policies does not load heavy backends
_BACKENDS = {
    "reference": ("stress.policies.reference.policy", "ReferencePolicy"),
    "expert": ("stress.policies.expert", "ExpertPolicy"),
    "aloha-expert": ("stress.policies.aloha_expert", "AlohaExpertPolicy"),  # ALOHA's privileged expert (suite aloha)
    "remote": ("stress.policies.remote", "RemotePolicy"),
}


def policy_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def policy_class(name: str):
    if name not in _BACKENDS:
        raise choice_error("policy", name, policy_names())
    module, cls = _BACKENDS[name]
    return getattr(import_module(module), cls)


def make_policy(name: str):
    return policy_class(name)()
