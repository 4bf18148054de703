"""robosuite 1.4's own tasks (suite ``robosuite``: Lift, PickPlaceCan, Stack) and the privileged expert on them,
on the real scenes (64 px renders unless a test needs the default)."""

import numpy as np
import pytest

from stress.core.spec import PerturbationSpec
from stress.envs import simulator_of
from stress.envs.base import SimulatorFault
from stress.envs.robosuite_tasks import INSTRUCTIONS, MAX_STEPS, N_INIT_STATES, TASKS, RobosuiteEnv
from stress.core.errors import UserError
from stress.policies import make_policy
from conftest import lit_run_show_replay, privileged_episode, run_cli

SIZE = 64


@pytest.fixture(scope="module")
def lift():
    env = RobosuiteEnv("robosuite", 0, image_size=SIZE)
    yield env
    env.close()


def _expert_episode(env, init: int) -> tuple[bool, int]:
    return privileged_episode(env, make_policy("expert"), init)


def test_registry_and_surface(lift):
    sim = simulator_of("robosuite")
    assert sim.name == "robosuite" and sim.env_class is RobosuiteEnv and sim.value_discount == 0.99
    assert sim.default_image_size == 128 and sim.cameras == ("agentview", "wrist") and sim.action_dim == 7
    assert sim.tasks("robosuite") == tuple(INSTRUCTIONS[t] for t in TASKS) and sim.n_init_states("robosuite", 2) == N_INIT_STATES
    assert lift.task == "Lift" and lift.max_steps == MAX_STEPS and lift.instruction == "lift the red cube"
    lift.reset(0)
    assert lift.proprio().shape == (9,) and lift.step_count == 0 and not lift.success()
    assert lift.project(lift.object_position("cube"), "agentview") is not None


def test_init_states_are_seeded_and_leave_the_callers_rng_alone(lift):
    np.random.seed(123)
    expected_draw = np.random.rand()
    np.random.seed(123)
    lift.reset(7)
    first = lift.data.qpos.copy()
    assert np.random.rand() == expected_draw  # the caller's global RNG was given back
    lift.reset(3)
    other = lift.data.qpos.copy()
    np.random.rand(5)  # whatever ran in between
    lift.reset(7)
    np.testing.assert_array_equal(lift.data.qpos, first)
    assert not np.allclose(other, first)


def test_snapshot_restore_is_bit_exact(lift):
    lift.reset(2)
    policy = make_policy("expert")
    policy.reset(lift.instruction, 2)
    actions = np.concatenate([policy.act(lift.observe(render=False)).actions for _ in range(1)])
    for action in actions[:6]:
        lift.step(action)
    snap = lift.snapshot()
    for action in actions[6:]:
        lift.step(action)
    state = lift.data.qpos.copy(), lift.data.qvel.copy(), lift.render("wrist"), lift.proprio(), lift.step_count
    lift.restore(snap)
    assert lift.step_count == 6
    for action in actions[6:]:
        lift.step(action)
    np.testing.assert_array_equal(lift.data.qpos, state[0])
    np.testing.assert_array_equal(lift.data.qvel, state[1])
    np.testing.assert_array_equal(lift.render("wrist"), state[2])
    np.testing.assert_array_equal(lift.proprio(), state[3])
    assert lift.step_count == state[4]


def test_render_on_demand_cameras_and_segmentation(lift):
    lift.reset(0)
    assert lift.observe(render=False).images == {}
    images = lift.observe(render=True).images
    assert tuple(images) == ("agentview", "wrist") and lift.observed_images() is images
    for image in images.values():
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 and image.std() > 5
    assert not np.array_equal(images["agentview"], images["wrist"])
    cube_geoms = {g for g in range(lift.model.ngeom) if lift.model.geom_bodyid[g] == lift.object_bodies["cube"]}
    assert cube_geoms & set(np.unique(lift.segmentation("agentview")).tolist())
    lift.step(np.zeros(7))
    assert lift.observed_images() is None


def test_bad_input_names_value_and_valid_ones(lift):
    with pytest.raises(UserError, match=r"unknown robosuite task 3; valid: 0 \(Lift\), 1 \(PickPlaceCan\), 2 \(Stack\)"):
        RobosuiteEnv("robosuite", 3)
    with pytest.raises(UserError, match=r"unknown suite 'robosuit'; valid: robosuite"):
        RobosuiteEnv("robosuit", 0)
    with pytest.raises(UserError, match=r"init state 50 .*valid: 0-49"):
        lift.reset(50)
    with pytest.raises(UserError, match=r"'top'; valid: agentview, wrist"):
        lift.render("top")
    from stress.core.spec import ScenarioSpec
    from stress.runners.episode import check_spec

    with pytest.raises(UserError, match=r"'object_pose' does not support simulator robosuite.*valid there: .*lighting"):
        check_spec(ScenarioSpec("robosuite", 0, 0, (PerturbationSpec("object_pose", 2),), policy="expert"))
    with pytest.raises(UserError, match=r"policy 'aloha-expert' does not drive robosuite"):
        check_spec(ScenarioSpec("robosuite", 0, 0, policy="aloha-expert"))
    with pytest.raises(UserError, match=r"task 3 not in suite robosuite; valid: 0-2"):
        check_spec(ScenarioSpec("robosuite", 3, 0, policy="expert"))
    lift.reset(0)
    with pytest.raises(SimulatorFault):
        lift.step(np.zeros(14))


@pytest.mark.parametrize("task,init", [(0, 0), (0, 11), (1, 3), (2, 5)])
def test_expert_succeeds(lift, task, init):
    env = lift if task == 0 else RobosuiteEnv("robosuite", task, image_size=SIZE)
    try:
        success, steps = _expert_episode(env, init)
    finally:
        if env is not lift:
            env.close()
    assert success, f"{TASKS[task]} init {init}: no success in {steps} steps"


def test_failure_tracker_never_grasped(lift):
    lift.reset(1)
    tracker = lift.failure_tracker()
    for _ in range(20):  # hold still, gripper open
        action = np.array([0, 0, 0, 0, 0, 0, -1.0])
        lift.step(action)
        tracker.step(action)
    assert tracker.signature(False) == "never_grasped" and tracker.progress(False) == 0.0


def test_lighting_and_occlusion_realised(lift):
    lift.reset(0, (PerturbationSpec("lighting", 5),))
    record = lift.perturbations[0].realisation
    assert max(record["image_change"].values()) > 0.5
    lift.reset(0, (PerturbationSpec("occlusion", 5),))
    clean = {camera: lift.render(camera) for camera in lift.cameras}
    seen = lift.observe(render=True).images
    assert lift.check_pixel_realisation() is None
    for camera in lift.cameras:
        assert (seen[camera] != clean[camera]).any(axis=-1).mean() > 0.1


def test_renders_beside_aloha_in_one_process(lift):
    """robosuite never makes its GL context current: after a dm_control (ALOHA) render it would draw into
    ALOHA's context unless the adapter makes its own current (and frees only its own at close)."""
    from stress.envs.aloha import AlohaEnv

    lift.reset(0)
    before = lift.render("agentview")
    aloha = AlohaEnv("aloha", 0, image_size=SIZE)
    aloha.reset(0)
    top = aloha.render("top")
    np.testing.assert_array_equal(lift.render("agentview"), before)
    np.testing.assert_array_equal(aloha.render("top"), top)
    aloha.close()
    np.testing.assert_array_equal(lift.render("agentview"), before)
    other = RobosuiteEnv("robosuite", 2, image_size=SIZE)
    other.reset(0)
    other.render("agentview")
    other.close()  # frees Stack's GL objects, not Lift's
    np.testing.assert_array_equal(lift.render("agentview"), before)


def test_cli_run_show_replay_on_robosuite_under_lighting(tmp_path):
    """The issue's end-to-end path: Lift lit differently, the expert, stored, shown, replayed; bad input exits 2."""
    for row in lit_run_show_replay(tmp_path, "robosuite", "expert"):
        assert row["error"] is None and row["success"] and row["max_steps"] == MAX_STEPS, row
    for args, message in ((["--tasks", "3"], "task 3 not in suite robosuite; valid: 0-2"),
                          (["--perturb", "camera"], "'camera' does not support simulator robosuite"),
                          (["--policy", "aloha-expert"], "policy 'aloha-expert' does not drive robosuite")):
        bad = run_cli("run", "--suite", "robosuite", "--policy", "expert", *args, "--out", str(tmp_path / "bad"))
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr[-500:]


def test_a_served_libero_policy_drives_robosuite():
    """stress-policy/1 carries 7-D actions, 9-D proprio and agentview/wrist images: a served LIBERO-trained model
    (the built-in one, via a real ``stress serve``) drives a robosuite task mechanically (well or not)."""
    import re
    import subprocess
    import sys

    from conftest import ROOT
    from stress.core.spec import ScenarioSpec
    from stress.envs.cache import EnvCache
    from stress.policies.cache import PolicyCache
    from stress.runners.episode import run_episode

    proc = subprocess.Popen([sys.executable, "-m", "stress.cli", "serve", "--port", "0"], cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    envs = EnvCache()
    try:
        line = proc.stderr.readline()
        url = re.search(r"ws://[\d.]+:\d+", line)
        assert url, line
        spec = ScenarioSpec("robosuite", 0, 0, policy="remote", max_steps=32, policy_options=(("server", url.group(0)),))
        result = run_episode(spec, envs, PolicyCache())
    finally:
        envs.close()
        proc.terminate()
        proc.wait(timeout=30)
    assert result.error is None and result.steps == 32 and np.isfinite(result.actions).all() and np.abs(result.actions).max() > 0
