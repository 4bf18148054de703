"""One declaration of a family's parameter space, from which validation, docs and search all derive.

A family declares ``space = ParamSpace(...)`` once, from these kinds (each a frozen dataclass; ``doc`` is the
meaning shown by ``stress list perturbations`` and in docs/perturbations.md):

    Real     a number in [low, high] (``integer`` for whole numbers); ``identity`` is the value meaning
             "no change" (None when there is none, e.g. an aspect ratio), ``default`` what the family uses
             when the key is absent (the identity unless given); ``step`` puts it on a search grid
    Choice   one of ``options``, ordered mild -> severe, ``options[0]`` the default
    Vector   ``length`` numbers, each in [low, high]; searched as axes ``name[0]``, ``name[1]``, ...
    Group    a nested object (camera's ``agentview``); its fields' axes are named ``agentview.yaw``
    ListOf   a list of items (shadows, distractor objects): validated, never searched
    Free     a value only the family can check (object names): ``check(family, value)`` raises UserError

Search grid: magnitudes live on an integer grid, index ``i`` meaning ``origin + i * step`` where the origin
is the identity (or the default when there is none). Integers shrink exactly to a threshold; bounded floats
shrink to "simple" values instead. ``step`` is signed so that positive
indices go mild -> severe (``jpeg_quality``: identity 100, step -1); a two-sided parameter (brightness
-1..1, identity 0) has negative indices for the other direction. Index 0 is the identity, so the all-zero
point of a family whose axes all have one is that family's identity.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

from stress.core.errors import UserError

NONE = "—"  # table cell of a field that does not apply


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    """A value as users write it: numbers without trailing zeros, None as JSON's null."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _span(low: float, high: float, low_open: bool = False, high_open: bool = False, unit: str = "") -> str:
    """A range as the one-line errors write it: 0-1, -0.5..0.5 m (a dash would read as a minus), >= 0."""
    unit = f" {unit}" if unit else ""
    if math.isinf(high):
        return f"{'>' if low_open else '>='} {_fmt(low)}{unit}"
    text = f"{_fmt(low)}{'..' if low < 0 else '-'}{_fmt(high)}{unit}"
    if low_open and high_open:
        return f"{text} (exclusive)"
    if low_open or high_open:
        return f"{text} (exclusive of {_fmt(low if low_open else high)})"
    return text


def _inside(x: float, low: float, high: float, low_open: bool, high_open: bool) -> bool:
    return (low < x if low_open else low <= x) and (x < high if high_open else x <= high)


def _grid_value(origin: float, step: float, index: int, integer: bool) -> float | int:
    x = origin + index * step
    return int(round(x)) if integer else round(float(x), 10)  # 0.01 * 3 prints as 0.03


def _grid_range(name: str, origin: float, step: float, low: float, high: float, low_open: bool, high_open: bool, integer: bool) -> tuple[int, int]:
    """Every index whose value lies inside the bounds: (lowest, highest), lowest <= 0 <= highest."""
    if not (math.isfinite(low) and math.isfinite(high)) or step == 0:
        raise TypeError(f"parameter {name}: a search grid needs finite bounds and a non-zero step")
    if not _inside(origin, low, high, low_open, high_open):
        raise TypeError(f"parameter {name}: grid origin {origin} outside its bounds")
    ends = sorted(((low - origin) / step, (high - origin) / step))
    first, last = math.ceil(ends[0] - 1e-9), math.floor(ends[1] + 1e-9)
    ok = lambda i: _inside(_grid_value(origin, step, i, integer), low, high, low_open, high_open)  # noqa: E731
    while not ok(first):
        first += 1
    while not ok(last):
        last -= 1
    return first, last


@dataclass(frozen=True)
class Axis:
    """One searchable coordinate: an integer index in [low, high]; 0 is the identity (or default) value."""

    name: str  # "area_fraction", "agentview.yaw", "offsets[3]"
    low: int
    high: int
    unit: str
    has_identity: bool = True  # index 0 means "no change" (False: it is only the default, e.g. an aspect ratio)
    origin: Any = field(default=None, repr=False)
    step: float | None = field(default=None, repr=False)
    options: tuple | None = field(default=None, repr=False)
    integer: bool = field(default=False, repr=False)

    def value(self, index: int):
        """The parameter value at grid index ``index`` (any integer type: samplers hand out numpy ints)."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not self.low <= index <= self.high:
            raise UserError(f"axis {self.name} index {index!r} out of range; valid: an integer {self.low}..{self.high}")
        index = int(index)
        if self.options is not None:
            return self.options[index]
        return _grid_value(self.origin, self.step, index, self.integer)


_ABSENT = object()  # build(): this parameter has no searched part


def _row(name: str, kind: str, doc: str, range_: str = NONE, unit: str = "", identity: str = NONE, default: str = NONE, grid: str = NONE) -> dict[str, str]:
    return {"name": name, "kind": kind, "range": range_, "unit": unit, "identity": identity, "default": default, "grid": grid, "meaning": doc}


@dataclass(frozen=True)
class Real:
    """A number in [low, high]; see the module docstring for identity, default and step."""

    name: str
    low: float
    high: float
    unit: str
    doc: str
    identity: float | None = None
    default: float | None = None
    step: float | None = None
    integer: bool = False
    low_open: bool = False  # the bound itself is not valid (a field of view of 0 deg)
    high_open: bool = False
    search_high: float | None = None  # the grid stops here though larger values are valid (a push in chunk 900 never fires)
    search_low: float | None = None  # likewise below (an object moved 50 cm is valid input but off the table: every such scene is invalid)

    def __post_init__(self):
        if self.default is None and self.identity is not None:
            object.__setattr__(self, "default", self.identity)
        if self.step is not None:
            if self.default is None:
                raise TypeError(f"parameter {self.name}: a search grid starts at the identity or default; it has neither")
            low = self.low if self.search_low is None else self.search_low
            high = self.high if self.search_high is None else self.search_high
            object.__setattr__(self, "_range", _grid_range(self.name, self.origin, self.step, low, high, self.low_open, self.high_open, self.integer))

    @property
    def origin(self):
        return self.identity if self.identity is not None else self.default

    def valid(self) -> str:
        return ("an integer " if self.integer else "") + _span(self.low, self.high, self.low_open, self.high_open, self.unit)

    def accepts(self, value: Any) -> bool:
        return _number(value) and _inside(value, self.low, self.high, self.low_open, self.high_open) and (not self.integer or isinstance(value, int))

    def verify(self, family: str, path: str, value: Any) -> None:
        if not self.accepts(value):
            raise UserError(f"{family} {path} {value!r} {'out of range' if _number(value) else 'invalid'}; valid: {self.valid()}")

    def axes(self, path: str) -> list[Axis]:
        if self.step is None:
            return []
        return [Axis(path, *self._range, self.unit, self.identity is not None, origin=self.origin, step=self.step, integer=self.integer)]

    def build(self, path: str, values: dict[str, Any]):
        return values[path] if self.step is not None else _ABSENT

    def grid(self) -> str:
        return NONE if self.step is None else f"step {_fmt(self.step)}, index {self._range[0]}..{self._range[1]}"

    def rows(self, path: str) -> list[dict[str, str]]:
        span = _span(self.low, self.high, self.low_open, self.high_open)
        return [_row(path, "integer" if self.integer else "real", self.doc, span, self.unit,
                     NONE if self.identity is None else _fmt(self.identity), NONE if self.default is None else _fmt(self.default), self.grid())]


@dataclass(frozen=True)
class Choice:
    """One of ``options``, ordered mild -> severe; ``options[0]`` is the identity/default and grid index i
    is ``options[i]``. ``default`` differs from ``options[0]`` only for a choice that is not searched."""

    name: str
    options: tuple
    doc: str
    default: Any = None
    searchable: bool = True

    def __post_init__(self):
        if self.default is None:
            object.__setattr__(self, "default", self.options[0])
        elif self.searchable and self.default != self.options[0]:
            raise TypeError(f"parameter {self.name}: a searched choice's default is its first (mildest) option")

    def valid(self) -> str:
        return ", ".join(_fmt(o) for o in self.options)

    def accepts(self, value: Any) -> bool:
        # type-strict: True is not 1, 1.0 is not the light index 1
        return any(value == o and type(value) is type(o) for o in self.options)

    def verify(self, family: str, path: str, value: Any) -> None:
        if not self.accepts(value):
            raise UserError(f"{family} {path} {value!r} unknown; valid: {self.valid()}")

    def axes(self, path: str) -> list[Axis]:
        # the first option is the default, "no change" only when it is null (a light switched off: none)
        return [Axis(path, 0, len(self.options) - 1, "", self.options[0] is None, options=tuple(self.options))] if self.searchable else []

    def build(self, path: str, values: dict[str, Any]):
        return values[path] if self.searchable else _ABSENT

    def rows(self, path: str) -> list[dict[str, str]]:
        grid = f"options, index 0..{len(self.options) - 1}" if self.searchable else NONE
        return [_row(path, "choice", self.doc, self.valid(), "", NONE, _fmt(self.default), grid)]


@dataclass(frozen=True)
class Vector:
    """``length`` numbers, each in [low, high]; identity, default and step apply to each element."""

    name: str
    length: int
    low: float
    high: float
    unit: str
    doc: str
    identity: float | None = None
    default: float | None = None
    step: float | None = None
    integer: bool = False
    # (simulator, length) where the robot has another number of them (ALOHA's two 6-joint arms); the search
    # grid covers ``length`` elements
    other_lengths: tuple[tuple[str, int], ...] = ()

    def __post_init__(self):
        # one element's declaration does the range and grid arithmetic for all of them
        object.__setattr__(self, "_item", Real(self.name, self.low, self.high, self.unit, self.doc, self.identity, self.default, self.step, self.integer))
        if self.default is None and self.identity is not None:
            object.__setattr__(self, "default", self.identity)

    def _count(self) -> str:
        others = ", ".join(f"{sim}: {n}" for sim, n in self.other_lengths)
        return f"{self.length}" + (f" ({others})" if others else "")

    def valid(self) -> str:
        return f"{self._count()} numbers, each {self._item.valid()}"

    def verify(self, family: str, path: str, value: Any) -> None:
        lengths = {self.length, *(n for _, n in self.other_lengths)}
        if not (isinstance(value, (list, tuple)) and len(value) in lengths and all(self._item.accepts(v) for v in value)):
            raise UserError(f"{family} {path} {value!r} invalid; valid: {self.valid()}")

    def axes(self, path: str) -> list[Axis]:
        return [axis for k in range(self.length) for axis in self._item.axes(f"{path}[{k}]")]

    def build(self, path: str, values: dict[str, Any]):
        return [values[f"{path}[{k}]"] for k in range(self.length)] if self.step is not None else _ABSENT

    def rows(self, path: str) -> list[dict[str, str]]:
        (row,) = self._item.rows(path)
        each = lambda text: text if text == NONE else f"{text} each"  # noqa: E731
        return [{**row, "kind": f"{self._count()} {row['kind']}s", "range": each(row["range"]), "identity": each(row["identity"]),
                 "default": each(row["default"]), "grid": each(row["grid"])}]


def _check_fields(family: str, path: str | None, fields: tuple, value: dict) -> None:
    names = {f.name: f for f in fields}
    unknown = set(value) - set(names)
    if unknown:
        where = f"{family} {path}" if path else family
        raise UserError(f"unknown {where} parameter(s) {sorted(unknown)}; valid: {', '.join(names)}")
    for key, item in value.items():
        names[key].verify(family, f"{path}.{key}" if path else key, item)


def _build_fields(fields: tuple, prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for f in fields:
        built = f.build(prefix + f.name, values)
        if built is not _ABSENT:
            out[f.name] = built
    return out


@dataclass(frozen=True)
class Group:
    """A nested object; every field is optional (an absent field takes its default in the family)."""

    name: str
    fields: tuple
    doc: str

    def verify(self, family: str, path: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise UserError(f"{family} {path} must be an object, got {type(value).__name__}; valid keys: {', '.join(f.name for f in self.fields)}")
        _check_fields(family, path, self.fields, value)

    def axes(self, path: str) -> list[Axis]:
        return [axis for f in self.fields for axis in f.axes(f"{path}.{f.name}")]

    def build(self, path: str, values: dict[str, Any]):
        return _build_fields(self.fields, path + ".", values) or _ABSENT

    def field_rows(self, path: str) -> list[dict[str, str]]:
        return [row for f in self.fields for row in f.rows(f"{path}.{f.name}")]

    def rows(self, path: str) -> list[dict[str, str]]:
        return [_row(path, "object", self.doc)] + self.field_rows(path)


@dataclass(frozen=True)
class ListOf:
    """A list of ``item`` (any kind), ``min_len`` to ``max_len`` long (None: no limit). Never searched."""

    name: str
    item: Any
    min_len: int
    max_len: int | None
    doc: str

    def valid(self) -> str:
        if self.max_len is None:
            return f">= {self.min_len} entries" if self.min_len else "any number of entries"
        return f"exactly {self.min_len} entries" if self.min_len == self.max_len else f"{self.min_len}-{self.max_len} entries"

    def verify(self, family: str, path: str, value: Any) -> None:
        if not (isinstance(value, list) and self.min_len <= len(value) and (self.max_len is None or len(value) <= self.max_len)):
            raise UserError(f"{family} {path} {value!r} invalid; valid: a list of {self.valid()}")
        for i, entry in enumerate(value):
            self.item.verify(family, f"{path}[{i}]", entry)

    def axes(self, path: str) -> list[Axis]:
        return []

    def build(self, path: str, values: dict[str, Any]):
        return _ABSENT

    def rows(self, path: str) -> list[dict[str, str]]:
        item = self.item.field_rows(f"{path}[]") if isinstance(self.item, Group) else self.item.rows(f"{path}[]")
        return [_row(path, "list", self.doc, self.valid())] + item


@dataclass(frozen=True)
class Free:
    """A value only the family can check (an object name of the scene at hand); never searched."""

    name: str
    doc: str
    check: Callable[[str, Any], None] | None = None  # check(family, value) raises UserError

    def verify(self, family: str, path: str, value: Any) -> None:
        if self.check is not None:
            self.check(family, value)

    def axes(self, path: str) -> list[Axis]:
        return []

    def build(self, path: str, values: dict[str, Any]):
        return _ABSENT

    def rows(self, path: str) -> list[dict[str, str]]:
        return [_row(path, "value", self.doc)]


class ParamSpace:
    """The parameters of one family: validation, search axes, and the rows of its docs table."""

    def __init__(self, *params):
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise TypeError(f"parameter declared twice in {names}")
        self.params = tuple(params)
        self._axes = tuple(axis for p in self.params for axis in p.axes(p.name))

    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def validate(self, family: str, params: dict) -> None:
        """Raise UserError (one line naming the bad key or value and the valid ones) unless ``params`` fit."""
        if not isinstance(params, dict):
            raise UserError(f"params of {family!r} must be an object, got {type(params).__name__}")
        _check_fields(family, None, self.params, params)

    def defaults(self) -> dict[str, Any]:
        """What the family uses for each absent top-level number, vector or choice (objects, lists and free
        values have none)."""
        out = {}
        for p in self.params:
            if isinstance(p, (Real, Choice)) and p.default is not None or isinstance(p, Choice):
                out[p.name] = p.default
            elif isinstance(p, Vector) and p.default is not None:
                out[p.name] = [p.default] * p.length
        return out

    def axes(self) -> tuple[Axis, ...]:
        """Every searchable axis, in declaration order."""
        return self._axes

    def params_from_axes(self, indices: dict[str, int]) -> dict:
        """Explicit parameters at the given grid indices (axes not given stay at index 0): every searched
        parameter is written out, nested ones in their objects; the rest is left to the family's defaults."""
        axes = {axis.name: axis for axis in self._axes}
        unknown = set(indices) - set(axes)
        if unknown:
            raise UserError(f"unknown axis(es) {sorted(unknown)}; valid: {', '.join(axes) or 'none'}")
        values = {name: axis.value(indices.get(name, 0)) for name, axis in axes.items()}
        return _build_fields(self.params, "", values)

    def rows(self) -> list[dict[str, str]]:
        """One row per parameter (nested ones as ``group.field``, list items as ``list[].field``): name,
        kind, range, unit, identity, default, grid (step and index range, or options) and meaning."""
        return [row for p in self.params for row in p.rows(p.name)]
