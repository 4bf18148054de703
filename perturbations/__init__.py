"""Perturbation families, one module each, registered in ``perturbations.base.FAMILIES``.

Adding a family is one module here whose class carries ``@register``: the registry imports every module of
this package on first use, so ``stress list perturbations`` and the contract tests
(tests/test_perturbation_contract.py) pick it up without further edits. A third-party package adds its
families through the ``stress.families`` entry points (docs/perturbations.md).
"""

from perturbations.base import (  # noqa: F401
    CAMERAS,
    FAMILIES,
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
    register,
    registry,
    validate,
)
