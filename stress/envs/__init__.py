"""Simulators behind one protocol (``stress.envs.base.SimEnv``), found by suite name.

Each simulator is one module defining ``SIMULATOR`` (a ``stress.envs.base.Simulator``): LIBERO
(``stress.envs.libero``), ALOHA in simulation (``stress.envs.aloha``) and robosuite's own tasks
(``stress.envs.robosuite_tasks``). Adding one is a module plus its line here, or ``register_simulator``
at run time; the runner, ground truth, replay and families only talk to the protocol, and the families a
simulator supports follow from its capabilities (``Simulator.supports``).
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

from stress.core.errors import UserError, choice_error

# simulator -> (module, its suites); the suites are listed here so naming one never imports the others
_MODULES = {
    "libero": ("stress.envs.libero", ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")),
    "aloha": ("stress.envs.aloha", ("aloha",)),
    "robosuite": ("stress.envs.robosuite_tasks", ("robosuite",)),
}
SUITES = tuple(s for _, suites in _MODULES.values() for s in suites)
_ADDED: dict = {}  # simulators registered at run time: name -> Simulator


def register_simulator(sim) -> None:
    """Add a simulator (a ``stress.envs.base.Simulator``) at run time; its suites must be new."""
    taken = [s for s in sim.suites if s in SUITES or any(s in other.suites for other in _ADDED.values())]
    if sim.name in _MODULES or sim.name in _ADDED or taken:
        raise ValueError(f"simulator {sim.name!r} or its suites {taken} already registered")
    _ADDED[sim.name] = sim


@cache
def _builtin(name: str):
    return import_module(_MODULES[name][0]).SIMULATOR


def simulator(name: str):
    """The ``Simulator`` of a registry name."""
    if name in _ADDED:
        return _ADDED[name]
    if name not in _MODULES:
        raise choice_error("simulator", name, simulator_names())
    return _builtin(name)


def simulator_names() -> tuple[str, ...]:
    return (*_MODULES, *_ADDED)


def simulator_of(suite: str):
    """The ``Simulator`` a suite belongs to; unknown suite -> UserError listing them all."""
    for name, (_, suites) in _MODULES.items():
        if suite in suites:
            return simulator(name)
    for sim in _ADDED.values():
        if suite in sim.suites:
            return sim
    raise choice_error("suite", suite, (*SUITES, *(s for sim in _ADDED.values() for s in sim.suites)))


def simulators_supporting(family) -> tuple[str, ...]:
    """The simulators a perturbation family runs on: those with every capability it needs."""
    return tuple(name for name in simulator_names() if simulator(name).supports(family))


def check_task(suite: str, task_id: int) -> None:
    tasks = simulator_of(suite).tasks(suite)
    if not isinstance(task_id, int) or isinstance(task_id, bool) or not 0 <= task_id < len(tasks):
        raise UserError(f"task {task_id!r} not in suite {suite}; valid: 0-{len(tasks) - 1}")


def check_init(suite: str, task_id: int, init_index: int) -> None:
    check_task(suite, task_id)
    n = simulator_of(suite).n_init_states(suite, task_id)
    if not isinstance(init_index, int) or not 0 <= init_index < n:
        raise UserError(f"init state {init_index!r} not in {suite} task {task_id}; valid: 0-{n - 1}")


def max_steps(suite: str) -> int:
    return simulator_of(suite).suites[suite]


def make_env(suite: str, task_id: int, image_size: int, scene=()):
    return simulator_of(suite).env_class(suite, task_id, image_size=image_size, scene=scene)
