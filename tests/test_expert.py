"""The privileged expert on real scenes: solves known init states, deterministic, blind to pixels."""

import numpy as np
import pytest

from stress.core.spec import PerturbationSpec
from stress.core.spec import ScenarioSpec
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.runners.episode import run_episode


@pytest.fixture(scope="module")
def caches():
    envs = EnvCache()
    yield envs, PolicyCache()
    envs.close()


@pytest.mark.parametrize("suite, task, init", [("libero_spatial", 0, 0), ("libero_object", 0, 0)])
def test_expert_solves_a_known_init_state(caches, suite, task, init):
    result = run_episode(ScenarioSpec(suite=suite, task_id=task, init_index=init), *caches)
    assert result.error is None
    assert result.success
    assert 0 < result.steps < {"libero_spatial": 220, "libero_object": 280}[suite]


def test_expert_is_deterministic_and_ignores_pixels(caches):
    clean = ScenarioSpec(suite="libero_object", task_id=0, init_index=1)
    first = run_episode(clean, *caches)
    again = run_episode(clean, *caches)
    occluded = run_episode(ScenarioSpec(suite="libero_object", task_id=0, init_index=1, perturbations=(PerturbationSpec("occlusion", 5, seed=3),)), *caches)
    assert np.array_equal(first.actions, again.actions)
    assert occluded.error is None
    assert occluded.perturbations[0]["realisation"]["changed_fraction"]["agentview"] > 0.2
    assert np.array_equal(first.actions, occluded.actions) and first.success == occluded.success


def test_action_noise_uses_its_own_generator(caches):
    from stress.policies.expert import ExpertPolicy

    envs, _ = caches
    spec = ScenarioSpec(suite="libero_spatial", task_id=0, init_index=0)
    env = envs.get(spec)
    chunks = []
    for seed in (1, 1, 2):
        env.reset(0)
        policy = ExpertPolicy(action_noise=0.1)
        np.random.seed(123)  # the global RNG must not matter
        policy.reset(env.instruction, seed)
        np.random.seed(seed * 7)
        chunks.append(policy.act(env.observe(render=False)).actions)
    assert np.array_equal(chunks[0], chunks[1])
    assert not np.array_equal(chunks[0], chunks[2])


def test_an_expert_taking_over_a_held_object_keeps_holding_it(caches):
    """DAgger labels: an expert that did not grasp the object itself (a fresh one, as when it labels another
    policy's rollout) must carry on from the lift, not re-approach with the gripper open."""
    from stress.policies.expert import ExpertPolicy

    envs, _ = caches
    env = envs.get(ScenarioSpec(suite="libero_object", task_id=0, init_index=0))
    env.reset(0)
    driver = ExpertPolicy()
    driver.reset(env.instruction, 0)
    for _ in range(12):
        decision = driver.act(env.observe(render=False))
        if decision.info["phase"] == "transport":
            break
        for action in decision.actions:
            env.step(action)
    assert decision.info["phase"] == "transport"  # the object is in the hand, off the floor
    fresh = ExpertPolicy()
    fresh.reset(env.instruction, 0)
    label = fresh.act(env.observe(render=False))
    assert label.info["phase"] in ("lift", "transport")  # the phase at the chunk's end: it may carry on to transport
    assert (label.actions[:, 6] > 0).all()  # keeps the gripper closed
