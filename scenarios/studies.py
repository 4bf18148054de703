"""The studies' scenarios (``stress study NAME``): one variable of the policy varied on identical scenarios
(their figures: stress/report/study.py).

* ``aggregation``: best-of-N value aggregation, average / lcb / success_vote / majority_mean;
* ``value-source``: V(s') (value of the predicted future) vs Q(s, a) (value of state + actions);
* ``denoising``: 1 / 5 / 10 denoising steps, direct and planning (latency vs success vs prediction error);
* ``candidates``: best-of-N with N = 1, 2, 4, 8 under the given perturbation families and severities;
* ``temperature``: the policy's sampling temperature 1 / 0.5 / 0.25, direct and planning (how much of the
  outcome is the policy's noise, and what best-of-N gains when its candidates are less diverse).

Every study also runs the direct policy on the same scenarios, the reference point of every comparison.
"""

from __future__ import annotations

from dataclasses import replace

from stress.core.registry import Registry
from stress.policies.planning import AGGREGATIONS

DENOISING_STEPS = (1, 5, 10)
CANDIDATES = (1, 2, 4, 8)
TEMPERATURES = (1.0, 0.5, 0.25)


def _planning(s, n_candidates: int, aggregation: str, **fields):
    return replace(s, mode="planning", n_candidates=n_candidates, aggregation=aggregation, **fields)


def _aggregation(s, n_candidates, aggregation):
    return [s] + [_planning(s, n_candidates, a) for a in AGGREGATIONS]


def _value_source(s, n_candidates, aggregation):
    return [s] + [_planning(s, n_candidates, aggregation, policy_options=(("value_source", v),)) for v in ("future", "action")]


def _direct_and_planning(s, n_candidates: int, aggregation: str, option: str, values) -> list:
    """Direct and planning with each value of one policy option."""
    out = []
    for value in values:
        options = ((option, value),)
        out += [replace(s, policy_options=options), _planning(s, n_candidates, aggregation, policy_options=options)]
    return out


def _denoising(s, n_candidates, aggregation):
    return _direct_and_planning(s, n_candidates, aggregation, "num_denoising_steps", DENOISING_STEPS)


def _candidates(s, n_candidates, aggregation):
    return [s] + [_planning(s, n, aggregation) for n in CANDIDATES]


def _temperature(s, n_candidates, aggregation):
    return _direct_and_planning(s, n_candidates, aggregation, "temperature", TEMPERATURES)


# the studies: (direct spec, n_candidates, aggregation) -> its variants (the direct spec itself included) each, in
# this order; plug-ins add theirs through the "stress.studies" entry points
STUDIES = Registry("study", "stress.studies")
STUDIES.register("aggregation", _aggregation)
STUDIES.register("value-source", _value_source)
STUDIES.register("denoising", _denoising)
STUDIES.register("candidates", _candidates)
STUDIES.register("temperature", _temperature)


def study_specs(name: str, base: list, n_candidates: int, aggregation: str, checkpoints: tuple[str, ...] = ()) -> list:
    """The study's variants of each direct ``base`` spec (the direct spec itself included); with ``checkpoints``,
    all of them once per checkpoint (e.g. models trained on different amounts of data)."""
    variants = STUDIES.get(name)
    out = [v for s in base for v in variants(s, n_candidates, aggregation)]
    if checkpoints:
        out = [replace(s, policy_options=tuple(sorted((*s.policy_options, ("checkpoint", c))))) for c in checkpoints for s in out]
    return list({s.key: s for s in out}.values())
