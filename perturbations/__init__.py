"""Perturbation families, one module each, registered in ``perturbations.base.FAMILIES``.

Adding a family is one module here whose class carries ``@register``: the registry imports every module of
this package on first use, so ``stress list perturbations`` and the contract tests
(tests/test_perturbation_contract.py) pick it up without further edits. A third-party package adds its
families through the ``stress.families`` entry points (docs/plugins.md). What a family is made of lives in
``perturbations.base`` (the family, its registry) and ``perturbations.space`` (its parameter space); the specs
it is asked with are vocabulary (``stress.core.spec``).
"""
