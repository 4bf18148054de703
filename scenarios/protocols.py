"""Published evaluation protocols, declared as data and expanded into ordinary ScenarioSpecs.

A protocol fixes what a paper's headline number was measured on: suites, trials per task (the first N
shipped init states), policy seeds, image size, settle steps, step limits, policy options, plus the
paper's figures and the tolerance of the reproduction verdict (``stress.report.protocol``). Its specs go
through the normal runner and store, so ``--resume``, ``stress show`` and the gallery work on a protocol
run unchanged. ``stress run --protocol NAME``; ``stress list protocols``; docs/protocols.md.

Adding a protocol is one more ``Protocol(...)`` entry in ``PROTOCOLS``, or a plug-in's ``stress.protocols`` entry point.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from stress.core.errors import UserError, choice_error
from stress.core.registry import Registry
from stress.core.spec import ScenarioSpec
from stress.envs import simulator_of
from stress.policies import policy_class


@dataclass(frozen=True)
class Protocol:
    """One published evaluation protocol.

    ``step_limits``: policy steps per episode after the settle steps, per suite. ``seeds``: the policy seeds;
    each seed is a complete evaluation of every task x trial, and the paper reports the mean over seeds.
    ``policy_options``: constructor options given to every backend that accepts them (others run without:
    e.g. the scripted expert has no denoising steps). ``paper``: published success in percent per suite.
    ``paper_average``: the published average over all ``suites``. ``tolerance``: points of success the
    measured average may differ from the paper's and still reproduce it.
    """

    name: str
    summary: str
    source: str
    suites: tuple[str, ...]
    tasks_per_suite: int
    trials: int
    seeds: tuple[int, ...]
    image_size: int
    settle_steps: int
    step_limits: tuple[tuple[str, int], ...]
    mode: str
    policy_options: tuple[tuple[str, Any], ...]
    paper: tuple[tuple[str, float], ...]
    paper_average: float
    tolerance: float

    def step_limit(self, suite: str) -> int:
        return dict(self.step_limits)[suite]

    def paper_figure(self, suite: str) -> float:
        return dict(self.paper)[suite]

    def reference_average(self, suites) -> float:
        """The paper's average over ``suites``: the published average for all of the protocol's suites, else
        the mean of the published per-suite figures of those suites."""
        suites = tuple(suites)
        if set(suites) == set(self.suites):
            return self.paper_average
        return sum(self.paper_figure(s) for s in suites) / len(suites)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "source": self.source, "suites": list(self.suites), "tasks_per_suite": self.tasks_per_suite,
                "trials": self.trials, "seeds": list(self.seeds), "image_size": self.image_size, "settle_steps": self.settle_steps,
                "step_limits": dict(self.step_limits), "mode": self.mode, "policy_options": dict(self.policy_options), "paper": dict(self.paper),
                "paper_average": self.paper_average, "tolerance": self.tolerance}


# the protocols; plug-ins add theirs (a Protocol each) through the "stress.protocols" entry points
PROTOCOLS = Registry("protocol", "stress.protocols")
for _protocol in (
    Protocol(
        name="cosmos-libero",
        summary="Cosmos Policy's LIBERO evaluation (arXiv:2601.16163): 4 suites x 10 tasks x 50 trials x seeds 195-197, direct policy",
        source="NVlabs/cosmos-policy experiments/robot/libero/run_libero_eval.py and LIBERO.md; per-suite figures from third-party summaries",
        suites=("libero_spatial", "libero_object", "libero_goal", "libero_10"),
        tasks_per_suite=10,
        trials=50,  # trial i starts from the task's shipped init state i (Cosmos: initial_states[episode_idx])
        seeds=(195, 196, 197),
        image_size=256,
        settle_steps=10,
        step_limits=(("libero_spatial", 220), ("libero_object", 280), ("libero_goal", 300), ("libero_10", 520)),
        mode="direct",  # the LIBERO numbers are the direct policy (no best-of-N: LIBERO has no planning checkpoint)
        policy_options=(("num_denoising_steps", 5),),
        paper=(("libero_spatial", 98.1), ("libero_object", 100.0), ("libero_goal", 98.2), ("libero_10", 97.6)),
        paper_average=98.5,
        tolerance=1.0,
    ),
):
    PROTOCOLS.register(_protocol.name, _protocol)


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)


def check_settle_steps(protocol: Protocol) -> None:
    """A simulator adapter settles a fixed number of no-op steps; a protocol asking for another count cannot run."""
    for suite in protocol.suites:
        sim = simulator_of(suite)
        if protocol.settle_steps != sim.env_class.settle_steps:
            raise UserError(f"protocol {protocol.name!r} needs {protocol.settle_steps} settle steps; the {sim.name} adapter settles {sim.env_class.settle_steps}")


def accepted_options(protocol: Protocol, policy: str, served_settings: dict | None = None) -> tuple[tuple[str, Any], ...]:
    """The protocol's policy options that backend ``policy`` takes (constructor keyword arguments) and, for a
    policy server (``served_settings``: the settings its handshake declares), that the server can change."""
    accepted = inspect.signature(policy_class(policy).__init__).parameters
    return tuple((k, v) for k, v in protocol.policy_options if k in accepted and (served_settings is None or k in served_settings))


def protocol_specs(protocol: Protocol, policy: str, suites=None, tasks=None, trials: int | None = None,
                   scenes: Callable[[int], list[tuple]] = lambda init: [()], max_steps: int | None = None,
                   policy_options: tuple[tuple[str, Any], ...] = (), served_settings: dict | None = None) -> list[ScenarioSpec]:
    """The protocol's episodes: every suite x task x trial x seed, in that order.

    ``suites`` (default all of the protocol's), ``tasks`` (default every task of each suite) and ``trials``
    (default the protocol's) select a subset. ``scenes(init)`` gives the perturbation tuples run on init state
    ``init`` (default the clean scene only; ``()`` is the clean one). ``max_steps`` overrides every suite's step
    limit (tests; the run then is not the paper's protocol). ``policy_options`` are added to the protocol's own
    (transport options of a remote backend: ``server``, ``served``); ``served_settings``: a policy server's declared
    settings (only those are sent). Raises UserError naming a bad selection.
    """
    check_settle_steps(protocol)
    suites = tuple(protocol.suites if suites is None else suites)
    for suite in suites:
        if suite not in protocol.suites:
            raise choice_error(f"suite of protocol {protocol.name}", suite, protocol.suites)
    trials = protocol.trials if trials is None else trials
    if not 1 <= trials <= protocol.trials:
        raise UserError(f"--trials {trials} invalid for protocol {protocol.name}; valid: 1-{protocol.trials}")
    task_ids = tuple(range(protocol.tasks_per_suite)) if tasks is None else tuple(tasks)
    for task in task_ids:
        if not 0 <= task < protocol.tasks_per_suite:
            raise UserError(f"task {task} not in protocol {protocol.name}; valid: 0-{protocol.tasks_per_suite - 1}")
    options = tuple(sorted({**dict(accepted_options(protocol, policy, served_settings)), **dict(policy_options)}.items()))
    return [
        ScenarioSpec(suite=suite, task_id=task, init_index=init, perturbations=perturbations, policy=policy, mode=protocol.mode, seed=seed,
                     max_steps=max_steps or protocol.step_limit(suite), image_size=protocol.image_size, policy_options=options)
        for suite in suites for task in task_ids for init in range(trials) for perturbations in scenes(init) for seed in protocol.seeds
    ]
