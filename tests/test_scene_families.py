"""Scene-layer families on real scenes: the simulator occluder (hidden share of the target's pixels per
level, only its camera sees it, physics untouched) and distractor objects added through a BDDL copy
(present, visible, shipped init states still set the original joints, recorded by a CLI run)."""

import json

import mujoco
import numpy as np
import pyarrow.parquet as pq
import pytest

from perturbations import base
from perturbations.base import Perturbation, family, parameters_for, validate
from stress.core.spec import Layer, PerturbationSpec
from perturbations.occluder import FRACTION_BY_SEVERITY, TOLERANCE
from perturbations.space import Free, ParamSpace
from stress.core.spec import ScenarioSpec
from stress.core.errors import UserError
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.runners.episode import run_episode
from conftest import run_cli

TASK = dict(suite="libero_spatial", task_id=0)
OCCLUDER = PerturbationSpec("occluder", 3, seed=0, camera="both")
DISTRACTORS = PerturbationSpec("distractors", 4, seed=0)  # 1 other + 1 similar + 1 same category
INITS = (0, 1)


@pytest.fixture(scope="module")
def envs():
    cache = EnvCache(size=3)  # clean, occluder, distractors: each built once
    yield cache
    cache.close()


def env_with(envs, *specs):
    return envs.get(ScenarioSpec(init_index=0, perturbations=specs, **TASK))


def target_pixels(env, camera):
    model = env.raw.sim.model._model
    root = model.body_rootid[env.raw.obj_body_id[env.target_object]]
    geoms = np.flatnonzero(model.body_rootid[model.geom_bodyid] == root)
    return int(np.isin(env.segmentation(camera), geoms).sum())


# --- occluder ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("init", INITS)
def test_occluded_fraction_grows_with_severity_and_hits_each_level(envs, init):
    clean_env, env = env_with(envs), env_with(envs, OCCLUDER)
    occluder = family("occluder")
    clean_env.reset(init)  # the same settled state without any occluder body
    clean = {camera: target_pixels(clean_env, camera) for camera in ("agentview", "wrist")}
    env.reset(init)
    for camera in ("agentview", "wrist"):
        fractions = []
        for level in range(1, 6):
            # the occluder's own hooks re-place the box on the settled scene for each level
            params = occluder.resolve(parameters_for(PerturbationSpec("occluder", level, seed=0, camera=camera)), env, (camera,))
            measured = occluder.check(env, params)["occluded_fraction"][camera]
            hidden = 1 - target_pixels(env, camera) / clean[camera]  # counted independently
            assert measured == pytest.approx(hidden)
            assert abs(measured - FRACTION_BY_SEVERITY[level]) <= TOLERANCE, (camera, level, measured)
            fractions.append(measured)
        assert fractions == sorted(fractions) and fractions[0] > 0.1, (camera, fractions)


def test_reset_records_the_occluded_fraction_of_each_camera(envs):
    env = env_with(envs, OCCLUDER)
    env.reset(1)
    record = env.perturbations[0].record()
    json.dumps(record)
    for camera in ("agentview", "wrist"):
        assert abs(record["realisation"]["occluded_fraction"][camera] - FRACTION_BY_SEVERITY[3]) <= TOLERANCE
    model = env.raw.sim.model._model
    wrist_box = model.body("stress_occluder_wrist")
    assert model.body_parentid[wrist_box.id] == model.cam_bodyid[model.camera("robot0_eye_in_hand").id]
    assert model.geom("stress_occluder_wrist").contype == 0 and model.geom("stress_occluder_agentview").conaffinity == 0


def test_only_the_targeted_camera_sees_its_occluder(envs):
    clean_env, env = env_with(envs), env_with(envs, OCCLUDER)
    occluder = family("occluder")
    clean_env.reset(0)
    clean = {camera: clean_env.render(camera) for camera in ("agentview", "wrist")}
    env.reset(0)
    for targeted, other in (("agentview", "wrist"), ("wrist", "agentview")):
        occluder.resolve(parameters_for(PerturbationSpec("occluder", 4, seed=0, camera=targeted)), env, (targeted,))
        assert not np.array_equal(env.render(targeted), clean[targeted]), targeted
        assert np.array_equal(env.render(other), clean[other]), other  # the other box is parked, unseen


def test_wrist_occluder_follows_the_hand(envs):
    env = env_with(envs, OCCLUDER)
    env.reset(0)
    model, data = env.raw.sim.model._model, env.raw.sim.data._data
    box, cam = model.geom("stress_occluder_wrist").id, model.camera("robot0_eye_in_hand").id

    def in_camera_frame():
        return data.cam_xmat[cam].reshape(3, 3).T @ (data.geom_xpos[box] - data.cam_xpos[cam])

    before, hand_before = in_camera_frame(), data.cam_xpos[cam].copy()
    for _ in range(8):
        env.step(np.array([0.6, 0.4, 0.3, 0, 0, 0, -1.0]))
    assert np.linalg.norm(data.cam_xpos[cam] - hand_before) > 0.02  # the hand moved
    assert np.allclose(in_camera_frame(), before, atol=1e-6)  # the box stayed in front of the camera


def test_expert_acts_identically_with_and_without_the_occluder(envs):
    policies = PolicyCache()
    clean = run_episode(ScenarioSpec(init_index=0, **TASK), envs, policies)
    occluded = run_episode(ScenarioSpec(init_index=0, perturbations=(OCCLUDER,), **TASK), envs, policies)
    assert clean.error is None and occluded.error is None, occluded.error
    assert occluded.perturbations[0]["realisation"]["occluded_fraction"]["agentview"] > 0.5
    assert np.array_equal(clean.actions, occluded.actions)  # bit-identical physics
    assert clean.success == occluded.success


def test_occluder_rejects_bad_explicit_parameters():
    with pytest.raises(UserError, match="occluder fraction 1.5 out of range; valid: 0-1"):
        validate(PerturbationSpec("occluder", 1, params={"fraction": 1.5}))
    with pytest.raises(UserError, match="occluder depth 0.95 out of range; valid: 0.1-0.9"):
        validate(PerturbationSpec("occluder", 1, params={"fraction": 0.5, "depth": 0.95}))
    with pytest.raises(UserError, match="cameras"):
        validate(PerturbationSpec("occluder", 1, params={"fraction": 0.5, "cameras": ["frontview"]}))


# --- distractors ---------------------------------------------------------------------------------------
def joint_qpos(env):
    model, data = env.raw.sim.model._model, env.raw.sim.data._data
    out = {}
    for j in range(model.njnt):
        width = {mujoco.mjtJoint.mjJNT_FREE: 7, mujoco.mjtJoint.mjJNT_BALL: 4}.get(model.jnt_type[j], 1)
        out[model.joint(j).name] = data.qpos[model.jnt_qposadr[j] : model.jnt_qposadr[j] + width].copy()
    return out


class RecordState(Perturbation):
    """State-layer probe: records every joint's qpos right after the init state is set (before settling)."""

    name = "test_record_state"
    layer = Layer.STATE
    summary = "records joint positions"
    severity_meaning = "none"
    space = ParamSpace(Free("record", "whether to record (always true)"))
    seen: list[dict[str, np.ndarray]] = []

    def sample(self, severity, rng, cameras):
        return {"record": True}

    def apply_state(self, env, params):
        RecordState.seen.append(joint_qpos(env))


@pytest.fixture
def record_state():
    base.FAMILIES.register(RecordState.name, RecordState)
    yield
    base.FAMILIES.unregister(RecordState.name)


def test_distractors_exist_are_visible_and_keep_the_shipped_state(envs, record_state):
    clean_env, env = env_with(envs), env_with(envs, DISTRACTORS)
    env.reset(0)
    added = env.perturbations[0].realisation["added"]
    assert len(added) == 3 and added[2]["category"] == "akita_black_bowl"  # level 4: one of the target's category
    seg = env.segmentation("agentview")
    model = env.raw.sim.model._model
    for a in added:
        root = model.body_rootid[env.raw.obj_body_id[a["name"]]]
        visible = int(np.sum(model.body_rootid[model.geom_bodyid[seg[seg >= 0]]] == root))
        assert visible == a["agentview_pixels"] > 20, a
        assert np.linalg.norm(np.array(a["position"][:2]) - a["planned_xy"]) < 0.05
    for init in INITS:
        for e in (clean_env, env):
            e.reset(init, (PerturbationSpec("test_record_state", 1),))
        original, edited = RecordState.seen[-2], RecordState.seen[-1]
        assert set(original) < set(edited)
        for name, qpos in original.items():  # the shipped init state set every original joint exactly
            assert np.array_equal(edited[name], qpos), (init, name)
        settled_original, settled_edited = joint_qpos(clean_env), joint_qpos(env)
        for name, qpos in settled_original.items():  # and the distractors disturbed none while settling
            assert np.allclose(settled_edited[name], qpos, atol=1e-9), (init, name)


def test_distractor_run_through_the_cli_stores_the_realised_record(tmp_path):
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps([ScenarioSpec(init_index=0, perturbations=(PerturbationSpec("distractors", 2, seed=5),), max_steps=10, **TASK).to_dict()]))
    proc = run_cli("run", "--scenario", str(scenario), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    (row,) = pq.read_table(run / "episodes.parquet").to_pylist()
    assert row["error"] is None, row["error"]
    (record,) = json.loads(row["perturbations"])
    assert record["name"] == "distractors" and record["layer"] == "scene"
    assert record["params"] == parameters_for(PerturbationSpec("distractors", 2, seed=5))
    added = record["realisation"]["added"]
    assert len(added) == 2 and all(a["agentview_pixels"] > 0 and len(a["position"]) == 3 for a in added)


def test_occluder_box_pixels_are_the_occluded_region_of_the_world_model_error(envs):
    from stress.measurement.groundtruth import occlusion_masks

    clean_env, env = env_with(envs), env_with(envs, OCCLUDER)
    clean_env.reset(1)
    env.reset(1)
    masks = occlusion_masks(env)
    for camera in ("agentview", "wrist"):
        mask = masks[camera]
        assert mask.shape == (env.image_size, env.image_size) and 0 < mask.mean() < 0.9
        hidden = target_pixels(clean_env, camera) - target_pixels(env, camera)
        assert mask.sum() >= hidden > 0  # the box covers at least the target pixels it hides
        changed = np.any(env.render(camera) != clean_env.render(camera), axis=-1)
        assert changed[mask].mean() > 0.9  # the box's pixels are where the frame differs from the clean scene
    assert occlusion_masks(clean_env) is None
