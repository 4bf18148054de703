"""Each family's declared parameter space (perturbations/space.py): validation, grid axes, docs, CLI."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from perturbations.base import family, parameters_for, registry, validate
from stress.core.spec import PerturbationSpec
from perturbations.docs import docs_with_tables, markdown_table
from stress.core.errors import UserError

GOLDEN = Path(__file__).parent / "data" / "sampled_params.json"


def sampled_params() -> dict[str, dict]:
    """What the code samples for every family x severity 0-5 x seed 0-3 x camera target."""
    out = {}
    for name, cls in registry().items():
        cameras = ("both", "agentview", "wrist") if cls.per_camera else ("both",)
        for severity in range(6):
            for seed in range(4):
                for camera in cameras:
                    out[f"{name}/{severity}/{seed}/{camera}"] = parameters_for(PerturbationSpec(name, severity, seed, camera))
    return out


def test_sampled_parameters_never_change():
    # existing runs resume and replay by these: a family may not sample differently for the same spec
    golden = json.loads(GOLDEN.read_text())
    current = json.loads(json.dumps(sampled_params()))
    assert golden.keys() <= current.keys()  # a new family adds keys; none may go
    changed = [key for key in golden if current[key] != golden[key]]
    assert not changed, changed[:10]


# --- every family's declaration (parametrised over the registry: a new family is covered by itself) ------
FAMILIES = sorted(registry())


def _family_golden(name: str) -> list[dict]:
    return [params for key, params in json.loads(GOLDEN.read_text()).items() if key.split("/")[0] == name]


def _set(params: dict, path: str, value) -> None:
    """Put ``value`` at an axis path of explicit params ("agentview.yaw", "offsets[3]")."""
    *groups, leaf = path.split(".")
    for group in groups:
        params = params[group]
    key, _, index = leaf.partition("[")
    if index:
        params[key][int(index[:-1])] = value
    else:
        params[key] = value


@pytest.mark.parametrize("name", FAMILIES)
def test_sampled_and_identity_parameters_validate(name):
    fam = family(name)
    fam.space.validate(name, fam.identity_params())
    for seed in range(3):
        for severity in range(1, 6):
            fam.check_params(parameters_for(PerturbationSpec(name, severity, seed)))
    for params in _family_golden(name):  # what stored runs hold
        fam.check_params(params)


@pytest.mark.parametrize("name", FAMILIES)
def test_all_zero_grid_point_is_identity(name):
    fam = family(name)
    params = fam.space.params_from_axes({})
    fam.check_params(params)
    if all(axis.has_identity for axis in fam.space.axes()):
        assert fam.is_identity(params), params


@pytest.mark.parametrize("name", FAMILIES)
def test_random_grid_points_are_valid_explicit_params(name):
    fam, rng = family(name), np.random.default_rng(15)
    axes = fam.space.axes()
    for _ in range(40):
        chosen = [axes[i] for i in rng.permutation(len(axes))[: rng.integers(1, 4)]] if axes else []
        params = fam.space.params_from_axes({a.name: int(rng.integers(a.low, a.high + 1)) for a in chosen})
        again = json.loads(json.dumps(params))  # a finding stores them as JSON
        assert again == params
        validate(PerturbationSpec(name, params=again))


@pytest.mark.parametrize("name", FAMILIES)
def test_axis_ends_lie_in_bounds_and_beyond_is_refused(name):
    fam = family(name)
    for axis in fam.space.axes():
        assert axis.low <= 0 <= axis.high
        for index in (axis.low, axis.high):
            fam.check_params(fam.space.params_from_axes({axis.name: index}))
        for index in (axis.low - 1, axis.high + 1):
            with pytest.raises(UserError, match=f"axis {re.escape(axis.name)} index {index} out of range; valid: an integer {axis.low}..{axis.high}"):
                axis.value(index)
    with pytest.raises(UserError, match="unknown axis"):
        fam.space.params_from_axes({"no_such_axis": 1})


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "valid" in message, message
    return message


@pytest.mark.parametrize("name", FAMILIES)
def test_unknown_keys_and_out_of_range_values_are_one_line_user_errors(name):
    fam = family(name)
    with pytest.raises(UserError) as excinfo:
        fam.check_params({"no_such_key": 1})
    message = one_line(excinfo)
    assert "no_such_key" in message and f"valid: {', '.join(fam.space.names())}" in message
    for axis in fam.space.axes():
        params = fam.space.params_from_axes({})
        bad = "no-such-option" if axis.options else axis.value(axis.high) + 1000
        _set(params, axis.name, bad)
        with pytest.raises(UserError) as excinfo:
            fam.check_params(params)
        message = one_line(excinfo)
        assert re.sub(r"\[\d+\]$", "", axis.name) in message and repr(bad) in message, message


def test_error_texts_users_and_tests_rely_on():
    cases = [
        ("occlusion", {"area_fraction": -0.1}, "occlusion area_fraction -0.1 out of range; valid: 0-1"),
        ("occlusion", {"fill": "purple"}, "occlusion fill 'purple' unknown; valid: black, gray, noise"),
        ("object_pose", {"dx": 0.9}, "object_pose dx 0.9 out of range; valid: -0.5..0.5 m"),
        ("object_pose", {"mode": "flip"}, "object_pose mode 'flip' unknown; valid: shift, swap"),
        ("occluder", {"fraction": 1.5}, "occluder fraction 1.5 out of range; valid: 0-1"),
        ("occluder", {"depth": 0.95}, "occluder depth 0.95 out of range; valid: 0.1-0.9"),
        ("camera", {"agentview": {"fovy": 180}}, "camera agentview.fovy 180 out of range; valid: 0-180 deg (exclusive)"),
        ("camera", {"wrist": {"zoom": 2}}, "unknown camera wrist parameter(s) ['zoom']; valid: rotation, translation, fovy"),
        ("camera", {"agentview": 3}, "camera agentview must be an object, got int"),
        ("robot_init", {"offsets": [0.1] * 6}, "robot_init offsets [0.1, 0.1, 0.1, 0.1, 0.1, 0.1] invalid; valid: 7 (aloha: 12) numbers, each -1..1 rad"),
        ("sensor_noise", {"jpeg_quality": 50.5}, "sensor_noise jpeg_quality 50.5 out of range; valid: an integer 1-100"),
        ("policy_noise", {"seed_offset": -1}, "policy_noise seed_offset -1 out of range; valid: an integer >= 0"),
        ("policy_noise", {"denoising_steps_scale": 0}, "denoising_steps_scale 0 out of range; valid: 0-1 (exclusive of 0)"),
        ("image_lighting", {"glare": {"radius": 0.1}}, "image_lighting glare {'radius': 0.1} needs centre and radius"),
        ("image_lighting", {"shadows": [{"polygon": [[0, 0], [1, 1]]}]}, "image_lighting shadows[0].polygon [[0, 0], [1, 1]] invalid; valid: a list of >= 3 entries"),
        ("distractors", {"objects": [{"category": "teapot"}]}, "distractors category 'teapot' unknown; valid: akita_black_bowl"),
        ("texture", {"table": {"mode": "solid", "hue_deg": 3}}, "unknown texture table solid parameter(s) ['hue_deg']; valid: colour"),
        ("lighting", {"light_off": 7}, "lighting light_off 7 unknown; valid: null, 0, 1, 2"),
    ]
    for name, params, text in cases:
        with pytest.raises(UserError, match=re.escape(text)):
            family(name).check_params(params)


def test_grid_values_print_cleanly_and_signed_steps_go_mild_to_severe():
    axes = {axis.name: axis for axis in family("sensor_noise").space.axes()}
    assert [axes["jpeg_quality"].value(i) for i in (0, 1, 99)] == [100, 99, 1]  # identity 100, step -1
    assert axes["motion_blur"].value(3) == 0.015
    brightness = {axis.name: axis for axis in family("image_lighting").space.axes()}["brightness"]
    assert (brightness.low, brightness.high, brightness.value(-7)) == (-100, 100, -0.07)
    camera = family("camera").space.params_from_axes({"agentview.yaw": np.int64(5), "wrist.translation[2]": -3})
    assert camera["agentview"]["yaw"] == 10.0 and camera["wrist"]["translation"] == [0.0, 0.0, -0.015]


# --- what derives from the declarations: docs and the CLI -----------------------------------------------
def test_docs_tables_are_generated_from_the_declarations():
    docs = Path(__file__).resolve().parents[1] / "docs" / "perturbations.md"
    text = docs.read_text()
    assert docs_with_tables(text) == text, "docs/perturbations.md is stale: run `python -m perturbations`"
    for name in FAMILIES:
        assert markdown_table(name) in text


def test_list_perturbations_shows_each_parameter_and_its_grid():
    proc = run_cli("list", "perturbations")
    assert proc.returncode == 0, proc.stderr
    assert "occlusion parameters" in proc.stdout and "step 0.01, index 0..100" in proc.stdout
    assert "agentview.yaw" in proc.stdout and "step -1, index 0..99" in proc.stdout  # jpeg_quality


# --- real scenes: grid points run through the hooks as explicit params ------------------------------------
@pytest.fixture(scope="module")
def env():
    from stress.envs.libero import LiberoEnv

    env = LiberoEnv("libero_spatial", 0, image_size=64)
    yield env
    env.close()


@pytest.mark.parametrize("name, indices", [
    ("camera", {"agentview.yaw": 5, "wrist.fovy": -3}),
    ("lighting", {"diffuse_scale": 20, "tilt_deg": 6, "colour_temperature": -4}),
    ("texture", {"table.hue_deg": 9, "objects.strength": 40}),
    ("dynamics", {"friction_scale": -5, "mass_scale": 10}),
    ("robot_init", {"offsets[1]": 5, "offsets[5]": -5}),
    ("image_lighting", {"brightness": -12, "gamma": 4}),
    ("mid_chunk_push", {"action": 1, "speed_mps": 30, "chunk": -1}),
])
def test_grid_points_run_in_the_hooks(env, name, indices):
    params = family(name).space.params_from_axes(indices)
    spec = PerturbationSpec(name, params=params)
    env.reset(0, (spec,))
    assert env.check_pixel_realisation() is None
    realised = env.perturbations[0]
    assert not realised.family.is_identity(realised.params)
    json.dumps(realised.record())
    for _ in range(2):  # event and pixel hooks run per step / per frame
        env.step(np.zeros(7))
    env.observe()


def test_a_search_grid_can_stop_short_of_the_valid_range():
    """object_pose's dx, dy are valid to ±0.5 m, but the search grid stops at ±0.15 m (search_low /
    search_high): beyond it nearly every shift leaves the table or the robot's reach."""
    fam = family("object_pose")
    axes = {a.name: (a.low, a.high) for a in fam.space.axes()}
    assert axes["dx"] == axes["dy"] == (-15, 15) and axes["dyaw"] == (-90, 90)
    validate(PerturbationSpec("object_pose", params={"dx": 0.5, "dy": -0.5}))  # still valid input for `stress run`
