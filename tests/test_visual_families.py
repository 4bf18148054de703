"""Golden checks of the simulator's visual families (lighting, camera, texture) on a real LIBERO scene:
level 0 is the clean image, every level changes the image (camera: only the targeted one), the change
grows with severity, nothing leaks into the next episode, physics is untouched, bad parameters exit 2."""

import json

import numpy as np
import pytest

import perturbations.texture as texture_module
from conftest import run_cli
from stress.core.cameras import CAMERAS
from stress.core.spec import PerturbationSpec
from test_cli_errors import assert_user_error

FAMILIES = ("lighting", "camera", "texture")
PHYSICS_FIELDS = ("body_mass", "body_inertia", "body_pos", "body_quat", "geom_friction", "geom_size", "geom_pos", "dof_damping", "dof_frictionloss")


def images(env):
    return {camera: env.render(camera) for camera in CAMERAS}


@pytest.fixture
def clean(spatial_env):
    spatial_env.reset(0)
    return images(spatial_env)


@pytest.mark.parametrize("name", FAMILIES)
def test_level_zero_renders_the_clean_image(name, spatial_env, clean):
    spatial_env.reset(0, (PerturbationSpec(name, 0, seed=2),))
    for camera, image in images(spatial_env).items():
        assert np.array_equal(image, clean[camera]), camera


@pytest.mark.parametrize("name, camera", [("lighting", "both"), ("texture", "both"), ("camera", "agentview"), ("camera", "wrist")])
def test_every_level_changes_the_image_and_the_change_grows(name, camera, spatial_env, clean):
    targeted = CAMERAS if camera == "both" else (camera,)
    changes = []
    for level in range(1, 6):
        spatial_env.reset(0, (PerturbationSpec(name, level, seed=0, camera=camera),))
        record = spatial_env.perturbations[0].record()
        json.dumps(record)
        now = images(spatial_env)
        for cam in CAMERAS:  # a camera perturbation leaves the other camera bit-identical
            assert (not np.array_equal(now[cam], clean[cam])) == (cam in targeted), (level, cam)
        measured = {cam: float(np.abs(now[cam].astype(int) - clean[cam]).mean()) for cam in targeted}
        assert record["realisation"]["image_change"] == pytest.approx(measured)
        changes.append(max(measured.values()))
    assert min(changes) > 0.5
    assert changes[0] <= changes[2] <= changes[4], changes


@pytest.mark.parametrize("name", FAMILIES)
def test_no_leak_into_the_next_episode_and_physics_untouched(name, spatial_env, clean):
    model = spatial_env.raw.sim.model
    physics = {field: getattr(model, field).copy() for field in PHYSICS_FIELDS}
    textures = model.tex_data.copy()
    settled = spatial_env.raw.sim.data.qpos.copy()
    spatial_env.reset(0, (PerturbationSpec(name, 5, seed=1),))
    assert np.array_equal(spatial_env.raw.sim.data.qpos, settled)  # the settle steps ran identically
    for field, value in physics.items():
        assert np.array_equal(getattr(model, field), value), field
    spatial_env.reset(0)
    for camera, image in images(spatial_env).items():
        assert np.array_equal(image, clean[camera]), camera
    assert np.array_equal(model.tex_data, textures)


@pytest.mark.parametrize("name", FAMILIES)
def test_same_seed_same_pixels_other_seed_other_pixels(name, spatial_env):
    def render(seed):
        spatial_env.reset(0, (PerturbationSpec(name, 3, seed=seed),))
        return images(spatial_env)["agentview"]

    first = render(4)
    assert np.array_equal(render(4), first)
    assert not np.array_equal(render(5), first)


def test_camera_pose_change_is_what_the_parameters_say(spatial_env, clean):
    params = {"agentview": {"yaw": 20.0, "pitch": -5.0, "distance_scale": 1.1, "fovy": 50.0}}
    spatial_env.reset(0, (PerturbationSpec("camera", 1, camera="agentview", params=params),))
    pose = spatial_env.perturbations[0].realisation["pose_change"]
    assert set(pose) == {"agentview"}
    # yaw then pitch about perpendicular axes: cos(angle / 2) = cos(yaw / 2) * cos(pitch / 2)
    angle = 2 * np.degrees(np.arccos(np.cos(np.radians(10.0)) * np.cos(np.radians(2.5))))
    assert pose["agentview"]["rotation_deg"] == pytest.approx(angle, abs=0.01)
    assert pose["agentview"]["fovy_deg"] == pytest.approx(5.0)
    assert np.array_equal(spatial_env.render("wrist"), clean["wrist"])
    wrist = {"wrist": {"rotation": [0.0, 0.0, 8.0], "translation": [0.0, 0.01, 0.0]}}
    spatial_env.reset(0, (PerturbationSpec("camera", 1, camera="wrist", params=wrist),))
    pose = spatial_env.perturbations[0].realisation["pose_change"]["wrist"]
    assert pose["rotation_deg"] == pytest.approx(8.0, abs=0.01) and pose["position_m"] == pytest.approx(0.01, abs=1e-6)
    assert np.array_equal(spatial_env.render("agentview"), clean["agentview"])


def test_lighting_leaves_the_headlight_alone(spatial_env):
    headlight = spatial_env.raw.sim.model._model.vis.headlight
    before = (headlight.ambient.copy(), headlight.diffuse.copy(), headlight.specular.copy(), int(headlight.active))
    spatial_env.reset(0, (PerturbationSpec("lighting", 5, seed=0),))
    after = (headlight.ambient, headlight.diffuse, headlight.specular, int(headlight.active))
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_generated_textures_are_cached_not_regenerated(spatial_env, monkeypatch):
    calls = []
    generate = texture_module.texture_pixels
    monkeypatch.setattr(texture_module, "texture_pixels", lambda *args: calls.append(args[-1]) or generate(*args))
    spec = PerturbationSpec("texture", 4, seed=11)
    spatial_env.reset(0, (spec,))
    first = spatial_env.render("agentview")
    generated = len(calls)
    spatial_env.reset(0, (spec,))
    assert len(calls) == generated  # second episode: cache hits only
    assert np.array_equal(spatial_env.render("agentview"), first)


@pytest.mark.parametrize(
    "name, params, fragments",
    [
        ("camera", {"agentview": {"fovy": 180}}, ["fovy 180", "0-180"]),
        ("camera", {"wrist": {"fovy": 0}}, ["fovy 0", "0-180"]),
        ("camera", {"agentview": {"distance_scale": 0}}, ["distance_scale 0", "0.25-4"]),
        ("lighting", {"diffuse_scale": -1}, ["diffuse_scale -1", "0-5"]),
        ("texture", {"table": {"mode": "plaid"}}, ["'plaid'", "hue, pattern, solid"]),
    ],
)
def test_bad_explicit_parameters_exit_2(name, params, fragments, tmp_path):
    scenario = tmp_path / "bad.json"
    scenario.write_text(json.dumps([{"suite": "libero_spatial", "task_id": 0, "init_index": 0, "perturbations": [{"name": name, "params": params}]}]))
    assert_user_error(run_cli("run", "--scenario", str(scenario)), *fragments)
