"""Distractor objects added to the task through a copy of its BDDL file.

Each distractor is a LIBERO object (``libero.libero.envs.objects``) declared in ``(:objects ...)`` and
put ``On`` a small new region of the task's workspace (``(:regions ...)`` / ``(:init ...)``), at a free
spot: at least ``CLEARANCE_M`` from every object region of the shipped task (``FIXTURE_CLEARANCE_M``
from fixtures such as the cabinet) and from the segment between the
target object and its goal, so the task stays solvable, and ``SPACING_M`` from each other: the free
cell of a 2 cm grid nearest to a seeded cell of that grid. The grid covers the area the task's objects
span, widened by 8 cm (16 cm, 24 cm when that has no free cell: ``MARGINS_M``), which keeps the
distractors on the table, in reach and in agentview's view. The shipped init
states still set every original joint exactly (the env maps them by joint name); the distractors keep
LIBERO's own placement in their region (seeded per init index).

How alike a distractor is to the target object:
    other    a category of another kind than the target (e.g. a ketchup bottle next to a bowl)
    similar  another category of the target's kind (bowl / mug / box / bottle / book), e.g. a white
             bowl for a black bowl; the target's own category when its kind has no other
    same     a copy of the target's own category (a second, identical target candidate)
When the task's target is not an object (e.g. a drawer to open), every distractor is drawn from all
categories.

Severity (number of distractors and their similarity to the target):
    1: 1 other; 2: 2 other; 3: 2 other + 1 similar; 4: 1 other + 1 similar + 1 same;
    5: 1 other + 1 similar + 2 same.

Realisation (``check``, after settling): each added object's name, category, planned and settled
position (m, world) and its visible pixels in agentview. ``InvalidScene`` when a distractor
interpenetrates another body by more than ``PENETRATION_M`` or left its spot / the table top.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from perturbations.base import Perturbation, register
from stress.core.errors import InvalidScene, NotRealised
from stress.core.spec import Layer
from perturbations.space import Choice, Free, Group, ListOf, ParamSpace, Real, Vector
from stress.core.errors import UserError

SIMILARITY_BY_SEVERITY = {
    1: ("other",),
    2: ("other", "other"),
    3: ("other", "other", "similar"),
    4: ("other", "similar", "same"),
    5: ("other", "similar", "same", "same"),
}
SIMILARITIES = ("other", "similar", "same")
# movable LIBERO objects, grouped by kind (what "similar" means)
KINDS = {
    "bowl": ("akita_black_bowl", "white_bowl"),
    "mug": ("porcelain_mug", "red_coffee_mug", "white_yellow_mug"),
    "box": ("butter", "chocolate_pudding", "cookies", "cream_cheese"),
    "bottle": ("alphabet_soup", "bbq_sauce", "ketchup", "milk", "orange_juice", "salad_dressing", "tomato_sauce"),
    "book": ("black_book", "yellow_book"),
}
CATEGORIES = tuple(sorted(c for kind in KINDS.values() for c in kind))
REGION_MARK = "stress_distractor"  # region names of added objects: stress_distractor_<k>_region
CLEARANCE_M = 0.12  # distractor spot to any object region / the target-goal segment
SPACING_M = 0.14  # between distractors
FIXTURE_CLEARANCE_M = 0.30  # to fixture regions (cabinet, stove: larger footprints)
GRID_M = 0.02
MARGINS_M = (0.08, 0.16, 0.24)  # the grid spans the task objects' region centres widened by one of these
REGION_HALF_M = 0.01  # half side of the added placement region
PENETRATION_M = 0.005  # deeper contact = interpenetration
MAX_DRIFT_M = 0.08  # settled farther than this from the planned spot (xy) = slid / fell off


def kind_of(category: str) -> tuple[str, ...]:
    return next((kind for kind in KINDS.values() if category in kind), (category,))


def category_for(similarity: str, pick: float, target_category: str | None) -> str:
    """The distractor category: ``pick`` (0-1) indexes the pool of the given similarity (any category
    when the task's target is not an object)."""
    if target_category is None:
        return CATEGORIES[min(int(pick * len(CATEGORIES)), len(CATEGORIES) - 1)]
    own_kind = kind_of(target_category)
    if similarity == "same":
        return target_category
    if similarity == "similar":
        pool = tuple(c for c in own_kind if c != target_category) or (target_category,)
    else:
        pool = tuple(c for c in CATEGORIES if c not in own_kind)
    return pool[min(int(pick * len(pool)), len(pool) - 1)]


def category_check(valid: tuple[str, ...]):
    """A ``Free`` category parameter's check: one of ``valid`` LIBERO object categories (one line naming them)."""
    def check(family: str, value) -> None:
        if value not in valid:
            raise UserError(f"{family} category {value!r} unknown; valid: {', '.join(valid)}")
    return check


@register
class Distractors(Perturbation):
    name = "distractors"
    layer = Layer.SCENE
    needs = frozenset({"bddl_scene"})  # objects are added to the task's BDDL
    summary = "LIBERO objects added to the table through a BDDL copy, away from the target and the goal"
    severity_meaning = (
        "number of distractors and similarity to the target: 1: 1 other; 2: 2 other; 3: 2 other + 1 similar; "
        "4: 1 other + 1 similar + 1 same category; 5: 1 other + 1 similar + 2 same category"
    )
    space = ParamSpace(
        ListOf("objects", Group("object", (
            Choice("similarity", SIMILARITIES, "other: a category of another kind than the target; similar: another category of its kind; same: its own category", searchable=False),
            Real("pick", 0.0, 1.0, "", "which category of the similarity's pool", default=0.0),
            Real("spot", 0.0, 1.0, "", "which cell of the grid of free spots (the nearest free one is used)", default=0.0),
            Free("category", "a LIBERO object category, wins over similarity and pick: " + ", ".join(CATEGORIES), check=category_check(CATEGORIES)),
            Vector("xy", 2, -1.0, 1.0, "m", "[x, y] in the workspace frame, wins over spot"),
        ), "a distractor"), 0, 8, "distractors added to the table"),
    )

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        return {"objects": [{"similarity": s, "pick": float(rng.uniform()), "spot": float(rng.uniform())} for s in SIMILARITY_BY_SEVERITY[severity]]}

    def identity_params(self) -> dict[str, Any]:
        return {"objects": []}

    def is_identity(self, params: dict[str, Any]) -> bool:
        return not params.get("objects")

    # --- scene ------------------------------------------------------------------------------------------
    def edit_bddl(self, bddl: str, params: dict[str, Any]) -> str:
        if self.is_identity(params):
            return bddl
        task = _Task(bddl)
        occupied = task.occupied()
        insert = {"objects": [], "regions": [], "init": []}
        for k, entry in enumerate(params["objects"], start=1):
            category = entry.get("category") or category_for(entry.get("similarity", "other"), entry.get("pick", 0.0), task.target_category)
            xy = entry.get("xy") or task.free_spot(occupied, entry.get("spot", 0.0))
            if xy is None:
                raise InvalidScene(f"no free spot on the {task.workspace} for distractor {k}")
            occupied.append(((xy[0], xy[1], xy[0], xy[1]), SPACING_M))
            name = task.new_name(category)
            region = f"{REGION_MARK}_{k}_region"
            x, y = (round(float(v), 4) for v in xy)
            insert["objects"].append((name, category))
            insert["regions"].append(
                f"      ({region}\n          (:target {task.workspace})\n          (:ranges (\n"
                f"              ({x - REGION_HALF_M:.4f} {y - REGION_HALF_M:.4f} {x + REGION_HALF_M:.4f} {y + REGION_HALF_M:.4f})\n"
                f"            )\n          )\n      )\n"
            )
            insert["init"].append(f"    (On {name} {task.workspace}_{region})\n")
        return task.with_insertions(insert)

    # --- realisation --------------------------------------------------------------------------------------
    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        if self.is_identity(params):
            return {}
        raw = env.raw
        model, data = raw.sim.model._model, raw.sim.data._data
        regions = raw.parsed_problem["regions"]
        added = [(s[1], s[2]) for s in raw.parsed_problem["initial_state"] if s[0] == "on" and REGION_MARK in s[2]]
        if len(added) != len(params["objects"]):
            raise NotRealised(f"{len(added)} of {len(params['objects'])} distractors in the scene")
        category = {name: cat for cat, names in raw.parsed_problem["objects"].items() for name in names}
        offset = np.asarray(raw.workspace_offset, dtype=float)
        seg = env.segmentation("agentview")
        seen_roots = model.body_rootid[model.geom_bodyid[seg[seg >= 0]]]
        record = []
        for name, region in added:
            if name not in raw.obj_body_id:
                raise NotRealised(f"distractor {name} has no body in the scene")
            root = model.body_rootid[raw.obj_body_id[name]]
            x1, y1, x2, y2 = regions[region]["ranges"][0]
            planned = offset[:2] + ((x1 + x2) / 2, (y1 + y2) / 2)
            pos = env.object_position(name)
            drift = float(np.linalg.norm(pos[:2] - planned))
            if drift > MAX_DRIFT_M or pos[2] < offset[2] - 0.05:
                raise InvalidScene(f"distractor {name} left its spot or the table (moved {drift * 100:.1f} cm, z {pos[2]:.3f} m)")
            check_no_interpenetration(model, data, root, f"distractor {name}")
            record.append({
                "name": name,
                "category": category[name],
                "planned_xy": [float(v) for v in planned],
                "position": [float(v) for v in pos],
                "agentview_pixels": int(np.sum(seen_roots == root)),
            })
        return {"added": record}


def check_no_interpenetration(model, data, root: int, what: str) -> None:
    """InvalidScene when the body tree ``root`` is in contact deeper than ``PENETRATION_M`` with another body."""
    for contact in data.contact[: data.ncon]:
        roots = model.body_rootid[model.geom_bodyid[[contact.geom1, contact.geom2]]]
        if root in roots and contact.dist < -PENETRATION_M:
            other = roots[1] if roots[0] == root else roots[0]
            raise InvalidScene(f"{what} interpenetrates {model.body(other).name} by {-contact.dist * 1000:.1f} mm")


class _Task:
    """A BDDL problem as text plus its parsed s-expression (with the text span of every list)."""

    def __init__(self, text: str):
        self.text = text
        self.tree = _parse(text)
        self.blocks = {node[0].lower(): node for node in self.tree if isinstance(node, _Node) and node and isinstance(node[0], str)}
        self.objects = self._declarations(":objects")
        self.fixtures = self._declarations(":fixtures")
        self.regions = {}
        for region in self.blocks[":regions"][1:]:
            attrs = {a[0]: a[1] for a in region[1:] if isinstance(a, list) and len(a) > 1}
            ranges = attrs.get(":ranges")
            self.regions[f"{attrs[':target']}_{region[0]}"] = [float(v) for v in ranges[0]] if ranges else None
        self.workspace = next(a[1] for r in self.blocks[":regions"][1:] for a in r[1:] if a[0] == ":target" and any(b[0] == ":ranges" for b in r[1:]))
        goal = self._first_predicate(self.blocks[":goal"][1])
        self.target = goal[1]
        # the target's category; None when the task's target is not an object (e.g. a drawer to open)
        self.target_category = self.objects.get(self.target)
        self.goal = goal[2] if len(goal) > 2 else None
        self.init = [p for p in self.blocks[":init"][1:] if isinstance(p, list)]
        self.added_names: list[str] = []

    def _declarations(self, head: str) -> dict[str, str]:
        out, pending = {}, []
        items = list(self.blocks.get(head, [head]))[1:]
        for i, item in enumerate(items):
            if item == "-":
                continue
            if i > 0 and items[i - 1] == "-":
                out.update({name: item for name in pending})
                pending = []
            else:
                pending.append(item)
        return out

    @staticmethod
    def _first_predicate(node):
        while isinstance(node, list) and node and str(node[0]).lower() in ("and", "or", "not"):
            node = node[1]
        return node

    def _centre(self, thing: str | None) -> tuple[float, float] | None:
        """Workspace xy (region centre) where an object, fixture or region starts, if on the workspace."""
        if thing is None:
            return None
        if thing in self.regions and self.regions[thing]:
            x1, y1, x2, y2 = self.regions[thing]
            return (x1 + x2) / 2, (y1 + y2) / 2
        for p in self.init:  # an object: where it is put; a region of an object: where that object is
            if len(p) == 3 and (p[1] == thing or thing.startswith(f"{p[1]}_")):
                return self._centre(p[2])
        return None

    def occupied(self) -> list[tuple[tuple[float, float, float, float], float]]:
        out = []
        for p in self.init:
            if len(p) == 3 and self.regions.get(p[2]):
                out.append((tuple(self.regions[p[2]]), FIXTURE_CLEARANCE_M if p[1] in self.fixtures else CLEARANCE_M))
        return out

    def grid(self, margin: float) -> np.ndarray:
        """Candidate spots: a grid over the task objects' region centres, widened by ``margin``."""
        placed = [p for p in self.init if len(p) == 3 and self.regions.get(p[2])]
        objects = [self.regions[p[2]] for p in placed if p[1] in self.objects] or [self.regions[p[2]] for p in placed]
        centres = np.array([((r[0] + r[2]) / 2, (r[1] + r[3]) / 2) for r in objects])
        low, high = centres.min(axis=0) - margin, centres.max(axis=0) + margin
        xs, ys = (np.arange(a, b + 1e-9, GRID_M) for a, b in zip(low, high))
        return np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)

    def free_spot(self, occupied, spot: float) -> tuple[float, float] | None:
        """The free grid cell nearest to the cell ``spot`` (0-1) indexes in the grid (the narrowest grid
        that has a free cell)."""
        for margin in MARGINS_M:
            xy = self._free_spot(self.grid(margin), occupied, spot)
            if xy is not None:
                return xy
        return None

    def _free_spot(self, grid: np.ndarray, occupied, spot: float) -> tuple[float, float] | None:
        keep = np.ones(len(grid), dtype=bool)
        for (x1, y1, x2, y2), clearance in occupied:  # distance to each rectangle
            dx = np.maximum(np.maximum(x1 - grid[:, 0], grid[:, 0] - x2), 0)
            dy = np.maximum(np.maximum(y1 - grid[:, 1], grid[:, 1] - y2), 0)
            keep &= np.hypot(dx, dy) >= clearance
        a, b = self._centre(self.target), self._centre(self.goal)
        if a is not None and b is not None:  # the carrying path from target to goal stays clear
            a, b = np.asarray(a), np.asarray(b)
            t = np.clip(((grid - a) @ (b - a)) / max(float((b - a) @ (b - a)), 1e-9), 0, 1)
            keep &= np.linalg.norm(grid - (a + t[:, None] * (b - a)), axis=1) >= CLEARANCE_M
        if not keep.any():
            return None
        anchor = grid[min(int(spot * len(grid)), len(grid) - 1)]
        free = grid[keep]
        x, y = free[np.argmin(np.linalg.norm(free - anchor, axis=1))]
        return float(x), float(y)

    def new_name(self, category: str) -> str:
        taken = set(self.objects) | set(self.fixtures) | set(self.added_names)
        index = 1 + max([int(m.group(1)) for n in taken if (m := re.fullmatch(rf"{re.escape(category)}_(\d+)", n))], default=0)
        self.added_names.append(f"{category}_{index}")
        return self.added_names[-1]

    def with_insertions(self, insert: dict[str, list]) -> str:
        """The text with the new declarations, regions and init facts (edited back to front)."""
        edits = []  # (position, text)
        objects_block = self.blocks[":objects"]
        extra_lines = []
        by_category: dict[str, list[str]] = {}
        for name, category in insert["objects"]:
            by_category.setdefault(category, []).append(name)
        for category, names in by_category.items():
            declared = re.search(rf"-\s+{re.escape(category)}(?=\s|\))", self.text[objects_block.start : objects_block.end])
            if declared:  # LIBERO's parser keeps only the last line of a category: extend that line
                edits.append((objects_block.start + declared.start(), " ".join(names) + " "))
            else:
                extra_lines.append(f"    {' '.join(names)} - {category}\n")
        if extra_lines:
            edits.append((objects_block.end - 1, "".join(extra_lines) + "  "))
        edits.append((self.blocks[":regions"].end - 1, "".join(insert["regions"]) + "    "))
        edits.append((self.blocks[":init"].end - 1, "".join(insert["init"]) + "  "))
        text = self.text
        for position, chunk in sorted(edits, key=lambda e: e[0], reverse=True):
            text = text[:position] + chunk + text[position:]
        return text


class _Node(list):
    start: int
    end: int  # one past the closing parenthesis


def _parse(text: str) -> _Node:
    """The problem's s-expression: nested lists of atoms, each list knowing its span in ``text``."""
    stack = [_Node()]
    stack[0].start = 0
    for match in re.finditer(r"\(|\)|[^\s()]+", text):
        token = match.group()
        if token == "(":
            node = _Node()
            node.start = match.start()
            stack[-1].append(node)
            stack.append(node)
        elif token == ")":
            stack.pop().end = match.end()
        else:
            stack[-1].append(token)
    define = stack[0][0]
    return define
