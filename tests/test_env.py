"""The LIBERO adapter on a real scene: settle, render-on-demand, orientation, snapshots, projection."""

import numpy as np
import pytest

from stress.envs.libero import SETTLE_STEPS, SUITE_MAX_STEPS, init_states, suite_tasks
from stress.core.errors import UserError


def test_suites_and_init_states():
    assert len(suite_tasks("libero_spatial")) == 10
    assert init_states("libero_object", 3).shape[0] == 50
    assert SUITE_MAX_STEPS == {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}


def test_reset_sets_the_shipped_state_then_settles(spatial_env):
    env = spatial_env
    env.reset(3)
    assert env.step_count == 0
    assert env.raw.timestep == SETTLE_STEPS  # the no-op settle steps ran after set_init_state
    # shipped states hold objects slightly above the table; settling lets them drop and come to rest
    env._control.set_init_state(init_states("libero_spatial", 0)[3])
    shipped = env.object_position(env.target_object)
    env.reset(3)
    settled = env.object_position(env.target_object)
    assert np.linalg.norm(settled[:2] - shipped[:2]) < 0.01
    assert settled[2] < shipped[2]
    before = settled.copy()
    env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    assert np.linalg.norm(env.object_position(env.target_object) - before) < 1e-3  # at rest
    with pytest.raises(UserError, match="valid: 0-49"):
        env.reset(50)


def test_images_render_only_on_demand(spatial_env, monkeypatch):
    env = spatial_env
    env.reset(0)
    calls = []
    original = env.raw.sim.render
    monkeypatch.setattr(env.raw.sim, "render", lambda *a, **k: calls.append(k.get("camera_name")) or original(*a, **k))
    obs = env.observe(render=False)
    assert obs.images == {} and obs.proprio.shape == (9,)
    for _ in range(16):
        env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    assert calls == []  # stepping never renders
    obs = env.observe()
    assert sorted(calls) == ["agentview", "robot0_eye_in_hand"]
    assert obs.images["agentview"].shape == (128, 128, 3) and obs.images["agentview"].dtype == np.uint8


def test_images_are_vertically_flipped_from_the_raw_render(spatial_env):
    env = spatial_env
    env.reset(0)
    env.raw.sim.forward()  # the adapter renders up-to-date poses
    raw = env.raw.sim.render(128, 128, camera_name="agentview")
    assert np.array_equal(env.observe().images["agentview"], raw[::-1])


def test_snapshot_restore_gives_identical_next_observations(spatial_env):
    env = spatial_env
    env.reset(1)
    rng = np.random.default_rng(0)
    for action in rng.uniform(-1, 1, (5, 7)):
        env.step(action)
    at_snapshot = env.proprio()
    snap = env.snapshot()
    chunk = rng.uniform(-1, 1, (16, 7))
    for action in chunk:
        env.step(action)
    first = env.observe()
    qpos = env.raw.sim.data.qpos.copy()
    env.restore(snap)
    assert np.array_equal(env.proprio(), at_snapshot)  # robosuite's cached observables are restored too, not stale
    for action in chunk:
        env.step(action)
    second = env.observe()
    assert np.array_equal(qpos, env.raw.sim.data.qpos)
    assert np.array_equal(first.proprio, second.proprio)
    for camera in first.images:
        assert np.array_equal(first.images[camera], second.images[camera])


def test_target_projection_lands_on_the_target_object(spatial_env):
    """The projected target centre is a pixel of the target object in a segmentation render."""
    env = spatial_env
    env.reset(0)
    sim = env.raw.sim
    row, col = env.project(env.object_position(env.target_object), "agentview")
    seg = env.segmentation("agentview")  # geom ids, upright like the images
    geom_id = seg[int(round(row)), int(round(col))]
    assert geom_id >= 0
    body = sim.model.geom_bodyid[geom_id]
    root = sim.model.body_rootid[body]
    target_root = sim.model.body_rootid[env.raw.obj_body_id[env.target_object]]
    assert root == target_root


def test_episode_does_not_depend_on_the_episode_before(spatial_env):
    """Same init state -> bit-identical start, whatever the previous episode did (gripper closed, arm moved)."""
    env = spatial_env
    env.reset(2)
    first = env.snapshot().physics
    for _ in range(20):
        env.step(np.array([0.5, -0.5, 0.2, 0.1, 0, 0, 1.0]))  # move and close the gripper
    env.reset(2)
    assert np.array_equal(first, env.snapshot().physics)


def test_same_init_state_renders_the_same_scene(spatial_env):
    """LIBERO re-samples fixture placements at reset: they must depend on the init index only."""
    env = spatial_env
    env.reset(4)
    first = {camera: env.render(camera) for camera in ("agentview", "wrist")}
    env.reset(7)
    env.reset(4)
    for camera, image in first.items():
        assert np.array_equal(image, env.render(camera)), camera


def test_two_envs_in_one_process_render_their_own_scene(spatial_env):
    from stress.envs.libero import LiberoEnv

    spatial_env.reset(0)
    before = spatial_env.render("wrist")
    other = LiberoEnv("libero_object", 0)
    other.reset(0)
    other_image = other.render("agentview")
    assert not np.array_equal(spatial_env.render("agentview"), other_image)
    assert np.array_equal(spatial_env.render("wrist"), before)
    other.close()
    assert np.array_equal(spatial_env.render("wrist"), before)


def test_restore_then_render_equals_the_render_at_snapshot_time(spatial_env):
    env = spatial_env
    env.reset(0)
    for action in np.random.default_rng(3).uniform(-1, 1, (7, 7)):
        env.step(action)
    snap = env.snapshot()
    images = {camera: env.render(camera) for camera in ("agentview", "wrist")}
    for action in np.random.default_rng(4).uniform(-1, 1, (5, 7)):
        env.step(action)
    env.restore(snap)
    for camera, image in images.items():
        assert np.array_equal(env.render(camera), image), camera
