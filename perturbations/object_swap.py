"""Object semantics (LIBERO-PRO's object axis): the task's target object replaced by another instance of its
category with a different appearance, through a copy of the task's BDDL (the scene layer, as ``distractors``).

Only the target's class changes; it keeps its instance name, so the goal predicates (which name the instance)
and the success check are unchanged, and the shipped init states still set its joint (mapped by name). The
instruction still names the original ("the black bowl"): the words and the scene disagree, which is the point
of the axis (on libero_spatial the other black bowl of the scene now matches the words). The categories with
more than one instance in LIBERO's object registry, reviewed by hand (``INSTANCES``):

    bowl   akita_black_bowl, white_bowl
    mug    porcelain_mug, red_coffee_mug, white_yellow_mug
    book   black_book, yellow_book

A task whose target has no other instance (libero_object's groceries, a plate, a drawer to open) gets a
``not_realised`` row. ALOHA and robosuite are not supported (no BDDL scene): their targets (a cube, a peg, a
can) have no other instance of their category; an appearance change of the same object is ``texture``.

Severity: every level swaps the target (a category has one or two other instances, so the levels do not
grade: which instance is seeded).

Realisation (``check``, after settling): the target's instance name, its kind and new category, its
settled position and its visible pixels in agentview. ``InvalidScene`` when the new mesh, put at the original's
init pose, interpenetrates another body by more than ``PENETRATION_M`` or left the table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perturbations.base import Perturbation, register
from perturbations.distractors import _Task, category_check, check_no_interpenetration
from perturbations.space import Choice, Free, ParamSpace, Real
from stress.core.errors import InvalidScene, NotRealised
from stress.core.spec import Layer

INSTANCES = {  # category kind -> LIBERO object classes of that kind that differ in appearance only
    "bowl": ("akita_black_bowl", "white_bowl"),
    "mug": ("porcelain_mug", "red_coffee_mug", "white_yellow_mug"),
    "book": ("black_book", "yellow_book"),
}
SWAPPABLE = tuple(sorted(c for kind in INSTANCES.values() for c in kind))


def alternatives(category: str | None) -> tuple[str, ...]:
    """The other instances of ``category``'s kind (empty when it has none)."""
    kind = next((k for k in INSTANCES.values() if category in k), ())
    return tuple(c for c in kind if c != category)


@register
class ObjectSwap(Perturbation):
    name = "object_swap"
    layer = Layer.SCENE
    needs = frozenset({"bddl_scene"})  # the target's class is changed in the task's BDDL
    summary = "the target object replaced by another instance of its category (a white bowl for the black one) through a BDDL copy"
    severity_meaning = "every level: the target replaced by another instance of its category, which one seeded (the levels do not grade)"
    space = ParamSpace(
        Choice("swap", ("none", "instance"), "instance: the target's class replaced by another of its kind", searchable=False),
        Real("pick", 0.0, 1.0, "", "which other instance of the kind", default=0.0),
        Free("category", "the new class, wins over pick (of the target's kind): " + ", ".join(SWAPPABLE), check=category_check(SWAPPABLE)),
    )

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        return {"swap": "instance", "pick": float(rng.uniform())}

    def identity_params(self) -> dict[str, Any]:
        return {"swap": "none"}

    def is_identity(self, params: dict[str, Any]) -> bool:
        return params.get("swap", "none") == "none"

    def scene_key(self, params: dict[str, Any]) -> Any:
        return params  # the new class is the compiled scene

    # --- scene ------------------------------------------------------------------------------------------
    def new_category(self, target_category: str | None, params: dict[str, Any]) -> str:
        others = alternatives(target_category)
        if not others:
            raise NotRealised(f"object_swap: the target's category {target_category!r} has no other instance in LIBERO's objects; "
                              f"swappable: {', '.join(SWAPPABLE)}")
        chosen = params.get("category")
        if chosen is not None:
            if chosen not in others:
                raise NotRealised(f"object_swap: category {chosen!r} is not another instance of the target's {target_category!r}; valid: {', '.join(others)}")
            return chosen
        return others[min(int(params.get("pick", 0.0) * len(others)), len(others) - 1)]

    def edit_bddl(self, bddl: str, params: dict[str, Any]) -> str:
        if self.is_identity(params):
            return bddl
        task = _Task(bddl)
        objects = dict(task.objects)
        objects[task.target] = self.new_category(task.target_category, params)
        by_category: dict[str, list[str]] = {}
        for name, category in objects.items():  # one line per category: LIBERO's parser keeps only a category's last line
            by_category.setdefault(category, []).append(name)
        block = task.blocks[":objects"]
        text = "(:objects\n" + "".join(f"    {' '.join(names)} - {category}\n" for category, names in by_category.items()) + "  )"
        return bddl[:block.start] + text + bddl[block.end:]

    # --- realisation --------------------------------------------------------------------------------------
    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        if self.is_identity(params):
            return {}
        raw = env.raw
        model, data = raw.sim.model._model, raw.sim.data._data
        target = env.target_object
        category = {name: cat for cat, names in raw.parsed_problem["objects"].items() for name in names}
        if target not in raw.obj_body_id or category.get(target) not in SWAPPABLE:
            raise NotRealised(f"object_swap: the target {target!r} is not a swapped instance in the scene")
        root = model.body_rootid[raw.obj_body_id[target]]
        pos = env.object_position(target)
        if pos[2] < np.asarray(raw.workspace_offset, dtype=float)[2] - 0.05:
            raise InvalidScene(f"object_swap: {target} ({category[target]}) fell off the table (z {pos[2]:.3f} m)")
        check_no_interpenetration(model, data, root, f"object_swap: {target} ({category[target]})")
        seg = env.segmentation("agentview")
        seen = model.body_rootid[model.geom_bodyid[seg[seg >= 0]]]
        kind = next(k for k, members in INSTANCES.items() if category[target] in members)
        return {"target": target, "kind": kind, "category": category[target],
                "position": [float(v) for v in pos], "agentview_pixels": int(np.sum(seen == root))}
