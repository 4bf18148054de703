"""Simulators behind one protocol (``stress.envs.base.SimEnv``), found by suite name.

Each simulator is one module defining ``SIMULATOR`` (a ``stress.envs.base.Simulator``): LIBERO
(``stress.envs.libero``), ALOHA in simulation (``stress.envs.aloha``) and robosuite's own tasks
(``stress.envs.robosuite_tasks``). Adding one is a module plus its
line here; the runner, ground truth, replay and families only talk to the protocol.
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


@cache
def simulator(name: str):
    """The ``Simulator`` of a registry name."""
    if name not in _MODULES:
        raise choice_error("simulator", name, tuple(_MODULES))
    return import_module(_MODULES[name][0]).SIMULATOR


def simulator_names() -> tuple[str, ...]:
    return tuple(_MODULES)


def simulator_of(suite: str):
    """The ``Simulator`` a suite belongs to; unknown suite -> UserError listing them all."""
    for name, (_, suites) in _MODULES.items():
        if suite in suites:
            return simulator(name)
    raise choice_error("suite", suite, SUITES)


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
