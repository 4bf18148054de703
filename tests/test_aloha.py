"""ALOHA adapter (gym-aloha 0.1.5) and its privileged expert, on the real scenes (no rendering unless needed)."""

import numpy as np
import pytest

from stress.core.spec import PerturbationSpec
from stress.envs.aloha import ACTION_DIM, CAMERAS, CHUNK, MAX_STEPS, N_INIT_STATES, AlohaEnv, init_states
from stress.envs.base import SimulatorFault
from conftest import privileged_episode
from stress.core.errors import UserError
from stress.policies import make_policy
from stress.core.policy import Decision
from stress.policies.aloha_expert import AlohaExpertPolicy, plan_episode

SIZE = 224


@pytest.fixture(scope="module")
def envs():
    built = {task: AlohaEnv("aloha", task, image_size=SIZE) for task in ("transfer_cube", "insertion")}
    yield built
    for env in built.values():
        env.close()


def _expert_episode(env, init: int, policy=None) -> tuple[bool, int]:
    def chunk_of_14d(decision):
        assert decision.actions.shape == (CHUNK, ACTION_DIM)

    return privileged_episode(env, policy or AlohaExpertPolicy(), init, chunk_of_14d)


def test_surface(envs):
    env = envs["insertion"]
    assert env.task_id == 1 and env.max_steps == MAX_STEPS == 400 and env.image_size == SIZE
    assert env.instruction == "Insert the peg into the socket."
    assert env.config()["shadows"] is False and (env.model.light_castshadow == 0).all()
    env.reset(0)
    assert env.proprio().shape == (14,) and env.step_count == 0 and env.chunk_step == 0 and not env.success()
    assert env.model.nq == env.data.qpos.size == 16 + 14
    np.testing.assert_array_equal(env.object_pose("peg"), init_states("aloha", 1)[0][:7])
    assert env.project(env.object_position("peg"), "top") is not None


def test_same_init_index_same_pose_and_seeds_differ(envs):
    env = envs["transfer_cube"]
    env.reset(7)
    first = env.data.qpos.copy()
    env.reset(3)
    env.reset(7)
    np.testing.assert_array_equal(env.data.qpos, first)
    poses = init_states("aloha", 0)
    assert len(poses) == N_INIT_STATES and len({tuple(p) for p in poses}) == N_INIT_STATES


def test_snapshot_restore_is_bit_exact(envs):
    env = envs["transfer_cube"]
    env.reset(2)
    actions = AlohaExpertPolicy().act(env.observe(render=False)).actions  # a real, moving chunk
    for action in actions[:20]:
        env.step(action)
    snap = env.snapshot()
    for action in actions[20:]:
        env.step(action)
    qpos, qvel, image, step = env.data.qpos.copy(), env.data.qvel.copy(), env.render("top"), env.step_count
    env.restore(snap)
    assert env.step_count == 20
    for action in actions[20:]:
        env.step(action)
    assert env.step_count == step
    np.testing.assert_array_equal(env.data.qpos, qpos)
    np.testing.assert_array_equal(env.data.qvel, qvel)
    np.testing.assert_array_equal(env.render("top"), image)


def test_render_on_demand_cameras_and_size(envs):
    env = envs["insertion"]
    env.reset(0)
    assert env.observe(render=False).images == {}
    obs = env.observe(render=True, cameras=("top",))
    # a measurement reuses the observed frames only when every camera was rendered
    assert set(obs.images) == {"top"} and env.observed_images() is None
    images = env.observe(render=True).images
    assert tuple(images) == CAMERAS and env.observed_images() is images
    for image in images.values():
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 and image.std() > 5
    seg = env.segmentation("top")
    assert seg.shape == (SIZE, SIZE) and env.model.geom("red_peg").id in seg
    env.step(env.proprio().astype(np.float64))
    assert env.observed_images() is None


def test_bad_input_names_value_and_valid_ones(envs):
    with pytest.raises(UserError, match=r"'stack'.*transfer_cube.*insertion"):
        AlohaEnv("aloha", "stack")
    with pytest.raises(UserError, match=r"unknown suite 'alohaa'; valid: aloha"):
        AlohaEnv("alohaa", 0)
    with pytest.raises(UserError, match=r"init state 50 .*valid: 0-49"):
        envs["insertion"].reset(50)
    with pytest.raises(UserError, match=r"'front'; valid: top, left_wrist, right_wrist"):
        envs["insertion"].render("front")
    with pytest.raises(UserError, match=r"'agentview'"):
        envs["insertion"].observe(render=True, cameras=("agentview",))
    from stress.core.spec import ScenarioSpec
    from stress.runners.episode import check_spec

    with pytest.raises(UserError, match=r"'distractors' does not support simulator aloha.*valid there: .*lighting.*object_pose"):
        check_spec(ScenarioSpec("aloha", 1, 0, (PerturbationSpec("distractors", 2),), policy="aloha-expert", image_size=224))
    with pytest.raises(UserError, match=r"policy 'expert' does not drive aloha \(suite aloha\); valid there: reference, aloha-expert, remote"):  # reference: with an ALOHA checkpoint
        check_spec(ScenarioSpec("aloha", 1, 0, policy="expert", image_size=224))
    with pytest.raises(UserError, match=r"unknown camera 'agentview' for 'occlusion'; valid: top, left_wrist, right_wrist, both"):
        check_spec(ScenarioSpec("aloha", 1, 0, (PerturbationSpec("occlusion", 2, camera="agentview"),), policy="aloha-expert", image_size=224))
    envs["insertion"].reset(0)
    with pytest.raises(SimulatorFault):
        envs["insertion"].step(np.zeros(7))


@pytest.mark.parametrize("task,init", [("transfer_cube", 0), ("transfer_cube", 11), ("insertion", 0), ("insertion", 11)])
def test_expert_succeeds(envs, task, init):
    success, steps = _expert_episode(envs[task], init, make_policy("aloha-expert"))
    assert success, f"{task} init {init}: no success in {steps} steps"


def test_same_physics_as_gym_aloha(envs):
    """Init state i and our step are gym-aloha's own: ``gym.make(...).reset(seed=i)`` and its ``step`` give the
    bit-identical state (its step renders three 640x480 cameras, so only a few steps)."""
    import gym_aloha  # noqa: F401  (registers the envs)
    import gymnasium as gym

    env = envs["insertion"]
    env.reset(5)
    actions = AlohaExpertPolicy().act(env.observe(render=False)).actions[:3]
    stock = gym.make("gym_aloha/AlohaInsertion-v0", obs_type="pixels_agent_pos")
    stock.reset(seed=5)
    physics = stock.unwrapped._env.physics
    np.testing.assert_array_equal(physics.data.qpos, env.data.qpos)
    for action in actions:
        env.step(action)
        _, reward, *_ = stock.step(action)
        assert reward == env.reward
    np.testing.assert_array_equal(physics.data.qpos, env.data.qpos)
    np.testing.assert_array_equal(physics.data.qvel, env.data.qvel)
    physics.free()  # its GL context now, with ours current, not whenever the garbage collector runs
    stock.close()


def test_decision_takes_the_env_action_width():
    assert Decision(actions=np.zeros((CHUNK, ACTION_DIM))).actions.shape == (CHUNK, 14)
    with pytest.raises(ValueError):
        Decision(actions=np.zeros(14))


def test_failure_tracker_names_how_it_failed(envs):
    env = envs["transfer_cube"]
    env.reset(4)
    plan = plan_episode(env.task, env.initial_object_qpos, 250)
    tracker = env.failure_tracker()
    for k, action in enumerate(plan):
        action = action.copy()
        if k >= 200:  # the right hand lets go of the lifted cube
            action[13] = 1.0
        env.step(action)
        tracker.step(action)
    assert not env.success() and tracker.signature(False) == "dropped" and tracker.onset(False) > 200
    assert tracker.progress(False) == 0.5  # stage 2 of 4: lifted
    env.reset(4)
    tracker = env.failure_tracker()
    for action in plan[:1].repeat(30, axis=0):  # holding still
        env.step(action)
        tracker.step(action)
    assert tracker.signature(False) == "never_grasped" and tracker.progress(False) == 0.0 and tracker.onset(False) is None


def test_renders_beside_libero_in_one_process(spatial_env):
    """dm_control skips making its GL context current when it believes it still is; LIBERO switching to its
    own in between must not make ALOHA render (or free its context) into LIBERO's."""
    spatial_env.reset(0)
    libero_before = spatial_env.render("agentview")
    aloha = AlohaEnv("aloha", 0, image_size=64)
    aloha.reset(0)
    top = aloha.render("top")
    spatial_env.render("agentview")  # LIBERO's context is current now
    np.testing.assert_array_equal(aloha.render("top"), top)
    spatial_env.render("agentview")
    aloha.close()  # frees ALOHA's GL objects, not LIBERO's
    np.testing.assert_array_equal(spatial_env.render("agentview"), libero_before)


def test_cli_run_show_replay_on_aloha_under_lighting(tmp_path):
    """The issue's end-to-end path: a lit-differently ALOHA scene, the expert, stored, shown, replayed."""
    import json
    import subprocess
    import sys

    cli = [sys.executable, "-m", "stress.cli"]
    out = tmp_path / "results"
    run = subprocess.run([*cli, "run", "--suite", "aloha", "--tasks", "0", "--episodes", "1", "--perturb", "lighting",
                          "--severities", "5", "--policy", "aloha-expert", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    folder = next(out.iterdir())
    shown = subprocess.run([*cli, "show", str(folder)], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "aloha-expert" in shown.stdout and "lighting:5" in shown.stdout
    import pyarrow.parquet as pq

    rows = pq.read_table(folder / "episodes.parquet").to_pylist()
    assert sorted(r["perturbation"] for r in rows) == ["clean", "lighting:5"] and {r["suite"] for r in rows} == {"aloha"}
    for r in rows:
        assert r["error"] is None and r["success"], r
        assert r["max_steps"] == 400
    lit = next(r for r in rows if r["perturbation"] != "clean")
    record = json.loads(lit["perturbations"])[0]
    assert max(record["realisation"]["image_change"].values()) > 0.5  # the lights really changed the top/wrist views
    replayed = subprocess.run([*cli, "replay", str(folder), lit["episode_key"]], capture_output=True, text=True, timeout=600)
    assert replayed.returncode == 0 and "matches" in replayed.stdout, replayed.stdout + replayed.stderr[-1000:]
    bad = subprocess.run([*cli, "run", "--suite", "aloha", "--tasks", "2", "--policy", "aloha-expert", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "task 2 not in suite aloha; valid: 0-1" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([*cli, "run", "--suite", "aloha", "--perturb", "occluder", "--policy", "aloha-expert", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "'occluder' does not support simulator aloha" in bad.stderr and "Traceback" not in bad.stderr
