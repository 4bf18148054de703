"""Language perturbations: the instruction that reaches the policy is rewritten; the scene is untouched.

``wrap_policy`` returns an :class:`InstructedPolicy` around the episode's policy: ``reset`` and every ``act``
receive the rewritten instruction instead of the task's (the observation's ``instruction`` is replaced too),
so every policy that takes an instruction sees it: the reference model, served policies (our protocol's
``instruction``, openpi's ``prompt``) and the Cosmos Policy server (which refuses an instruction without a
cached T5 embedding at reset: the episode stores that refusal as its error).

Two kinds of level:

* **meaning-preserving** (levels 1-3): rewrites from the hand-reviewed tables of this module (no network, no
  model): verb and object synonyms (``VERBS``, ``OBJECTS``), reordering ("first A, then B"; a fronted
  location), politeness, filler and verbose frames, typos (letters swapped, dropped, doubled or replaced by a
  keyboard neighbour), and distractor clauses that name other objects of the scene ("leave the ketchup where
  it is"). The task's referenced objects stay those of the task (tests/test_language.py checks this against
  the scene's objects); a policy should keep succeeding: a **robustness** test.
* **grounding** (levels 4-5): another task's instruction from the same scene (LIBERO-PRO's task perturbation),
  or the empty instruction. The outcome *should* change: success here means the policy ignored the words.

"The same scene" is answered by the simulator (``env.scene.other_tasks()``): on LIBERO, the tasks of the same
suite whose BDDL file names the same scene (``KITCHEN_SCENE3_...`` in libero_10 / libero_90; libero_spatial,
libero_object and libero_goal name none: each suite is one scene), and, among those, only tasks whose
objects are all in this task's scene (libero_object's tasks share the floor but not all groceries). ALOHA's
and robosuite's tasks are each a scene of their own: the swap is ``not_realised`` there.

Severity levels (``text_seed`` is drawn from the seed and picks synonyms, frames, typos, distractors, the task):

======  ==========================================================  ==============
level   rewrite                                                     kind
======  ==========================================================  ==============
1       verb and object synonyms                                    meaning kept
2       paraphrase (synonyms, reorder, polite/filler and verbose    meaning kept
        frames), typos on 3 % of letters
3       paraphrase, typos on 6 % of letters, 2 distractor clauses   meaning kept
4       another task's instruction of the same scene                grounding
5       the empty instruction                                       grounding
======  ==========================================================  ==============

Realisation (stored with the episode): the original and the rewritten instruction, the kind
(``robustness`` / ``grounding``), the character edit distance (Levenshtein, and divided by the longer
length), the word distance (1 - Jaccard of the word sets) and what was applied. A rewrite that leaves the
instruction unchanged (level 1 on an instruction no table entry covers) or a swap with no other task in the
scene raises ``NotRealised``. No text encoder ships with the suite, so no embedding distance is recorded.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np

from perturbations.base import Perturbation, register
from perturbations.space import Choice, ParamSpace, Real
from stress.core.errors import NotRealised, UserError
from stress.core.spec import Layer

# --- the tables (reviewed by hand: each alternative means the same thing in the scenes of the suite) ---------
# verb phrases -> alternatives
VERBS: dict[str, tuple[str, ...]] = {
    "pick up": ("grab", "take", "grasp"),
    "place": ("put", "set"),
    "put": ("place", "set"),
    "open": ("pull open",),
    "close": ("shut",),
    "turn on": ("switch on",),
    "push": ("slide",),
    "lift": ("raise",),
    "insert": ("fit",),
    "stack": ("set",),
    "transfer": ("hand",),
}
# object phrases -> alternatives naming the same object (an alternative names one object only)
OBJECTS: dict[str, tuple[str, ...]] = {
    "bowl": ("dish",),
    "plate": ("platter",),
    "cabinet": ("cupboard",),
    "stove": ("cooktop",),
    "cookie box": ("box of cookies",),
    "basket": ("bin",),
    "wine bottle": ("bottle of wine",),
    "mug": ("cup",),
    "moka pot": ("espresso pot",),
    "moka pots": ("espresso pots",),
    "microwave": ("microwave oven",),
    "caddy": ("desk organiser",),
    "cube": ("block",),
    "peg": ("pin",),
    "milk": ("carton of milk",),
    "orange juice": ("carton of orange juice",),
}
# object nouns an instruction may name (the presence check of a swapped task); parts of a fixture
# (a drawer, a compartment) and places (the table) are no objects of their own
OBJECT_NOUNS = (
    "bowl", "plate", "ramekin", "cabinet", "stove", "cookie box", "basket", "wine bottle", "rack", "mug", "moka pot",
    "microwave", "caddy", "book", "alphabet soup", "cream cheese", "salad dressing", "bbq sauce", "ketchup",
    "tomato sauce", "butter", "milk", "chocolate pudding", "orange juice", "cube", "peg", "socket",
)
# how a scene's object names spell an object noun when not with its own words (LIBERO's cookie box is ``cookies_1``)
NAME_ALIASES: dict[str, tuple[str, ...]] = {"cookie box": ("cookies",), "cabinet": ("shelf",)}  # libero_90: the cabinet shelf
# politeness, filler and verbose frames around the (reordered) instruction
FRAMES = ("please {}", "{}, please", "could you {}?", "would you kindly {}?", "okay, {}", "alright, {} now", "so, um, {}",
          "here is what i need you to do: {}", "the goal of this episode: {}, and nothing else",
          "your task in this scene is to {}. take your time and be careful", "here is what i need you to do: please {}",
          "okay, so, your task is to {}. thanks")
DISTRACTOR = ("do not touch the {}", "leave the {} where it is", "ignore the {}")
KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")  # neighbours of a letter on its row

REWRITES = ("none", "synonyms", "paraphrase")
REPLACES = ("none", "other_task", "empty")
LEVELS = {  # severity -> parameters (the text seed is drawn)
    1: {"rewrite": "synonyms"},
    2: {"rewrite": "paraphrase", "typo_rate": 0.03},
    3: {"rewrite": "paraphrase", "typo_rate": 0.06, "distractor_clauses": 2},
    4: {"replace": "other_task"},
    5: {"replace": "empty"},
}
SEED_MOD = 2**31
SPACE = ParamSpace(
    Choice("rewrite", REWRITES, "meaning-preserving rewrite: synonyms (verbs, objects) or a paraphrase (synonyms, reorder, frames)"),
    Real("typo_rate", 0.0, 0.3, "per letter", "share of letters swapped, dropped, doubled or replaced by a keyboard neighbour", identity=0.0, step=0.01),
    Real("distractor_clauses", 0, 3, "clauses", "clauses naming other objects of the scene ('leave the ketchup where it is')",
         identity=0, step=1, integer=True),
    # not searched: a grounding swap is expected to fail, a search would only rediscover that
    Choice("replace", REPLACES, "grounding test: another task's instruction of the same scene, or the empty instruction", searchable=False),
    Real("text_seed", 0, math.inf, "", "seed of the rewrite's choices (synonyms, frames, typos, objects, task)", default=0, integer=True),
)
DEFAULTS = SPACE.defaults()
REWRITE_KEYS = ("rewrite", "typo_rate", "distractor_clauses")


# --- the rewrite itself: a pure function of the instruction, the scene's facts and the parameters ------------------
def _phrases(table: dict[str, tuple[str, ...]]) -> re.Pattern:
    return re.compile(r"\b(" + "|".join(re.escape(p) for p in sorted(table, key=len, reverse=True)) + r")\b", re.IGNORECASE)


SYNONYM_TABLE = {**VERBS, **OBJECTS}
_SYNONYMS = _phrases(SYNONYM_TABLE)
_CANONICAL = {alt: canonical for canonical, alts in OBJECTS.items() for alt in alts}
_TO_CANONICAL = _phrases({alt: () for alt in _CANONICAL})
_NOUNS = _phrases({noun: () for noun in OBJECT_NOUNS})
_VERB_WORDS = frozenset(w for phrase in (*VERBS, *(a for alts in VERBS.values() for a in alts)) for w in phrase.split()[:1])


def canonical(text: str) -> str:
    """The text with every object alternative of ``OBJECTS`` put back to its canonical phrase."""
    return _TO_CANONICAL.sub(lambda m: _CANONICAL[m.group(1).lower()], text.lower())


def mentioned_objects(text: str) -> list[str]:
    """The object nouns (``OBJECT_NOUNS``) the text names, synonyms read as their canonical object, in order."""
    return [m.group(1).lower() for m in _NOUNS.finditer(canonical(text))]


def display_name(obj: str) -> str:
    """A scene object's name as words: ``akita_black_bowl_1`` -> ``akita black bowl``."""
    return " ".join(w for w in obj.lower().split("_") if w.isalpha())


def in_scene(text: str, scene_objects) -> bool:
    """Whether every object the text names is an object of the scene (by its name's words)."""
    names = [display_name(o) for o in scene_objects]
    return all(any(re.search(rf"\b{re.escape(word)}\b", name) for name in names for word in (noun, *NAME_ALIASES.get(noun, ())))
               for noun in mentioned_objects(text))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (characters)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def word_distance(a: str, b: str) -> float:
    """1 - Jaccard similarity of the two word sets (0: same words; 1: none shared)."""
    wa, wb = set(re.findall(r"[a-z0-9]+", a.lower())), set(re.findall(r"[a-z0-9]+", b.lower()))
    return 0.0 if not (wa | wb) else round(1.0 - len(wa & wb) / len(wa | wb), 4)


def _synonyms(text: str, rng: np.random.Generator) -> tuple[str, int]:
    count = 0

    def swap(match: re.Match) -> str:
        nonlocal count
        count += 1
        alternatives = SYNONYM_TABLE[match.group(1).lower()]
        return alternatives[int(rng.integers(len(alternatives)))]

    return _SYNONYMS.sub(swap, text), count


def _reorder(text: str) -> tuple[str, str | None]:
    """Two clauses "A and B" (B starting with a verb) -> "first A, then B"; one clause "V the X on the Y" -> "on the Y, V the X"."""
    words = text.split(" and ")
    for i in range(1, len(words)):
        rest = " and ".join(words[i:])
        if rest.split(" ", 1)[0] in _VERB_WORDS:
            return f"first {' and '.join(words[:i])}, then {rest}", "first-then"
    match = re.match(r"^(.+?) ((?:on top of|on|in|into|inside|to|onto) the .+)$", text)
    if match and match.group(1).split(" ", 1)[0] in _VERB_WORDS:
        return f"{match.group(2)}, {match.group(1)}", "fronted location"
    return text, None


def _typos(text: str, rate: float, rng: np.random.Generator) -> tuple[str, int]:
    out, count, i = [], 0, 0
    while i < len(text):
        c = text[i]
        if c.isalpha() and rng.random() < rate:
            count += 1
            op = int(rng.integers(4))
            if op == 0 and i + 1 < len(text) and text[i + 1].isalpha():  # swap with the next letter
                out += [text[i + 1], c]
                i += 2
                continue
            if op == 1:  # dropped
                i += 1
                continue
            if op == 2:  # doubled
                out += [c, c]
            else:  # a keyboard neighbour
                row = next((r for r in KEYBOARD if c.lower() in r), None)
                if row is None:
                    out.append(c)
                else:
                    k = row.index(c.lower())
                    neighbours = [row[j] for j in (k - 1, k + 1) if 0 <= j < len(row)]
                    out.append(neighbours[int(rng.integers(len(neighbours)))])
        else:
            out.append(c)
        i += 1
    return "".join(out), count


def rewrite(original: str, params: dict[str, Any], other_tasks=(), scene_objects=(), movable=()) -> dict[str, Any]:
    """The rewritten instruction and its record, for the task's ``original`` instruction.

    ``other_tasks``: (task id, instruction) of the other tasks of the same scene; ``scene_objects``: every object
    of the scene (a swapped task must name only these); ``movable``: the objects a distractor clause may name.
    Raises ``NotRealised`` when the parameters leave the instruction unchanged or no other task fits the swap.
    """
    p = {**DEFAULTS, **params}
    rng = np.random.default_rng(int(p["text_seed"]))
    record: dict[str, Any] = {"original": original}
    if p["replace"] == "empty":
        text, record["kind"] = "", "grounding"
    elif p["replace"] == "other_task":
        candidates = sorted((tid, text) for tid, text in other_tasks if text.lower() != original.lower() and in_scene(text, scene_objects))
        if not candidates:
            raise NotRealised(f"language: no other task of this scene names only its objects (of {len(other_tasks)} other task(s) in the "
                              "scene): the swap needs one")
        tid, text = candidates[int(rng.integers(len(candidates)))]
        record.update(kind="grounding", other_task_id=int(tid), candidates=len(candidates))
    else:
        record["kind"] = "robustness"
        text = original
        if p["rewrite"] in ("synonyms", "paraphrase"):
            text, record["synonyms"] = _synonyms(text, rng)
        if p["rewrite"] == "paraphrase":
            text = text.lower().rstrip(".")
            text, record["reorder"] = _reorder(text)
            # a fronted location reads well only at the start of a sentence ("on the stove, put the bowl, please")
            frames = FRAMES if record["reorder"] != "fronted location" else tuple(f for f in FRAMES if f.startswith("{}") or ": {}" in f)
            text = frames[int(rng.integers(len(frames)))].format(text)
        record["main"] = text  # the rewrite before distractors and typos: it names the task's objects only
        named = set(mentioned_objects(original))
        pool = [o for o in sorted(movable) if not any(re.search(rf"\b{re.escape(n)}\b", display_name(o)) for n in named)]
        picked = [pool[int(i)] for i in rng.permutation(len(pool))[: int(p["distractor_clauses"])]] if pool else []
        for obj in picked:
            text = f"{text.rstrip('.')}, and {DISTRACTOR[int(rng.integers(len(DISTRACTOR)))].format(display_name(obj))}"
        if p["distractor_clauses"]:
            record["distractors"] = picked
        if p["typo_rate"] > 0:
            text, record["typos"] = _typos(text, float(p["typo_rate"]), rng)
        if text == original:
            raise NotRealised(f"language: the rewrite left {original!r} unchanged (no table entry of perturbations/language.py applies"
                              f"{'' if pool or not p['distractor_clauses'] else ', and no other object of the scene for a distractor'})")
    record.update(instruction=text, grounding=record["kind"] == "grounding", edit_distance=edit_distance(original, text),
                  normalised_edit_distance=round(edit_distance(original, text) / max(1, len(original), len(text)), 4),
                  word_distance=word_distance(original, text))
    return record


class InstructedPolicy:
    """A policy told another instruction: ``reset`` and each observation carry it (the policy protocol)."""

    _own = ("policy", "instruction", "name", "modes", "uses_images")

    def __init__(self, policy, instruction: str):
        for key, value in zip(self._own, (policy, instruction, policy.name, policy.modes, policy.uses_images)):
            object.__setattr__(self, key, value)

    def __getattr__(self, name):  # the backend's knobs (num_denoising_steps, precision) read through
        return getattr(self.policy, name)

    def __setattr__(self, name, value):  # ... and set through (policy_noise wraps after this family)
        setattr(self.policy, name, value)

    def reset(self, instruction: str, seed: int, **planning) -> None:
        self.policy.reset(self.instruction, seed, **planning)

    def act(self, obs):
        return self.policy.act(dataclasses.replace(obs, instruction=self.instruction))


@register
class Language(Perturbation):
    name = "language"
    layer = Layer.POLICY
    summary = "the instruction told to the policy: synonyms, paraphrase, typos, distractor clauses; another task's or none"
    severity_meaning = (
        "1 verb/object synonyms; 2 paraphrase (reorder, polite/filler/verbose frames) + 3 % typos; 3 paraphrase + 6 % typos "
        "+ 2 distractor clauses; 4 another task's instruction of the same scene; 5 the empty instruction (4-5: grounding, "
        "success means the policy ignored the words)"
    )
    space = SPACE
    preserves_physics = True  # the privileged expert does not read the instruction

    def __init__(self):
        self._instruction: str | None = None  # set by check (it sees the env), used by wrap_policy (same instance)

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        return {**LEVELS[severity], "text_seed": int(rng.integers(0, SEED_MOD))}

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)
        if params.get("replace", "none") != "none":
            given = [k for k in REWRITE_KEYS if params.get(k, DEFAULTS[k]) != DEFAULTS[k]]
            if given:
                raise UserError(f"language replace {params['replace']!r} takes no {', '.join(given)}; valid: replace 'none' with "
                                f"{', '.join(REWRITE_KEYS)}, or replace 'other_task'/'empty' alone")

    def is_identity(self, params: dict[str, Any]) -> bool:
        return all(params.get(k, DEFAULTS[k]) == DEFAULTS[k] for k in (*REWRITE_KEYS, "replace"))

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        if self.is_identity(params):
            self._instruction = None
            return {}
        record = rewrite(env.instruction, params, env.scene.other_tasks(), list(env.object_bodies), env.scene.movable_objects())
        self._instruction = record["instruction"]
        return record

    def wrap_policy(self, policy, params: dict[str, Any]):
        if self._instruction is None:
            return policy
        return InstructedPolicy(policy, self._instruction)
