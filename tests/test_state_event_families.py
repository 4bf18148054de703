"""State and event families on real scenes: object_pose, robot_init, mid_chunk_push.

Golden checks: a shifted object ends where its parameters put it after settling; severities move it
further outside the shipped init-state range; invalid scenes are refused (and recorded in a run);
re-sampling is deterministic; robot offsets survive the settle steps; a mid-chunk push fires at the
requested step and the expert still runs the episode through.
"""

import numpy as np
import pytest

from perturbations.base import parameters_for, validate
from stress.core.errors import InvalidScene
from stress.core.spec import PerturbationSpec
from stress.core.spec import ScenarioSpec
from stress.envs.libero import NOOP_ACTION, init_states
from stress.core.errors import UserError
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.runners.episode import run_episode

BOWL = "akita_black_bowl_1"  # libero_spatial task 0's target; the plate is 12 cm away along +x
SOUP = "alphabet_soup_1"  # libero_object task 0's target


@pytest.fixture(scope="module")
def caches():
    envs = EnvCache()
    yield envs, PolicyCache()
    envs.close()


def object_env(caches):
    return caches[0].get(ScenarioSpec(suite="libero_object", task_id=0, init_index=0))


def pose_spec(severity=1, seed=0, **params):
    return PerturbationSpec("object_pose", severity, seed=seed, params=params or None)


def settled_xy(env, name, *specs):
    env.reset(0, specs)
    return env.object_position(name)[:2]


def rotation(env, name):
    return env.raw.sim.data._data.xmat[env.raw.obj_body_id[name]].reshape(3, 3).copy()


# --- object_pose ---------------------------------------------------------------------------------------
def test_shifted_object_ends_where_the_parameters_say(spatial_env, caches):
    for env, name, shift in ((spatial_env, BOWL, (0.0, -0.08, 0.0)), (object_env(caches), SOUP, (0.05, 0.05, 30.0))):
        clean = settled_xy(env, name)
        clean_rot = rotation(env, name)
        shifted = settled_xy(env, name, pose_spec(dx=shift[0], dy=shift[1], dyaw=shift[2]))
        assert np.allclose(shifted - clean, shift[:2], atol=0.005)
        rel = rotation(env, name) @ clean_rot.T
        assert np.degrees(np.arctan2(rel[1, 0], rel[0, 0])) == pytest.approx(shift[2], abs=2.0)
        record = env.perturbations[0].record()
        assert record["params"]["object"] == name and record["realisation"]["attempts"] == 1
        assert np.allclose(record["realisation"]["achieved"][name]["displacement_m"], shifted - clean, atol=1e-4)


def test_sampled_shift_is_resolved_into_concrete_offsets(spatial_env):
    spatial_env.reset(0, (pose_spec(3, seed=1),))
    params = spatial_env.perturbations[0].params
    assert {"direction_deg", "outside_m", "dx", "dy", "dyaw"} <= set(params)
    # replaying the recorded concrete offsets as explicit parameters gives the same scene
    first = spatial_env.object_position(BOWL)
    spatial_env.reset(0, (pose_spec(dx=params["dx"], dy=params["dy"], dyaw=params["dyaw"]),))
    assert np.allclose(spatial_env.object_position(BOWL), first, atol=1e-6)


def test_severity_moves_the_target_further_outside_the_shipped_range(spatial_env):
    shipped = init_states("libero_spatial", 0)[:, 10:12]  # bowl_1's free joint qpos starts at 9: [time, qpos...]
    lo, hi = shipped.min(axis=0), shipped.max(axis=0)
    outside = []
    for level in range(1, 6):
        spatial_env.reset(0, (pose_spec(level, seed=0),))
        xy = spatial_env.object_position(BOWL)[:2]
        outside.append(float(np.linalg.norm(np.maximum(0, np.maximum(lo - xy, xy - hi)))))
        assert spatial_env.perturbations[0].realisation["outside_m"] == pytest.approx(outside[-1], abs=1e-4)
    assert outside == sorted(outside) and len(set(outside)) == 5
    assert 0.003 < outside[0] < 0.02 and 0.075 < outside[-1] < 0.105


def test_swap_exchanges_the_positions_of_two_objects(caches):
    env = object_env(caches)
    env.reset(0)
    before = {n: env.object_position(n)[:2] for n in (SOUP, "milk_1")}
    env.reset(0, (pose_spec(mode="swap", swap_with="milk_1"),))
    assert np.allclose(env.object_position(SOUP)[:2], before["milk_1"], atol=0.01)
    assert np.allclose(env.object_position("milk_1")[:2], before[SOUP], atol=0.01)


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"dx": 0.1}, "does not rest on its support|interpenetrates|already solved"),  # into the plate
        ({"dy": 0.45}, r"does not rest on its support: settled -\d"),  # off the table's edge (y = 0.6)
    ],
)
def test_invalid_explicit_shift_is_refused(spatial_env, params, reason):
    with pytest.raises(InvalidScene, match=reason) as exc:
        spatial_env.reset(0, (pose_spec(**params),))
    assert "samples" not in str(exc.value)  # explicit parameters are never re-sampled


def test_invalid_scene_is_recorded_in_a_run(caches):
    far = ScenarioSpec(suite="libero_object", task_id=0, init_index=0, perturbations=(pose_spec(dy=-0.45),), max_steps=20)
    result = run_episode(far, *caches)
    assert result.error.startswith("invalid_scene: target out of reach")
    assert not result.success


def test_resampling_is_deterministic(spatial_env):
    spec = pose_spec(1, seed=2)  # its first samples push the bowl into the plate next to it
    runs = []
    for _ in range(2):
        spatial_env.reset(0, (spec,))
        p = spatial_env.perturbations[0]
        runs.append((p.params, p.realisation["attempts"], spatial_env.raw.sim.data.qpos.copy()))
    (params, attempts, qpos), (params2, attempts2, qpos2) = runs
    assert attempts > 1 and (params, attempts) == (params2, attempts2) and np.array_equal(qpos, qpos2)
    sampled = parameters_for(spec, attempts - 1)  # the kept sample is the generator's attempts-th draw
    assert {k: params[k] for k in sampled} == {**sampled, "object": BOWL}


def test_object_pose_rejects_bad_parameters(spatial_env):
    with pytest.raises(UserError, match="dx 0.9 out of range; valid: -0.5..0.5 m"):
        validate(pose_spec(dx=0.9))
    with pytest.raises(UserError, match="mode 'flip' unknown; valid: shift, swap"):
        validate(pose_spec(mode="flip"))
    with pytest.raises(UserError, match="not a movable object of this scene; valid: target, "):
        spatial_env.reset(0, (pose_spec(object="teapot", dx=0.02),))


# --- robot_init ----------------------------------------------------------------------------------------
def test_robot_init_offsets_are_present_after_settling(spatial_env):
    robot = spatial_env.raw.robots[0]
    spatial_env.reset(0)
    clean_q = spatial_env.raw.sim.data.qpos[robot._ref_joint_pos_indexes].copy()
    clean_eef = spatial_env.proprio()[2:5]
    offsets = [0.2, -0.15, 0.15, 0.1, -0.25, 0.2, 0.3]
    spatial_env.reset(0, (PerturbationSpec("robot_init", 3, params={"offsets": offsets}),))
    present = spatial_env.raw.sim.data.qpos[robot._ref_joint_pos_indexes] - clean_q
    assert np.allclose(present, offsets, atol=0.04)
    realisation = spatial_env.perturbations[0].realisation
    assert np.allclose(realisation["present_rad"], present, atol=1e-4)
    assert realisation["eef_distance_m"] == pytest.approx(np.linalg.norm(spatial_env.proprio()[2:5] - clean_eef), abs=1e-3)
    assert realisation["eef_distance_m"] > 0.05
    assert np.abs(realisation["gripper_qpos_change"]).max() < 1e-3


def test_robot_init_severity_and_collision(spatial_env):
    sizes = []
    for level in (1, 5):
        spatial_env.reset(0, (PerturbationSpec("robot_init", level, seed=4),))
        sizes.append(np.abs(spatial_env.perturbations[0].params["offsets"]))
    assert sizes[0].max() <= 0.05 and sizes[1].min() >= 0.3
    with pytest.raises(InvalidScene, match="the offset arm touches table"):  # shoulder tilted into the table
        spatial_env.reset(0, (PerturbationSpec("robot_init", 1, params={"offsets": [0, 1.0, 0, 0, 0, 0, 0]}),))


# --- mid_chunk_push ------------------------------------------------------------------------------------
def free_joint_velocity(env, name):
    return env.raw.sim.data.get_joint_qvel(f"{name}_joint0")[:3]


@pytest.mark.parametrize("action", ["push", "move"])
def test_push_fires_at_the_requested_chunk_step(spatial_env, action):
    strength = {"speed_mps": 0.6} if action == "push" else {"displacement_m": 0.03}
    params = {"trigger": "chunk_step", "chunk": 1, "step": 5, "action": action, "direction_deg": 270.0, **strength}
    spatial_env.reset(0, (PerturbationSpec("mid_chunk_push", 2, params=params),))
    record = spatial_env.perturbations[0].realisation
    start = spatial_env.object_position(BOWL)
    fired_at = None
    for chunk in range(3):
        spatial_env.begin_chunk()
        for index in range(16):
            before = spatial_env.object_position(BOWL)
            spatial_env.step(NOOP_ACTION)
            if (chunk, index) == (1, 5):
                fired_at = spatial_env.step_count
                if action == "push":
                    assert np.allclose(free_joint_velocity(spatial_env, BOWL)[:2], [0.0, -0.6], atol=1e-9)
                else:  # teleported by 3 cm along -y (the settled bowl does not drift in one step)
                    assert np.allclose(spatial_env.object_position(BOWL) - before, [0.0, -0.03, 0.0], atol=1e-4)
            assert record["fired"] == (fired_at is not None)
    assert record["fired_at_step"] == fired_at == 16 + 6 and (record["chunk"], record["chunk_step"]) == (1, 5)
    assert record["measured_after_steps"] == 5 and record["distance_m"] > 0.01
    assert np.allclose(record["position_before"], start, atol=1e-5)  # the settled bowl had not moved before


def test_push_step_beyond_liberos_chunk_is_refused(spatial_env):
    params = {"trigger": "chunk_step", "chunk": 1, "step": 20, "action": "move", "displacement_m": 0.02}
    with pytest.raises(UserError, match=r"mid_chunk_push step 20 never fires on libero \(chunks of 16 actions\); valid: 0-15"):
        spatial_env.reset(0, (PerturbationSpec("mid_chunk_push", 2, params=params),))


def test_expert_runs_through_a_pushed_episode(caches):
    params = {"trigger": "gripper_distance", "distance_m": 0.08, "action": "move", "displacement_m": 0.04, "direction_deg": 90.0}
    push = PerturbationSpec("mid_chunk_push", 3, params=params)
    result = run_episode(ScenarioSpec(suite="libero_object", task_id=0, init_index=0, perturbations=(push,)), *caches)
    assert result.error is None
    realisation = result.perturbations[0]["realisation"]
    assert realisation["fired"] and realisation["gripper_distance_m"] <= 0.08
    assert realisation["distance_m"] == pytest.approx(0.04, abs=0.01)
    assert result.steps > realisation["fired_at_step"] + 5


def test_trigger_never_reached_is_recorded_not_an_error(caches):
    params = {"trigger": "chunk_step", "chunk": 50, "step": 0, "action": "push", "speed_mps": 0.9, "direction_deg": 0.0}
    late = PerturbationSpec("mid_chunk_push", 3, params=params)
    result = run_episode(ScenarioSpec(suite="libero_object", task_id=0, init_index=0, perturbations=(late,), max_steps=40), *caches)
    assert result.error is None
    realisation = result.perturbations[0]["realisation"]
    assert realisation == {"fired": False, "status": "not_reached", "chunks_started": 3}
