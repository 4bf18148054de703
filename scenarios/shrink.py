"""Shrinking a violating scenario to a 1-minimal one on its integer grid, and checking 1-minimality.

Greedy and deterministic, in the order a reader wants the answer: first fewest families (each one dropped
in turn, down to the clean scenario), then every axis of what is left moved to its rest value (identity),
else bisected between rest (holds) and its current index (violated) to the threshold, assuming the
violation is monotone along one axis. Passes repeat until nothing changes. Each step's verdict comes
from ``violated(point)``, which the search caches by scenario, so re-asking is free; the path records
every step tried.

Why not Hypothesis's shrinker: it cannot start from a failure found outside it (it shrinks only what its
own generator found; its explicit examples are never shrunk), and its generator is ~4x slower than uniform
random at finding high-severity failures. Bisection on the
grid lands exactly on thresholds, costs about log2(levels) episodes per moved axis, and replays from the
store on resume. ``docs/search.md`` has the measured comparison.
"""

from __future__ import annotations

import copy
from typing import Callable

from scenarios.searchspace import SearchSpace, axis_rest, point_key

MAX_PASSES = 3


def _with(point: dict, family: str | None = None, axis: str | None = None, index: int | None = None, drop: str | None = None) -> dict:
    out = copy.deepcopy(point)
    if drop is not None:
        del out["families"][drop]
    if family is not None:
        out["families"][family][axis] = index
    return out


class _Enough(Exception):
    """The speculative walk has collected its points."""


def shrink(space: SearchSpace, point: dict, violated: Callable[[dict, str], bool], prefetch: Callable[[list[dict]], None] | None = None,
           width: int = 1) -> tuple[dict, list[dict]]:
    """The shrunk point and the path (every step tried: change, verdict). ``violated(point, change)``.

    With ``prefetch`` and ``width`` > 1 (``--workers N``): whenever the walk asks a scenario it has no
    verdict for, the walk is first run ahead on what it knows, guessing each unknown step (a family dropped or an axis
    moved to rest still violates: most of a random find is incidental; a bisection's midpoint holds:
    the threshold is usually near the find), and the first ``width``
    unknown scenarios it would ask are evaluated together (``prefetch(points)``: one per worker). The
    walk itself is unchanged and reads their verdicts, so the result and the path are exactly the
    sequential shrink's; a speculative scenario the walk never asks is spent, not used."""
    path: list[dict] = []
    known: dict[str, bool] = {}

    def ask(candidate: dict, change: str) -> bool:
        if prefetch is not None and width > 1 and point_key(candidate) not in known:
            prefetch(_ahead(space, point, known, width))
        result = known[point_key(candidate)] = violated(candidate, change)
        path.append({"step": len(path), "change": change, "scenario": space.describe(candidate), "violated": result})
        return result

    return _walk(space, point, ask), path


def _ahead(space: SearchSpace, point: dict, known: dict[str, bool], width: int) -> list[dict]:
    """The first ``width`` scenarios without a verdict that the walk would ask, each unknown one guessed."""
    out: dict[str, dict] = {}

    def guess(candidate: dict, change: str) -> bool:
        key = point_key(candidate)
        if key in known:
            return known[key]
        out.setdefault(key, candidate)
        if len(out) >= width:
            raise _Enough
        return change.startswith("drop") or change.endswith("-> rest")

    try:
        _walk(space, point, guess)
    except _Enough:
        pass
    return list(out.values())


def _walk(space: SearchSpace, point: dict, attempt: Callable[[dict, str], bool]) -> dict:
    """The greedy walk: ``attempt(candidate, change)`` is each step's verdict."""
    current = copy.deepcopy(point)
    for _ in range(MAX_PASSES):
        changed = False
        for name in list(current["families"]):
            if attempt(_with(current, drop=name), f"drop {name}"):
                current, changed = _with(current, drop=name), True
        for name in list(current["families"]):
            for axis in space.families[name]:
                index, rest = current["families"][name][axis.name], axis_rest(axis)
                if index == rest:
                    continue
                if attempt(_with(current, name, axis.name, rest), f"{name}.{axis.name} -> rest"):
                    current, changed = _with(current, name, axis.name, rest), True
                    continue
                holds, fails = rest, index  # bisect: the violation sits between them
                while abs(fails - holds) > 1:
                    mid = holds + (fails - holds) // 2 if fails > holds else holds - (holds - fails) // 2
                    if attempt(_with(current, name, axis.name, mid), f"{name}.{axis.name} -> {mid}"):
                        fails = mid
                    else:
                        holds = mid
                if fails != index:
                    current, changed = _with(current, name, axis.name, fails), True
        if not changed:
            break
    return current


def relaxations(space: SearchSpace, point: dict) -> list[tuple[str, dict]]:
    """Every one-step relaxation of a point: each family dropped, each moved axis one grid step toward rest."""
    out = [(f"drop {name}", _with(point, drop=name)) for name in point["families"]]
    for name, indices in point["families"].items():
        for axis in space.families[name]:
            index, rest = indices[axis.name], axis_rest(axis)
            if index != rest:
                step = index - 1 if index > rest else index + 1
                out.append((f"{name}.{axis.name} -> {step}", _with(point, name, axis.name, step)))
    return out


def one_minimal(space: SearchSpace, point: dict, violated: Callable[[dict, str], bool], prefetch: Callable[[list[dict]], None] | None = None) -> dict:
    """Whether no one-step relaxation still violates (1-minimality), with each relaxation's verdict (all
    relaxations evaluated together first when ``prefetch`` is given)."""
    if prefetch is not None:
        prefetch([candidate for _, candidate in relaxations(space, point)])
    checks = [{"change": change, "violated": violated(candidate, f"check {change}")} for change, candidate in relaxations(space, point)]
    return {"one_minimal": not any(c["violated"] for c in checks), "relaxations": checks}


def shrink_hypothesis(space: SearchSpace, point: dict, violated: Callable[[dict, str], bool], database=None, max_examples: int = 200) -> tuple[dict, list[dict]]:
    """The same job done by Hypothesis's shrinker (``--shrinker hypothesis``): a strategy over the box
    between rest and the violating point (each family kept or dropped, each moved axis 0..|index - rest|
    steps from rest), ``find`` with the generate and shrink phases only (``Phase.explain`` multiplies the
    cost). Hypothesis cannot start from the known violation, so it first has to find one in the box."""
    from hypothesis import Phase, find, settings
    from hypothesis import strategies as st
    from hypothesis.errors import NoSuchExample

    moved = {name: [a for a in space.families[name] if indices[a.name] != axis_rest(a)] for name, indices in point["families"].items()}
    strategy = st.fixed_dictionaries({
        name: st.tuples(st.booleans(), st.fixed_dictionaries({a.name: st.integers(0, abs(point["families"][name][a.name] - axis_rest(a))) for a in axes}))
        for name, axes in moved.items()
    })

    def build(drawn: dict) -> dict:
        out = copy.deepcopy(point)
        for name, (keep, steps) in drawn.items():
            if not keep:
                del out["families"][name]
                continue
            for a in moved[name]:
                sign = 1 if point["families"][name][a.name] > axis_rest(a) else -1
                out["families"][name][a.name] = axis_rest(a) + sign * steps[a.name]
        return out

    path: list[dict] = []

    def condition(drawn) -> bool:
        candidate = build(drawn)
        result = violated(candidate, "hypothesis")
        path.append({"step": len(path), "change": "hypothesis", "scenario": space.describe(candidate), "violated": result})
        return result

    config = settings(phases=[Phase.generate, Phase.shrink], max_examples=max_examples, database=database, deadline=None, derandomize=True)
    try:
        found = find(strategy, condition, settings=config, database_key=b"stress-shrink:" + repr(sorted(moved)).encode())
    except NoSuchExample:
        return copy.deepcopy(point), path
    return build(found), path
