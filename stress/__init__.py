"""stress: a robustness and failure-mode stress suite for robot policies. What users import::

    from stress import ScenarioSpec, PerturbationSpec, run_specs, RunStore

    specs = [ScenarioSpec(suite="libero_spatial", task_id=0, init_index=0, perturbations=(PerturbationSpec("lighting", 3),))]
    run_specs(specs, RunStore.create("results", "mine", specs, {}))

and the pieces to extend it: ``Perturbation`` with the ``ParamSpace`` declarations and ``register_family``, policies
(``Observation`` -> ``Decision``), properties (``register_property``, ``declare_property``, ``Verdict``), and the
registries of every kind (``FAMILIES``, ``POLICIES``, ... each a ``Registry`` that plug-ins extend through entry points,
docs/plugins.md).

The names resolve on first use (PEP 562 ``__getattr__``), not at import: every module of the suite imports this
package first, and ``import stress.core.spec`` or the stand-alone policy server (``stress.policies.cosmos_server``,
numpy, msgpack and websockets only) must not load torch, MuJoCo or the rest of the house.
"""

from __future__ import annotations

from importlib import import_module

# public name -> "module" (same name there) or "module:name"
_EXPORTS = {
    # the vocabulary
    "ScenarioSpec": "stress.core.spec",
    "PerturbationSpec": "stress.core.spec",
    "Layer": "stress.core.spec",
    "Observation": "stress.core.policy",
    "Decision": "stress.core.policy",
    "Candidate": "stress.core.policy",
    "Policy": "stress.core.policy",
    "PolicyFault": "stress.core.policy",
    "PolicyUnavailable": "stress.core.policy",
    "EpisodeResult": "stress.core.episode",
    "UserError": "stress.core.errors",
    "InvalidScene": "stress.core.errors",
    "NotRealised": "stress.core.errors",
    "Registry": "stress.core.registry",
    # perturbation families and their parameter spaces
    "Perturbation": "perturbations.base",
    "Realised": "perturbations.base",
    "FAMILIES": "perturbations.base",
    "register_family": "perturbations.base:register",
    "family": "perturbations.base",
    "ParamSpace": "perturbations.space",
    "Real": "perturbations.space",
    "Choice": "perturbations.space",
    "Vector": "perturbations.space",
    "Group": "perturbations.space",
    "ListOf": "perturbations.space",
    "Free": "perturbations.space",
    # policies and simulators
    "POLICIES": "stress.policies",
    "make_policy": "stress.policies",
    "policy_class": "stress.policies",
    "SIMULATORS": "stress.envs",
    "register_simulator": "stress.envs",
    # running and storing
    "run_specs": "stress.runners",
    "make_runner": "stress.runners",
    "BACKENDS": "stress.runners",
    "RunStore": "stress.store",
    # the search
    "Property": "scenarios.properties",
    "Verdict": "scenarios.properties",
    "Episode": "scenarios.properties",
    "margin": "scenarios.properties",
    "PROPERTIES": "scenarios.properties",
    "register_property": "scenarios.properties:register",
    "declare_property": "scenarios.properties:declare",
    "Sampler": "scenarios.samplers",
    "SAMPLERS": "scenarios.samplers",
    "SHRINKERS": "scenarios.search",
    "Protocol": "scenarios.protocols",
    "PROTOCOLS": "scenarios.protocols",
    "STUDIES": "scenarios.studies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stress' has no attribute {name!r}")
    module, _, attr = _EXPORTS[name].partition(":")
    value = getattr(import_module(module), attr or name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
