"""The state and event families on ALOHA (object_pose, robot_init, mid_chunk_push), on the real scenes.

Each family is realised (the record shows the change), invalid scenes are refused or re-sampled
deterministically, the same spec gives the same parameters and state, an event is restored exactly by a
snapshot, and the CLI runs the expert under object_pose end to end. The expert's success under each family
is measured, not asserted (docs/aloha.md): it plans from the poses the episode starts from.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from perturbations.base import parameters_for
from stress.core.errors import InvalidScene
from stress.core.spec import PerturbationSpec
from stress.envs.aloha import CAMERAS, CHUNK, INIT_BOX, SIMULATOR, AlohaEnv, init_states
from stress.core.errors import UserError
from stress.policies.aloha_expert import AlohaExpertPolicy


@pytest.fixture(scope="module")
def envs():
    built = {task: AlohaEnv("aloha", task) for task in ("transfer_cube", "insertion")}
    yield built
    for env in built.values():
        env.close()


def spec(name, severity=3, seed=0, **params):
    return PerturbationSpec(name, severity, seed=seed, params=params or None)


def run_expert(env, steps=None):
    """The expert's chunks from the current reset, a policy query every CHUNK steps as in the runner."""
    policy = AlohaExpertPolicy()
    policy.reset(env.instruction, 0)
    while env.step_count < (steps or env.max_steps):
        env.begin_chunk()
        for action in policy.act(env.observe(render=False)).actions:
            if env.step(action) or env.step_count >= (steps or env.max_steps):
                return env.success()
    return env.success()


# --- object_pose -----------------------------------------------------------------------------------------
def test_init_box_is_gym_alohas_sampling_box():
    for task, names in ((0, ("box",)), (1, ("peg", "socket"))):
        poses = init_states("aloha", task)
        for k, name in enumerate(names):
            (x0, y0), (x1, y1) = INIT_BOX[name]
            xy = poses[:, 7 * k : 7 * k + 2]
            assert (xy >= [x0, y0]).all() and (xy <= [x1, y1]).all()
            assert xy.min(axis=0) == pytest.approx([x0, y0], abs=0.02) and xy.max(axis=0) == pytest.approx([x1, y1], abs=0.02)


def test_shift_moves_the_cube_where_the_expert_plans_from(envs):
    env = envs["transfer_cube"]
    env.reset(0)
    clean = env.object_pose("box")
    env.reset(0, (spec("object_pose", dx=0.05, dy=-0.1, dyaw=30.0),))
    record = env.perturbations[0].record()
    achieved = record["realisation"]["achieved"]["box"]
    # the episode starts from the shifted pose (objects start mid-air on ALOHA, as in gym-aloha) ...
    assert np.allclose(env.object_pose("box")[:3] - clean[:3], [0.05, -0.1, 0.0], atol=1e-9)
    assert np.array_equal(env.initial_object_qpos, env.data.qpos[16:])  # what the open-loop expert plans from
    # ... and the record says where it came to rest versus the unshifted scene after the same probe settle
    assert np.allclose(achieved["displacement_m"], [0.05, -0.1], atol=2e-3) and achieved["yaw_deg"] == pytest.approx(30.0, abs=1.0)
    assert record["params"]["object"] == "box" and record["realisation"]["attempts"] == 1
    assert env.step_count == 0 and not env.success()  # the probe settle was undone


def test_severity_moves_the_object_further_outside_gym_alohas_box(envs):
    env = envs["insertion"]
    outside = []
    for level in range(1, 6):
        env.reset(3, (spec("object_pose", level, seed=1),))
        realisation = env.perturbations[0].realisation
        assert realisation["shipped_box_m"] == [list(INIT_BOX["peg"][0]), list(INIT_BOX["peg"][1])]
        outside.append(realisation["outside_m"])
    assert outside == sorted(outside) and 0.004 < outside[0] < 0.02 and 0.075 < outside[-1] < 0.105


@pytest.mark.parametrize("task, params, reason", [
    ("transfer_cube", {"dx": -0.35}, "box out of the right arm's reach"),
    ("transfer_cube", {"dx": 0.2}, "box too close to the right arm's base"),
    ("insertion", {"dx": -0.3, "dy": -0.058}, "peg settled .* cm away from where the shift put it"),  # onto the socket
    ("insertion", {"object": "socket", "dx": 0.3, "dy": 0.058}, "already solved"),  # over the peg
])
def test_invalid_explicit_shift_is_refused(envs, task, params, reason):
    env = envs[task]
    with pytest.raises(InvalidScene, match=reason) as exc:
        env.reset(0, (spec("object_pose", **params),))
    assert "samples" not in str(exc.value)  # explicit parameters are never re-sampled
    env.reset(0)
    assert env.object_pose(env.target_object)[0] == init_states("aloha", env.task_id)[0][0]


def test_resampling_is_deterministic(envs):
    env = envs["transfer_cube"]
    level5 = spec("object_pose", 5, seed=0)  # its first sample takes the cube out of the right arm's reach
    runs = []
    for _ in range(2):
        env.reset(0, (level5,))
        p = env.perturbations[0]
        runs.append((p.params, p.realisation["attempts"], env.data.qpos.copy()))
    assert runs[0][1] > 1 and runs[0][:2] == runs[1][:2] and np.array_equal(runs[0][2], runs[1][2])
    sampled = parameters_for(level5, runs[0][1] - 1, CAMERAS, SIMULATOR)  # the kept sample is that draw
    assert {k: runs[0][0][k] for k in sampled} == {**sampled, "object": "box"}


def test_unknown_object_names_the_valid_ones(envs):
    with pytest.raises(UserError, match="object 'cup' not a movable object of this scene; valid: target, peg, socket"):
        envs["insertion"].reset(0, (spec("object_pose", object="cup", dx=0.02),))


# --- robot_init ------------------------------------------------------------------------------------------
def test_robot_init_offsets_both_arms_and_the_ctrl_holds_them(envs):
    env = envs["transfer_cube"]
    env.reset(0)
    clean = env.data.qpos[:16].copy()
    offsets = [0.1, -0.1, 0.1, 0.2, -0.2, 0.3, -0.1, 0.1, -0.1, -0.2, 0.2, -0.3]
    env.reset(0, (PerturbationSpec("robot_init", 3, params={"offsets": offsets}),))
    arms = np.r_[0:6, 8:14]
    assert np.allclose(env.data.qpos[arms] - clean[arms], offsets, atol=1e-12)
    assert np.array_equal(env.data.ctrl[arms], env.data.qpos[arms])  # the position actuators hold the new pose
    realisation = env.perturbations[0].realisation
    assert np.allclose(realisation["present_rad"], offsets, atol=0.02)  # after the probe settle
    assert len(realisation["eef_displacement_m"]) == 2 and realisation["eef_distance_m"] > 0.03
    hold = env.proprio()  # the start pose as an action (commanding the measured pose each step would ratchet the sag)
    for _ in range(25):
        env.step(hold)
    assert np.allclose(env.data.qpos[arms] - clean[arms], offsets, atol=0.02)


def test_robot_init_samples_twelve_offsets_on_aloha_and_seven_on_libero(envs):
    for level, band in ((1, (0.03, 0.05)), (5, (0.3, 0.4))):
        env = envs["insertion"]
        env.reset(2, (PerturbationSpec("robot_init", level, seed=4),))
        offsets = np.abs(env.perturbations[0].params["offsets"])
        assert len(offsets) == 12 and band[0] <= offsets.min() and offsets.max() <= band[1]
    assert len(parameters_for(PerturbationSpec("robot_init", 5, seed=4))["offsets"]) == 7  # LIBERO's draw unchanged


def test_robot_init_refuses_collision_and_wrong_length(envs):
    env = envs["transfer_cube"]
    shoulder = [0.0] * 12
    shoulder[7] = 1.0  # the right shoulder tilted forward into the table
    with pytest.raises(InvalidScene, match="the offset arm touches table"):
        env.reset(0, (PerturbationSpec("robot_init", 3, params={"offsets": shoulder}),))
    with pytest.raises(UserError, match="robot_init offsets has 7 numbers; valid on aloha: 12"):
        env.reset(0, (PerturbationSpec("robot_init", 3, params={"offsets": [0.1] * 7}),))


# --- mid_chunk_push --------------------------------------------------------------------------------------
PUSH = {"trigger": "chunk_step", "chunk": 1, "step": 30, "action": "push", "speed_mps": 0.9, "direction_deg": 90.0}


def test_push_fires_at_the_chunk_step_and_a_snapshot_restores_it_exactly(envs):
    env = envs["transfer_cube"]
    env.reset(0, (PerturbationSpec("mid_chunk_push", 3, params=PUSH),))
    record = env.perturbations[0].realisation
    run_expert(env, steps=70)
    assert not record["fired"]
    before = env.snapshot()  # inside chunk 1, before the push
    policy = AlohaExpertPolicy()
    policy.reset(env.instruction, 0)
    actions = policy.act(env.observe(render=False)).actions  # the rest of the plan from step 70
    for action in actions[:30]:
        env.step(action)
    assert record["fired"] and record["fired_at_step"] == CHUNK + 31 and (record["chunk"], record["chunk_step"]) == (1, 30)
    assert record["measured_after_steps"] == 5 and record["distance_m"] > 0.005
    after, qpos = json.dumps(record, sort_keys=True), env.data.qpos.copy()
    env.restore(before)
    assert not env.perturbations[0].realisation["fired"]  # the event record is part of the snapshot
    for action in actions[:30]:
        env.step(action)
    assert json.dumps(env.perturbations[0].realisation, sort_keys=True) == after
    assert np.array_equal(env.data.qpos, qpos)


def test_push_step_anywhere_in_alohas_chunk(envs):
    env = envs["transfer_cube"]
    env.reset(0, (PerturbationSpec("mid_chunk_push", 3, params={**PUSH, "step": 49}),))  # the chunk's last action
    run_expert(env, steps=2 * CHUNK)
    assert env.perturbations[0].realisation["fired_at_step"] == 2 * CHUNK
    sampled = [parameters_for(PerturbationSpec("mid_chunk_push", 3, seed=s), 0, CAMERAS, SIMULATOR) for s in range(40)]
    assert max(p["step"] for p in sampled if p["trigger"] == "chunk_step") > 15  # drawn over ALOHA's 50-step chunk


def test_same_spec_same_episode(envs):
    env = envs["insertion"]
    push = PerturbationSpec("mid_chunk_push", 5, seed=3)
    outcomes = []
    for _ in range(2):
        env.reset(4, (PerturbationSpec("object_pose", 2, seed=3), PerturbationSpec("robot_init", 2, seed=3), push))
        success = run_expert(env)
        outcomes.append((success, env.data.qpos.copy(), json.dumps([p.record() for p in env.perturbations], sort_keys=True)))
    assert outcomes[0][0] == outcomes[1][0] and np.array_equal(outcomes[0][1], outcomes[1][1]) and outcomes[0][2] == outcomes[1][2]


# --- end to end ------------------------------------------------------------------------------------------
def test_cli_runs_the_expert_under_object_pose(tmp_path):
    cli = [sys.executable, "-m", "stress.cli"]
    out = tmp_path / "results"
    run = subprocess.run([*cli, "run", "--suite", "aloha", "--perturb", "object_pose", "--policy", "aloha-expert", "--episodes", "2",
                          "--severities", "1,5", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    import pyarrow.parquet as pq

    rows = pq.read_table(next(out.iterdir()) / "episodes.parquet").to_pylist()
    shifted = [r for r in rows if r["perturbation"] != "clean"]
    assert sorted({r["perturbation"] for r in shifted}) == ["object_pose:1", "object_pose:5"] and len(shifted) == 4  # task 0 (the default) x 2 inits
    for r in shifted:
        assert r["error"] is None, r["error"]
        record = json.loads(r["perturbations"])[0]
        assert record["realisation"]["outside_m"] > 0.004 and record["params"]["object"] in ("box", "peg")
    bad = subprocess.run([*cli, "run", "--suite", "aloha", "--perturb", "distractors", "--policy", "aloha-expert", "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "'distractors' does not support simulator aloha" in bad.stderr
    assert "object_pose" in bad.stderr and "robot_init" in bad.stderr and "mid_chunk_push" in bad.stderr  # the valid ones


def test_params_for_another_robot_are_refused_before_running():
    from stress.core.spec import ScenarioSpec
    from stress.runners.episode import check_spec

    seven = PerturbationSpec("robot_init", 3, params={"offsets": [0.1] * 7})
    with pytest.raises(UserError, match=r"robot_init offsets has 7 numbers; valid on aloha: 12 \(one per arm joint\)"):
        check_spec(ScenarioSpec(suite="aloha", task_id=0, init_index=0, policy="aloha-expert", perturbations=(seven,)))
    check_spec(ScenarioSpec(suite="libero_spatial", task_id=0, init_index=0, perturbations=(seven,)))
    late = PerturbationSpec("mid_chunk_push", 3, params={**PUSH, "step": 20})
    with pytest.raises(UserError, match=r"mid_chunk_push step 20 never fires on libero \(chunks of 16 actions\); valid: 0-15"):
        check_spec(ScenarioSpec(suite="libero_spatial", task_id=0, init_index=0, perturbations=(late,)))
    check_spec(ScenarioSpec(suite="aloha", task_id=0, init_index=0, policy="aloha-expert", perturbations=(late,)))
