"""The visual families on ALOHA (gym-aloha's scene): the textures the adapter adds render exactly like the
stock scene, every texture level changes the image and nothing leaks into the next episode or the physics."""

import numpy as np
import pytest

from stress.core.spec import PerturbationSpec
from stress.envs.aloha import CAMERAS, XML, AlohaEnv, asset_path, init_states

SIZE = 64
PHYSICS_FIELDS = ("body_mass", "body_inertia", "geom_friction", "geom_size", "dof_damping", "dof_frictionloss")


@pytest.fixture(scope="module")
def env():
    built = AlohaEnv("aloha", "insertion", image_size=SIZE)
    yield built
    built.close()


def images(env):
    return {camera: env.render(camera) for camera in CAMERAS}


def test_added_textures_render_like_the_stock_scene(env):
    """The blank table texture under its grey rgba and the black backdrop change no pixel of the clean scene."""
    from dm_control import mujoco as dm_mujoco
    from gym_aloha.constants import START_ARM_POSE

    stock = dm_mujoco.Physics.from_xml_path(str(asset_path(XML["insertion"])))
    stock.model.light_castshadow[:] = 0
    assert stock.model.ntex == 0 and env.model.ntex == 2
    stock.data.qpos[:16], stock.data.qpos[16:] = START_ARM_POSE, init_states("aloha", 1)[3]
    stock.forward()
    expected = {camera: stock.render(SIZE, SIZE, camera_id=camera) for camera in CAMERAS}
    stock.free()
    env.reset(3)
    for camera, image in images(env).items():
        np.testing.assert_array_equal(image, expected[camera], err_msg=camera)


def test_texture_every_level_changes_the_image_and_nothing_leaks(env):
    env.reset(0)
    clean, qpos = images(env), env.data.qpos.copy()
    physics = {field: getattr(env.model, field).copy() for field in PHYSICS_FIELDS}
    textures = env.model.tex_data.copy()
    changes = []
    for level in range(1, 6):
        env.reset(0, (PerturbationSpec("texture", level, seed=0),))
        change = env.perturbations[0].realisation["image_change"]
        assert min(change.values()) > 0.5, (level, change)  # the table is in every camera's view
        changes.append(change["top"])
        np.testing.assert_array_equal(env.data.qpos, qpos)
        for field, value in physics.items():
            np.testing.assert_array_equal(getattr(env.model, field), value, err_msg=field)
    assert changes[0] < changes[2] < changes[4], changes
    env.reset(0, (PerturbationSpec("texture", 5, seed=1),))
    assert not np.array_equal(env.render("top"), clean["top"])
    env.reset(0)
    for camera, image in images(env).items():
        np.testing.assert_array_equal(image, clean[camera], err_msg=camera)
    np.testing.assert_array_equal(env.model.tex_data, textures)


def test_texture_surfaces_mean_table_backdrop_objects(env):
    env.reset(0)
    seg = env.segmentation("top")
    table = seg == env.model.geom("table").id
    backdrop = seg == -1
    clean = env.render("top").astype(int)
    red = {"mode": "solid", "colour": [1.0, 0.0, 0.0]}
    for params, where in (({"table": red}, table), ({"walls": red}, backdrop)):
        env.reset(0, (PerturbationSpec("texture", params=params),))
        changed = np.any(env.render("top").astype(int) != clean, axis=-1)
        assert changed[where].mean() > 0.95 and changed[~where].mean() < 0.1, params  # edges: anti-aliasing
    env.reset(0, (PerturbationSpec("texture", params={"objects": {"tint": [0.0, 1.0, 0.0], "strength": 1.0}}),))
    np.testing.assert_allclose(env.model.geom_rgba[env.model.geom("red_peg").id], [0.0, 1.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(env.model.geom_rgba[env.model.geom("table").id], [0.2, 0.2, 0.2, 1.0], atol=1e-6)


@pytest.mark.parametrize("target", ["top", "right_wrist"])
def test_camera_every_level_moves_only_the_targeted_camera_and_nothing_leaks(env, target):
    """gym-aloha's look-at cameras are frozen, then orbited (top) or turned and shifted on the hand (wrists)."""
    env.reset(0)
    clean = images(env)
    modes = env.model.cam_mode.copy()
    for level in range(1, 6):
        env.reset(0, (PerturbationSpec("camera", level, seed=0, camera=target),))
        realisation = env.perturbations[0].realisation
        now = images(env)
        for camera in CAMERAS:
            assert np.array_equal(now[camera], clean[camera]) == (camera != target), (level, camera)
        assert realisation["image_change"][target] > 0.5 and realisation["pose_change"][target]["position_m"] > 0
    env.reset(0)
    np.testing.assert_array_equal(env.model.cam_mode, modes)
    for camera, image in images(env).items():
        np.testing.assert_array_equal(image, clean[camera], err_msg=camera)


def test_camera_parameters_are_named_after_the_simulators_cameras():
    from perturbations.base import family, parameters_for
    from stress.core.errors import UserError
    from stress.core.spec import ScenarioSpec
    from stress.runners.episode import check_spec

    params = parameters_for(PerturbationSpec("camera", 5, seed=3), simulator_cameras=CAMERAS)
    assert set(params) == set(CAMERAS) and params["top"]["fovy"] in (78.0 - 20.8, 78.0 + 20.8)  # 12 deg on 45, scaled to 78
    assert [axis.name for axis in family("camera").space_for(CAMERAS).axes()][:2] == ["top.yaw", "top.pitch"]
    spec = ScenarioSpec("aloha", 0, 0, (PerturbationSpec("camera", 2, params={"agentview": {"yaw": 3}}),), policy="aloha-expert", image_size=224)
    with pytest.raises(UserError, match=r"^unknown camera parameter\(s\) \['agentview'\]; valid: top, left_wrist, right_wrist$"):
        check_spec(spec)
    from scenarios.searchspace import perturbation_specs, suite_space

    space = suite_space("aloha", [0], [0], ["camera"])
    point = space.decode(np.full(space.dims, 0.8))
    assert [spec.params.keys() <= set(CAMERAS) for spec in perturbation_specs(space, point)] == [True]


def test_image_size_480_is_gym_alohas_own_camera():
    """``image_size`` 480: the top camera as gym-aloha's stock env renders it (480 x 640, shadows on), pixel for pixel,
    at reset and after steps; what LeRobot's gym_aloha env and openpi's ALOHA client hand their policies."""
    import gym_aloha  # noqa: F401  (registers gym_aloha/*)
    import gymnasium

    stock = gymnasium.make("gym_aloha/AlohaTransferCube-v0", obs_type="pixels_agent_pos")
    env = AlohaEnv("aloha", "transfer_cube", image_size=480)
    try:
        theirs, _ = stock.reset(seed=2)
        env.reset(2)
        assert env.image_shape == (480, 640) and env.shadows and env.config()["image_shape"] == [480, 640]
        action = theirs["agent_pos"] + 0.05
        for step in range(3):
            ours = env.render("top")
            assert ours.shape == (480, 640, 3) and np.array_equal(ours, theirs["pixels"]["top"]), step
            assert np.allclose(env.proprio(), theirs["agent_pos"], atol=1e-6)  # the suite's proprio is float32
            theirs, *_ = stock.step(action)
            env.step(action)
        row, col = env.project(env.object_position("box"), "top")  # the projection knows the frame is 640 wide
        assert env.model.geom(int(env.segmentation("top")[int(row), int(col)])).name == "red_box"
    finally:
        env.close()
        stock.close()
