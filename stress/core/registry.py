"""One registry for every kind of thing a user names on the command line: perturbation families, policies,
simulators, properties, samplers, shrinkers, runner backends, protocols, studies.

A registry maps a name to an object. Built-ins are registered in the code (``register(name, obj)``, or
``@register(name)`` as a decorator, or a lazy ``"module:attr"`` string, so listing names never imports a
heavy backend); third-party packages add theirs through Python entry points in the registry's group
(``[project.entry-points."stress.families"] wobble = "my_package.wobble:Wobble"``), read on first use and
loaded only when their name is asked for. A plug-in name that clashes with a built-in (or another plug-in)
is an error naming both. Stdlib only: this module is part of the vocabulary every layer may import.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from stress.core.errors import UserError, choice_error

T = TypeVar("T")


def _load(target: str) -> Any:
    """The object a ``"module:attr"`` string names."""
    module, _, attr = target.partition(":")
    obj = import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Names -> objects of one ``kind`` (the word in error messages: "unknown policy 'x'; valid: ...").

    ``group``: the entry-point group third-party packages declare theirs in. ``builtins``: called once, on
    first use, to register built-ins that register themselves on import (the perturbation families: one
    module each, found by module name). ``sort``: list names alphabetically (else in registration order,
    built-ins before plug-ins).
    """

    def __init__(self, kind: str, group: str, builtins: Callable[[], None] | None = None, sort: bool = False):
        self.kind, self.group, self.sort = kind, group, sort
        self._builtins = builtins
        self._entries: dict[str, Any] = {}  # name -> object, "module:attr" string or EntryPoint (not loaded yet)
        self._origins: dict[str, str] = {}  # name -> where it came from, for clash messages
        self._loaded = False

    # --- registering ------------------------------------------------------------------------------------
    def register(self, name: str, obj: T | str | None = None):
        """Register ``obj`` (or a ``"module:attr"`` string, imported on first ``get``) under ``name``; without
        ``obj``, a decorator registering what it decorates."""
        if obj is None:
            def decorate(target):
                self.register(name, target)
                return target

            return decorate
        origin = f"built-in {obj}" if isinstance(obj, str) else f"built-in {getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
        self._add(name, obj, origin)
        return obj

    def unregister(self, name: str) -> None:
        """Drop a registered name (tests that register a throwaway entry)."""
        self._entries.pop(name)
        self._origins.pop(name)

    def _add(self, name: str, obj: Any, origin: str) -> None:
        if name in self._entries:
            raise UserError(f"{self.kind} {name!r} is declared twice: {self._origins[name]} and {origin}")
        self._entries[name] = obj
        self._origins[name] = origin

    def _load_all(self) -> None:
        """Built-ins that register on import, then the plug-ins' entry points (names only; objects load on ``get``)."""
        if self._loaded:
            return
        self._loaded = True  # first, so a built-in module asking for names while it loads does not recurse
        if self._builtins is not None:
            self._builtins()
        for point in entry_points(group=self.group):
            dist = point.dist.name if point.dist is not None else "?"
            self._add(point.name, point, f"plug-in {point.value} (package {dist}, entry point group {self.group})")

    # --- looking up ----------------------------------------------------------------------------------------
    def names(self) -> tuple[str, ...]:
        self._load_all()
        return tuple(sorted(self._entries)) if self.sort else tuple(self._entries)

    def get(self, name: str) -> T:
        """The object of ``name``; an unknown name -> UserError listing the valid ones (exit 2 at the CLI)."""
        self._load_all()
        if name not in self._entries:
            raise choice_error(self.kind, name, self.names())
        obj = self._entries[name]
        if isinstance(obj, EntryPoint):
            try:
                obj = obj.load()
            except Exception as exc:
                raise UserError(f"{self.kind} {name!r} ({self._origins[name]}) failed to load: {type(exc).__name__}: {exc}") from exc
            self._entries[name] = obj
        elif isinstance(obj, str):
            obj = self._entries[name] = _load(obj)
        return obj

    def items(self) -> list[tuple[str, T]]:
        """Every (name, object), in the order of ``names()`` (loads them all)."""
        return [(name, self.get(name)) for name in self.names()]

    def values(self) -> list[T]:
        return [obj for _, obj in self.items()]

    def __contains__(self, name: object) -> bool:
        self._load_all()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.group!r})"
