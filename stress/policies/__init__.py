"""Policy backends. The registry maps a CLI name to the class implementing the policy protocol."""

from __future__ import annotations

from stress.core.registry import Registry

# name -> "module:class", imported on first use so listing policies does not load heavy backends; plug-ins
# add theirs through the "stress.policies" entry points
POLICIES = Registry("policy", "stress.policies")
POLICIES.register("reference", "stress.policies.reference.policy:ReferencePolicy")
POLICIES.register("expert", "stress.policies.expert:ExpertPolicy")
POLICIES.register("aloha-expert", "stress.policies.aloha_expert:AlohaExpertPolicy")  # ALOHA's privileged expert (suite aloha)
POLICIES.register("remote", "stress.policies.remote:RemotePolicy")
POLICIES.register("openpi", "stress.policies.openpi:OpenpiPolicy")  # a server speaking openpi's protocol (pi0, pi0.5, harnesses on openpi-client)
POLICIES.register("cosmos-deploy", "stress.policies.cosmos_deploy:CosmosDeployPolicy")  # Cosmos Policy's own ALOHA deploy.py (HTTP, json_numpy)
POLICIES.register("lerobot", "stress.policies.lerobot_client:LerobotPolicy")  # a LeRobot policy directory, served from LeRobot's own environment


def policy_names() -> tuple[str, ...]:
    return POLICIES.names()


def policy_class(name: str):
    return POLICIES.get(name)


def simulator_argument(cls, simulator: str | None) -> dict:
    """The keyword a backend that declares ``per_simulator`` is given (the episode's simulator, which the runner
    passes and no user option sets); empty for every other backend."""
    return {"simulator": simulator} if simulator and getattr(cls, "per_simulator", False) else {}


def actions_only(name: str, options: dict) -> bool:
    """Does this policy, with these options, return actions only (no value, no predicted future)? A backend
    declares it (``actions_only``) or decides it from its options (``actions_only_for``: what its server serves)."""
    cls = policy_class(name)
    decide = getattr(cls, "actions_only_for", None)
    return bool(decide(dict(options))) if decide is not None else bool(getattr(cls, "actions_only", False))


def make_policy(name: str):
    return policy_class(name)()
