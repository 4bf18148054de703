"""Failure signatures (stress.envs.signatures) from simulator state, on a real LIBERO scene."""

import numpy as np

from stress.policies.expert import ExpertPolicy
from stress.envs.signatures import SignatureTracker

IDLE = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])


def _run(env, tracker, actions):
    for action in actions:
        env.step(action)
        tracker.step(action)


def test_signatures_name_how_an_episode_failed(spatial_env):
    env = spatial_env
    env.reset(0)
    tracker = SignatureTracker(env)
    _run(env, tracker, [IDLE] * 10)
    assert tracker.signature(False) == "never_grasped" and tracker.signature(True) == "success"
    # the expert lifts the bowl, then the gripper opens far from the plate: released in the wrong place
    env.reset(0)
    tracker, expert = SignatureTracker(env), ExpertPolicy()
    expert.reset(env.instruction, 0)
    while expert._phase != "lift" or not tracker.holding:
        _run(env, tracker, expert.act(env.observe(render=False)).actions)
        assert env.step_count < 300
    assert tracker.ever_grasped
    _run(env, tracker, [np.array([0.0, 0.0, 0.5, 0.0, 0.0, 0.0, -1.0])] * 12)
    assert tracker.signature(False) == "wrong_place"
