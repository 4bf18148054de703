"""``stress card``'s designed experiment: the five known failure modes of world-model policies as pre-declared
hypotheses, each with the episodes it needs, paired on identical scenarios, within an episode budget.

A *unit* is one scenario: (task, init state), its perturbations seeded by ``perturbation_seed`` (the same scene
``stress run`` makes at the same run seed, so a run's stored episodes are reused by key). Each block (the five
hypotheses and the robustness profile) turns a unit into the specs it needs; the design hands units to the blocks
round-robin (unit 0 to every block, then unit 1, ...) while the number of distinct episodes stays within the
budget, so a small budget spreads over every hypothesis instead of exhausting the first. Specs shared between
blocks (the clean direct episode of a unit) are counted, and run, once.

1. ``ood_amplification``: clean and an out-of-distribution initial state (object pose, robot init, distractors;
   one family per unit, in turn), direct and planning on each;
2. ``value_overconfidence``: clean and occlusion / lighting (one per unit), direct, the values of every decision;
3. ``borderline_flips``: a family at its failure boundary (a map's threshold, else the default level) and the clean
   scene far from it, each with ``FLIP_SEEDS`` policy seeds;
4. ``open_loop_cascades``: clean and a fixed push (the target object moved by the level's distance when the
   gripper comes within 10 cm), each with the full chunk executed and a quarter of it before re-planning;
5. ``mode_collapse``: clean, direct and best-of-N with ``FEW_CANDIDATES`` and with N candidates;
6. ``profile``: one family per perturbation axis the field reports, at the default level, direct;
7. ``language`` (on a simulator whose tasks share a scene): the profile's meaning-preserving language level and
   ``SWAP_LEVEL`` (another task's instruction) against clean, direct: does the policy ignore rewording, does it
   ignore the words. Last, so it takes only what the other blocks leave (one episode per scenario the profile has).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from perturbations.base import family
from perturbations.mid_chunk_push import MOVE_M
from stress.core.errors import UserError
from stress.core.spec import DEFAULT_SEVERITY, PerturbationSpec, ScenarioSpec, perturbation_seed
from stress.envs import check_task, simulator_of
from stress.envs.scene import SceneQuery
from stress.policies import policy_class
from stress.runners.episode import check_spec
from stress.store import RunStore

CARD_FORMAT = "stress-card/1"
MIN_UNITS = 2  # scenarios a hypothesis needs before any interval means something: the smallest useful budget
DEFAULT_BUDGET = 60
FLIP_SEEDS = 3
FEW_CANDIDATES = 2
PUSH_DISTANCE_M = 0.1
SWAP_LEVEL = 4  # the language family's grounding level: another task's instruction of the same scene
REPLAN_OPTIONS = ("replan_steps", "chunk")  # the constructor option that sets how many actions run before the next query

# the perturbation axes the field's leaderboards report, each with the families that perturb it (the first one the
# simulator supports is run)
AXES = (("camera", ("camera",)), ("robot initial state", ("robot_init",)), ("language", ("language",)),
        ("lighting", ("lighting", "image_lighting")), ("background", ("texture",)), ("sensor noise", ("sensor_noise",)),
        ("layout", ("object_pose", "distractors")))


@dataclass(frozen=True)
class Hypothesis:
    """One failure mode as a pre-declared hypothesis. ``needs``: what the policy must provide (planning, value,
    replan, seeded); ``families``: the families it perturbs with (any one the simulator supports will do);
    ``direction``/``margin``: the sign of the hypothesised effect and the smallest effect worth reporting."""

    id: str
    number: int
    title: str
    claim: str
    test: str
    needs: tuple[str, ...]
    families: tuple[str, ...]
    direction: int
    margin: float
    effect: str
    specs: Callable = field(repr=False, compare=False, default=None)


@dataclass(frozen=True)
class Context:
    """What every block's specs share: the card's flags."""

    suite: str
    policy: str
    seed: int
    max_steps: int | None
    image_size: int
    candidates: int
    aggregation: str
    options: tuple[tuple[str, Any], ...]
    severities: dict[str, int]
    replan: tuple[str, int, int] | None  # (option, full, short)
    families: dict[str, tuple[str, ...]]  # block -> the supported families it uses
    language_swap: int | None = None  # the language block's swapped-task level (SWAP_LEVEL); None: no language block (no shared scene, or a card from before it)

    def spec(self, unit: tuple[int, int], perturbations=(), mode: str = "direct", seed_offset: int = 0, n: int | None = None,
             options: dict | None = None) -> ScenarioSpec:
        task, init = unit
        planning = mode == "planning"
        return ScenarioSpec(suite=self.suite, task_id=task, init_index=init, perturbations=tuple(perturbations), policy=self.policy, mode=mode,
                            n_candidates=(n or self.candidates) if planning else 1, aggregation=self.aggregation if planning else None,
                            seed=self.seed + seed_offset, max_steps=self.max_steps, image_size=self.image_size,
                            policy_options=tuple(sorted({**dict(self.options), **(options or {})}.items())))

    def perturbation(self, name: str, unit: tuple[int, int], params: dict | None = None) -> PerturbationSpec:
        severity = self.severities.get(name, DEFAULT_SEVERITY)
        return PerturbationSpec(name, severity, perturbation_seed(self.seed, unit[1]), "both", params)

    def rotate(self, block: str, index: int) -> str:
        names = self.families[block]
        return names[index % len(names)]


# --- the blocks: (context, unit index, unit) -> its specs -----------------------------------------------------
def _ood(c: Context, i: int, u) -> list:
    p = (c.perturbation(c.rotate("ood_amplification", i), u),)
    return [c.spec(u), c.spec(u, mode="planning"), c.spec(u, p), c.spec(u, p, mode="planning")]


def _value(c: Context, i: int, u) -> list:
    return [c.spec(u), c.spec(u, (c.perturbation(c.rotate("value_overconfidence", i), u),))]


def _flips(c: Context, i: int, u) -> list:
    p = (c.perturbation(c.rotate("borderline_flips", i), u),)
    return [c.spec(u, scene, seed_offset=k) for scene in ((), p) for k in range(FLIP_SEEDS)]


def push_params(severity: int, unit: tuple[int, int], seed: int) -> dict:
    """The push of ``open_loop_cascades``: the target moved by the level's distance (a move is exact, so every
    chunk length meets the same push) when the gripper comes within ``PUSH_DISTANCE_M``, in a direction drawn
    from the unit's perturbation seed."""
    direction = float(np.random.default_rng(perturbation_seed(seed, unit[1])).uniform(0.0, 360.0))
    return {"object": "target", "trigger": "gripper_distance", "distance_m": PUSH_DISTANCE_M, "action": "move",
            "displacement_m": MOVE_M[max(1, severity)], "direction_deg": round(direction, 2)}


def _cascades(c: Context, i: int, u) -> list:
    option, _, short = c.replan
    push = (c.perturbation("mid_chunk_push", u, push_params(c.severities.get("mid_chunk_push", DEFAULT_SEVERITY), u, c.seed)),)
    return [c.spec(u, scene, options=options) for scene in ((), push) for options in ({}, {option: short})]


def _collapse(c: Context, i: int, u) -> list:
    return [c.spec(u), c.spec(u, mode="planning", n=FEW_CANDIDATES), c.spec(u, mode="planning")]


def _profile(c: Context, i: int, u) -> list:
    return [c.spec(u)] + [c.spec(u, (c.perturbation(name, u),)) for name in c.families["profile"]]


def _language(c: Context, i: int, u) -> list:
    """The language-sensitivity figure: the profile's meaning-preserving language level (shared with it) and the
    swap (``c.language_swap``: another task's instruction), against clean, on the same scenario."""
    kept = c.perturbation("language", u)
    return [c.spec(u), c.spec(u, (kept,)), c.spec(u, (replace(kept, severity=c.language_swap),))]


HYPOTHESES = (
    Hypothesis("ood_amplification", 1, "OOD amplification",
               "under out-of-distribution initial states planning fails where the direct policy succeeds more often than the reverse",
               "exact McNemar test on the perturbed direct/planning pairs; planning - direct success with Newcombe's paired interval; "
               "the same on clean pairs for comparison", ("planning",), ("object_pose", "robot_init", "distractors"), -1, 0.10,
               "planning - direct success under OOD initial states", _ood),
    Hypothesis("value_overconfidence", 2, "Value over-confidence under occlusion and lighting",
               "on failed episodes the predicted value rises above the realised value by more under occlusion and lighting than on clean",
               "over-estimation (predicted - realised value, executed decisions) of failed episodes, perturbed - clean, with a bootstrap interval",
               ("value",), ("occlusion", "lighting"), +1, 0.05, "over-estimation on failed episodes, perturbed - clean", _value),
    Hypothesis("borderline_flips", 3, "Borderline flips",
               f"near the failure boundary outcomes flip with the policy seed alone ({FLIP_SEEDS} seeds per scenario) more than far from it",
               "flip rate near the boundary - on clean (far) with Newcombe's paired interval; a logistic fit of flip against distance to the boundary",
               ("seeded",), ("object_pose", "occlusion"), +1, 0.10, "flip rate near the boundary - far from it", _flips),
    Hypothesis("open_loop_cascades", 4, "Open-loop cascades",
               "a disturbance mid-chunk hurts more the longer the chunk is executed without re-planning (failure at equal push against executed length)",
               "paired bootstrap of (push - clean failure) with the full chunk - with a quarter chunk; a logistic fit of failure against executed length under the push",
               ("replan",), ("mid_chunk_push",), +1, 0.10, "harm of the push, full chunk - quarter chunk", _cascades),
    Hypothesis("mode_collapse", 5, "Mode collapse with few samples",
               f"the candidates' spread shrinks with fewer samples (best-of-{FEW_CANDIDATES} against best-of-N), and the planning gain with it",
               f"paired bootstrap of the mean action spread, best-of-{FEW_CANDIDATES} - best-of-N, relative to best-of-N's; planning gains with Newcombe's paired interval",
               ("planning",), (), -1, 0.10, f"relative action spread, best-of-{FEW_CANDIDATES} - best-of-N", _collapse),
)
PROFILE = "profile"
LANGUAGE = "language"  # last: it only adds the swap (and the profile's language episode where the profile got no scenario)
BLOCKS = {**{h.id: h.specs for h in HYPOTHESES}, PROFILE: _profile, LANGUAGE: _language}


# --- what the policy and the suite allow --------------------------------------------------------------------------
def replan_option(policy: str) -> str | None:
    params = inspect.signature(policy_class(policy).__init__).parameters
    return next((o for o in REPLAN_OPTIONS if o in params), None)


def missing_needs(policy: str, server: dict | None = None) -> dict[str, str]:
    """need -> why ``policy`` cannot meet it (absent: it can). Best-of-N ranks candidates by a predicted value, so
    a policy with a planning mode has a value head; a policy server says what it serves."""
    cls = policy_class(policy)
    modes = tuple(server["modes"]) if server else tuple(cls.modes)
    value = ("value" in server.get("predictions", ())) if server else "planning" in modes and not getattr(cls, "actions_only", False)
    out = {}
    if "planning" not in modes:
        out["planning"] = f"policy {policy!r} has no planning mode (best-of-N)"
    if not value:
        out["value"] = f"policy {policy!r} predicts no value (no value head)"
    if replan_option(policy) is None or server:
        out["replan"] = f"policy {policy!r} has no option for the actions executed per query (valid: a policy with {' or '.join(REPLAN_OPTIONS)})"
    if not getattr(cls, "seeded", True):
        out["seeded"] = f"policy {policy!r} ignores its seed (a deterministic plan: no outcome can flip with the seed)"
    return out


def supported_families(suite: str, names) -> tuple[str, ...]:
    sim = simulator_of(suite)
    return tuple(n for n in names if sim.supports(family(n)))


def applicability(policy: str, suite: str, server: dict | None = None) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """(block -> the families of it ``suite`` supports, hypothesis -> why it cannot be tested): a need the policy
    lacks, else a suite without any of the hypothesis' families. The profile takes each axis' first supported family."""
    missing = missing_needs(policy, server)
    families, untestable = {}, {}
    for h in HYPOTHESES:
        families[h.id] = supported_families(suite, h.families)
        lacking = [missing[n] for n in h.needs if n in missing]
        if lacking:
            untestable[h.id] = lacking[0]
        elif h.families and not families[h.id]:
            untestable[h.id] = f"suite {suite} ({simulator_of(suite).name}) supports none of its families ({', '.join(h.families)})"
    families[PROFILE] = tuple(n for _, names in AXES for n in supported_families(suite, names)[:1])
    return families, untestable


def language_swap(suite: str, families: dict[str, tuple[str, ...]], severities: dict[str, int]) -> int | None:
    """``SWAP_LEVEL`` when the profile runs the language family at another level and the suite's simulator has
    tasks that share a scene (its scene query answers ``other_tasks``; ALOHA's and robosuite's do not, and the swap
    would only store ``not_realised``), else None."""
    if "language" not in families.get(PROFILE, ()) or severities.get("language", DEFAULT_SEVERITY) == SWAP_LEVEL:
        return None
    return SWAP_LEVEL if shares_scenes(suite) else None


def shares_scenes(suite: str) -> bool:
    """Whether the suite's simulator has tasks that share a scene (its scene query answers ``other_tasks``)."""
    return simulator_of(suite).env_class.scene_class.other_tasks is not SceneQuery.other_tasks


def boundary_severities(map_runs: list[Path]) -> dict[str, dict]:
    """family -> {"severity", "threshold", "source"} from failure-boundary maps (``stress map``) of families mapped
    by severity, the direct setting's 50 % threshold rounded to a level (1-5)."""
    out = {}
    for run in map_runs:
        store = RunStore.open(run)
        path = store.path / "map.json"
        if not path.is_file():
            raise UserError(f"--map {str(run)!r} has no map.json; give a folder written by `stress map`")
        for curve in json.loads(path.read_text()).get("curves", []):
            value = curve.get("threshold_value")
            if curve.get("axis") == "severity" and value is not None and curve.get("mode") == "direct":
                out[curve["family"]] = {"severity": int(min(5, max(1, round(value)))), "threshold": float(value), "source": store.path.name}
    return out


# --- the design -----------------------------------------------------------------------------------------------
def units_of(suite: str, tasks: list[int]) -> list[tuple[int, int]]:
    """(task, init) in the order they are handed out: init 0 of every task, then init 1, ..."""
    sim = simulator_of(suite)
    counts = {}
    for t in tasks:
        check_task(suite, t)
        counts[t] = sim.n_init_states(suite, t)
    return [(t, i) for i in range(max(counts.values())) for t in tasks if i < counts[t]]


def blocks_for(context: Context, testable: list[str]) -> dict[str, Callable]:
    wanted = [*testable, PROFILE, *([LANGUAGE] if context.language_swap is not None else [])]
    return {b: BLOCKS[b] for b in wanted if b in testable or b == PROFILE and context.families[PROFILE] or b == LANGUAGE}


def smallest_budget(context: Context, blocks: dict[str, Callable], units: list) -> tuple[int, str]:
    """(episodes, block) of the cheapest block on ``MIN_UNITS`` scenarios (the language block only adds to the
    profile: it is not a card on its own)."""
    costs = {name: len({s.key for i, u in enumerate(units[:MIN_UNITS]) for s in make(context, i, u)}) for name, make in blocks.items() if name != LANGUAGE}
    name = min(costs, key=costs.get)
    return costs[name], name


def design(context: Context, blocks: dict[str, Callable], units: list, budget: int) -> tuple[list[ScenarioSpec], dict[str, list[tuple[int, int]]]]:
    """(specs, block -> its units): units handed to the blocks round-robin while the distinct episodes fit ``budget``."""
    chosen: dict[str, ScenarioSpec] = {}
    allocation: dict[str, list] = {name: [] for name in blocks}
    for i, unit in enumerate(units):
        added = False
        for name, make in blocks.items():
            new = {s.key: s for s in make(context, i, unit) if s.key not in chosen}
            if len(chosen) + len(new) <= budget:
                chosen.update(new)
                allocation[name].append(unit)
                added = True
        if not added:
            break
    specs = list(chosen.values())
    for spec in specs:
        check_spec(spec)
    return specs, allocation


def block_specs(context: Context, name: str, units: list, all_units: list) -> list[ScenarioSpec]:
    """The specs of block ``name`` on ``units`` (each at its index in ``all_units``, which decides its family)."""
    index = {u: i for i, u in enumerate(all_units)}
    return [s for u in units for s in BLOCKS[name](context, index[u], u)]


def context_to_dict(c: Context) -> dict:
    return {"suite": c.suite, "policy": c.policy, "seed": c.seed, "max_steps": c.max_steps, "image_size": c.image_size, "candidates": c.candidates,
            "aggregation": c.aggregation, "options": [list(o) for o in c.options], "severities": dict(c.severities),
            "replan": list(c.replan) if c.replan else None, "families": {k: list(v) for k, v in c.families.items()}, "language_swap": c.language_swap}


def context_from_dict(d: dict) -> Context:
    """The context a card folder's manifest recorded (JSON lists back to tuples)."""
    return Context(suite=d["suite"], policy=d["policy"], seed=d["seed"], max_steps=d["max_steps"], image_size=d["image_size"], candidates=d["candidates"],
                   aggregation=d["aggregation"], options=tuple(tuple(o) for o in d["options"]), severities=dict(d["severities"]),
                   replan=tuple(d["replan"]) if d["replan"] else None, families={k: tuple(v) for k, v in d["families"].items()},
                   language_swap=d.get("language_swap"))
