"""Simulators behind one protocol (``stress.envs.base.SimEnv``), found by suite name.

Each simulator is one module defining ``SIMULATOR`` (a ``stress.envs.base.Simulator``): LIBERO
(``stress.envs.libero``), ALOHA in simulation (``stress.envs.aloha``) and robosuite's own tasks
(``stress.envs.robosuite_tasks``). Adding one is a module plus its registry lines here, a plug-in's
``stress.simulators`` entry point, or ``register_simulator`` at run time; the runner, ground truth, replay and
families only talk to the protocol, and the families a simulator supports follow from its capabilities
(``Simulator.supports``).
"""

from __future__ import annotations

from stress.core.errors import UserError, choice_error
from stress.core.registry import Registry

# the simulators: imported on first use, so naming one never imports the others; plug-ins add theirs through
# the "stress.simulators" entry points (an object like the built-ins' SIMULATOR)
SIMULATORS = Registry("simulator", "stress.simulators")
SIMULATORS.register("libero", "stress.envs.libero:SIMULATOR")
SIMULATORS.register("aloha", "stress.envs.aloha:SIMULATOR")
SIMULATORS.register("robosuite", "stress.envs.robosuite_tasks:SIMULATOR")
# the built-ins' suites, listed here so naming a suite never imports another simulator (a plug-in's come from its SIMULATOR)
_SUITES = {
    "libero": ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"),
    "aloha": ("aloha",),
    "robosuite": ("robosuite",),
}


def register_simulator(sim) -> None:
    """Add a simulator (a ``stress.envs.base.Simulator``) at run time; its name and suites must be new."""
    taken = [s for s in sim.suites if s in _suite_owners()]
    if taken:
        raise UserError(f"simulator {sim.name!r}: suite(s) {taken} already belong to another simulator")
    SIMULATORS.register(sim.name, sim)


def simulator(name: str):
    """The ``Simulator`` of a registry name."""
    return SIMULATORS.get(name)


def simulator_names() -> tuple[str, ...]:
    return SIMULATORS.names()


def _suite_owners() -> dict[str, str]:
    return {s: name for name in simulator_names() for s in (_SUITES[name] if name in _SUITES else simulator(name).suites)}


def simulator_of(suite: str):
    """The ``Simulator`` a suite belongs to; unknown suite -> UserError listing them all."""
    owners = _suite_owners()
    if suite not in owners:
        raise choice_error("suite", suite, tuple(owners))
    return simulator(owners[suite])


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
