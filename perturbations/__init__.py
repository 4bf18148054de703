"""Perturbation families, one module each; importing this package registers them all.

Adding a family = one module here plus its import below; ``stress list perturbations`` and the
contract tests (tests/test_perturbation_contract.py) pick it up from the registry.
"""

from perturbations import occlusion  # noqa: F401
from perturbations.base import (  # noqa: F401
    CAMERAS,
    Layer,
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
