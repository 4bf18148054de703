"""The families' parameter tables in docs/perturbations.md, rendered from their declarations (``python -m perturbations``)."""

from __future__ import annotations

import re

from perturbations.base import family as family_named, registry
from perturbations.space import NONE

COLUMNS = (("name", "parameter"), ("kind", "kind"), ("range", "range"), ("unit", "unit"), ("identity", "identity"),
           ("default", "default"), ("grid", "search grid"), ("meaning", "meaning"))


def markdown_table(family: str) -> str:
    """The family's parameter table for docs/perturbations.md, rendered from its declaration."""
    def cell(key: str, text: str) -> str:
        text = text.replace("|", "\\|") or NONE
        return f"`{text}`" if key == "name" else text

    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(key, row[key]) for key, _ in COLUMNS) + " |" for row in family_named(family).space.rows()]
    return "\n".join(lines)


def _markers(family: str) -> tuple[str, str]:
    return (f"<!-- parameters of {family}: generated from its declaration by `python -m perturbations`; do not edit -->",
            f"<!-- end of the parameters of {family} -->")


def docs_with_tables(text: str) -> str:
    """``text`` (docs/perturbations.md) with every family's generated block rewritten from the code."""
    for name in registry():
        begin, end = _markers(name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise ValueError(f"docs have no parameter block for {name!r}: add the two lines {begin!r} and {end!r} to its section")
        text = pattern.sub(lambda _: f"{begin}\n{markdown_table(name)}\n{end}", text)
    return text

