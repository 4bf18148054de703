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

from stress.policies.planning import AGGREGATIONS

STUDIES = ("aggregation", "value-source", "denoising", "candidates", "temperature")
DENOISING_STEPS = (1, 5, 10)
CANDIDATES = (1, 2, 4, 8)
TEMPERATURES = (1.0, 0.5, 0.25)


def study_specs(name: str, base: list, n_candidates: int, aggregation: str, checkpoints: tuple[str, ...] = ()) -> list:
    """The study's variants of each direct ``base`` spec (the direct spec itself included); with ``checkpoints``,
    all of them once per checkpoint (e.g. models trained on different amounts of data)."""
    planning = lambda s, **kw: replace(s, mode="planning", n_candidates=kw.pop("n", n_candidates), aggregation=kw.pop("agg", aggregation), **kw)
    out = []
    for s in base:
        if name == "aggregation":
            out += [s] + [planning(s, agg=a) for a in AGGREGATIONS]
        elif name == "value-source":
            out += [s] + [planning(s, policy_options=(("value_source", v),)) for v in ("future", "action")]
        elif name == "denoising":
            for steps in DENOISING_STEPS:
                options = (("num_denoising_steps", steps),)
                out += [replace(s, policy_options=options), planning(s, policy_options=options)]
        elif name == "candidates":
            out += [s] + [planning(s, n=n) for n in CANDIDATES]
        elif name == "temperature":
            for temperature in TEMPERATURES:
                options = (("temperature", temperature),)
                out += [replace(s, policy_options=options), planning(s, policy_options=options)]
    if checkpoints:
        out = [replace(s, policy_options=tuple(sorted((*s.policy_options, ("checkpoint", c))))) for c in checkpoints for s in out]
    return list({s.key: s for s in out}.values())
