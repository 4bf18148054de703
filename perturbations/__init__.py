"""Perturbation families, one module each; importing this package registers them all.

Adding a family is one module here whose class carries ``@register``: the package imports every module it
holds, so ``stress list perturbations`` and the contract tests (tests/test_perturbation_contract.py) pick it
up without further edits.
"""

from importlib import import_module
from pkgutil import iter_modules

from perturbations.base import (  # noqa: F401
    CAMERAS,
    InvalidScene,
    Layer,
    NotRealised,
    Perturbation,
    PerturbationSpec,
    Realised,
    family,
    parameters_for,
    parse_cli,
    realise,
    registry,
    validate,
)

for _module in iter_modules(__path__):
    if _module.name not in ("base", "space", "docs") and not _module.name.startswith("_"):
        import_module(f"perturbations.{_module.name}")
