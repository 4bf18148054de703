"""Physics-preserving families must not change physics: the privileged expert ignores pixels, so under
every pixels-layer, lighting, texture, camera or visual-only-body perturbation, at every severity, it must
execute exactly the clean episode's actions and reach the same outcome. A test over the registry."""

import numpy as np
import pytest

from perturbations.base import PerturbationSpec, registry
from scenarios.spec import ScenarioSpec
from stress.runner import EnvCache, PolicyCache, run_episode

PRESERVING = [name for name, cls in registry().items() if cls.keeps_physics()]
INITS = (0, 7)  # a couple of shipped init states; `stress run --policy expert --perturb NAME --episodes 50` sweeps all


@pytest.fixture(scope="module")
def caches():
    envs = EnvCache(size=2)
    yield envs, PolicyCache()
    envs.close()


@pytest.fixture(scope="module")
def clean_episodes(caches):
    return {i: run_episode(ScenarioSpec(suite="libero_spatial", task_id=0, init_index=i), *caches) for i in INITS}


@pytest.mark.parametrize("name", PRESERVING)
def test_expert_outcome_unchanged_at_every_severity(name, caches, clean_episodes):
    for severity in range(1, 6):
        for init in INITS:
            spec = ScenarioSpec(suite="libero_spatial", task_id=0, init_index=init, perturbations=(PerturbationSpec(name, severity, seed=init),))
            result = run_episode(spec, *caches)
            clean = clean_episodes[init]
            assert result.error is None, (severity, init, result.error)
            assert result.success == clean.success, (severity, init)
            assert np.array_equal(result.actions, clean.actions), (severity, init)
