"""LeRobot policies (``--policy lerobot --policy-path DIR``), served from LeRobot's own environment.

The mapping and the checks run everywhere (no lerobot needed). The policies themselves need LeRobot's Python:
set ``STRESS_LEROBOT_PYTHON`` to it (the recipe: docs/remote-policy.md, "LeRobot") and the tests below build small
ACT and Diffusion policies with LeRobot's own classes (tests/lerobot_policies.py), run them through the suite and
against LeRobot's own evaluation loop (tests/lerobot_rollout.py)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from stress.core.policy import Observation
from stress.policies.lerobot_server import MAPPINGS, cameras_of, check_features, gym_observation, image_size, read_config
from stress.store import RunStore
from test_cli_errors import assert_user_error

HERE = Path(__file__).parent
LEROBOT_PYTHON = os.environ.get("STRESS_LEROBOT_PYTHON")
needs_lerobot = pytest.mark.skipif(not LEROBOT_PYTHON, reason="needs LeRobot's environment: STRESS_LEROBOT_PYTHON=/path/to/its/python")

# config.json's features as LeRobot's save_pretrained writes them for a gym_aloha policy (act_aloha_sim_* alike)
ALOHA_FEATURES = {
    "type": "act",
    "input_features": {"observation.images.top": {"type": "VISUAL", "shape": [3, 480, 640]}, "observation.state": {"type": "STATE", "shape": [14]}},
    "output_features": {"action": {"type": "ACTION", "shape": [14]}},
}
# ... and for LeRobot's LIBERO env (HuggingFaceVLA/libero's names: image = agentview, image2 = wrist; the 8-D state of
# its LiberoProcessorStep; 256 px as that dataset's frames)
LIBERO_FEATURES = {
    "type": "act",
    "input_features": {"observation.images.image": {"type": "VISUAL", "shape": [3, 256, 256]}, "observation.images.image2": {"type": "VISUAL", "shape": [3, 256, 256]},
                       "observation.state": {"type": "STATE", "shape": [8]}},
    "output_features": {"action": {"type": "ACTION", "shape": [7]}},
}


# --- the mapping: what LeRobot's gym_aloha env hands its rollout -------------------------------------------------
def test_the_observation_is_what_gym_aloha_hands_lerobot():
    import gymnasium
    import gym_aloha  # noqa: F401  (registers gym_aloha/*)

    from stress.envs.aloha import AlohaEnv

    stock = gymnasium.make("gym_aloha/AlohaTransferCube-v0", obs_type="pixels_agent_pos")  # LeRobot's AlohaEnv config's obs_type
    env = AlohaEnv("aloha", "transfer_cube", image_size=image_size(ALOHA_FEATURES, MAPPINGS["aloha"]))
    try:
        theirs, _ = stock.reset(seed=4)
        env.reset(4)
        ours = gym_observation(env.observe(cameras=("top",)), MAPPINGS["aloha"])
    finally:
        env.close()
        stock.close()
    assert set(ours) == {"pixels", "agent_pos"} and set(ours["pixels"]) == {"top"}  # -> observation.images.top, observation.state
    assert ours["pixels"]["top"].shape == (1, 480, 640, 3) and ours["pixels"]["top"].dtype == np.uint8  # a vector env of one
    assert np.array_equal(ours["pixels"]["top"][0], theirs["pixels"]["top"])  # the same pixels
    assert ours["agent_pos"].shape == (1, 14) and ours["agent_pos"].dtype == np.float64
    # LeRobot's preprocess_observation casts agent_pos to float32: the suite's float32 proprio gives the same numbers
    assert np.array_equal(ours["agent_pos"][0].astype(np.float32), theirs["agent_pos"].astype(np.float32))


def test_a_camera_of_another_size_is_refused_naming_it():
    obs = Observation(images={"top": np.zeros((224, 224, 3), np.uint8)}, proprio=np.zeros(14), instruction="", step=0)
    with pytest.raises(ValueError, match=r"camera 'top' is uint8 \(224, 224, 3\); the policy needs uint8 \(480, 640, 3\) \(image_size 480\)"):
        gym_observation(obs, MAPPINGS["aloha"])


@pytest.mark.parametrize("change, message", [
    (lambda c: c["input_features"].update({"observation.images.cam_high": c["input_features"].pop("observation.images.top")}),
     "needs feature 'observation.images.cam_high', which aloha does not provide; valid: observation.images.top VISUAL [3, 480, 640]"),
    (lambda c: c["input_features"]["observation.images.top"].update(shape=[3, 96, 96]), "'observation.images.top' is VISUAL [3, 96, 96]; aloha has VISUAL [3, 480, 640]"),
    (lambda c: c["input_features"]["observation.state"].update(shape=[7]), "'observation.state' is STATE [7]; aloha has STATE [14]"),
    (lambda c: c["output_features"]["action"].update(shape=[7]), "'action' is ACTION [7]; aloha has ACTION [14]"),
    (lambda c: c["input_features"].pop("observation.state"), "declares no 'observation.state' feature"),
])
def test_features_that_do_not_fit_the_simulator_are_named(change, message):
    check_features(ALOHA_FEATURES, MAPPINGS["aloha"])
    assert cameras_of(ALOHA_FEATURES, MAPPINGS["aloha"]) == ("top",)  # the handshake's cameras: the only one the episode renders
    config = copy.deepcopy(ALOHA_FEATURES)
    change(config)
    with pytest.raises(ValueError) as raised:
        check_features(config, MAPPINGS["aloha"])
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("change, message", [
    (lambda c: [f.update(shape=[3, 360, 360]) for k, f in c["input_features"].items() if "images" in k],  # LeRobot's LiberoEnv default render
     "the policy's 'observation.images.image' is VISUAL [3, 360, 360]; libero renders VISUAL [3, 64, 64], [3, 128, 128], [3, 224, 224], [3, 256, 256] (one size for every camera)"),
    (lambda c: c["input_features"]["observation.images.image2"].update(shape=[3, 128, 128]), "the policy's 'observation.images.image2' is VISUAL [3, 128, 128]; libero renders"),
    (lambda c: c["input_features"]["observation.state"].update(shape=[9]), "'observation.state' is STATE [9]; libero has STATE [8]"),
    (lambda c: c["input_features"].update({"observation.images.wrist_image": c["input_features"].pop("observation.images.image2")}),
     "needs feature 'observation.images.wrist_image', which libero does not provide; valid: observation.images.image VISUAL [3, S, S]; observation.images.image2"),
    (lambda c: c.update(type="xvla"), "an xvla policy is not mapped on libero"),
])
def test_libero_features_that_do_not_fit_are_named(change, message):
    check_features(LIBERO_FEATURES, MAPPINGS["libero"])
    assert image_size(LIBERO_FEATURES, MAPPINGS["libero"]) == 256 and cameras_of(LIBERO_FEATURES, MAPPINGS["libero"]) == ("agentview", "wrist")
    config = copy.deepcopy(LIBERO_FEATURES)
    change(config)
    with pytest.raises(ValueError) as raised:
        check_features(config, MAPPINGS["libero"])
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_libero_policy_reading_one_camera_gets_that_camera_at_its_size():
    from stress.envs import simulator_of

    assert set(MAPPINGS["libero"].image_sizes) == set(simulator_of("libero_spatial").image_sizes)  # the sizes the suite renders
    config = copy.deepcopy(LIBERO_FEATURES)
    del config["input_features"]["observation.images.image2"]
    config["input_features"]["observation.images.image"]["shape"] = [3, 64, 64]
    check_features(config, MAPPINGS["libero"])
    assert image_size(config, MAPPINGS["libero"]) == 64 and cameras_of(config, MAPPINGS["libero"]) == ("agentview",)


def test_the_libero_observation_is_laid_out_as_lerobots_libero_env_hands_it():
    """robosuite's bottom-up frames (the suite's upright ones flipped back; LeRobot's LiberoProcessorStep then rotates
    them by 180 degrees) under LeRobot's pixel keys, and robot_state's eef pos, quat and gripper qpos from the suite's
    proprio (gripper qpos 2, eef pos 3, quat 4). On a real scene against LeRobot's own env: the parity test below."""
    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for c in ("agentview", "wrist")}
    proprio = np.arange(9, dtype=np.float32) / 10
    ours = gym_observation(Observation(images=images, proprio=proprio, instruction="x", step=0), MAPPINGS["libero"], 64, ("agentview", "wrist"))
    assert set(ours) == {"pixels", "robot_state"} and set(ours["pixels"]) == {"image", "image2"}
    assert np.array_equal(ours["pixels"]["image"][0], images["agentview"][::-1]) and np.array_equal(ours["pixels"]["image2"][0], images["wrist"][::-1])
    assert ours["pixels"]["image"].flags.c_contiguous and ours["pixels"]["image"].shape == (1, 64, 64, 3)  # torch.from_numpy takes it
    state = ours["robot_state"]
    assert np.array_equal(state["gripper"]["qpos"], proprio[None, :2]) and np.array_equal(state["eef"]["pos"], proprio[None, 2:5])
    assert np.array_equal(state["eef"]["quat"], proprio[None, 5:9]) and state["eef"]["quat"].dtype == np.float64
    with pytest.raises(ValueError, match=r"camera 'wrist' is uint8 \(64, 64, 3\); the policy needs uint8 \(128, 128, 3\) \(image_size 128\)"):
        gym_observation(Observation(images=images, proprio=proprio, instruction="x", step=0), MAPPINGS["libero"], 128, ("wrist",))


def policy_dir(root: Path, config: dict | None = ALOHA_FEATURES, files=("model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json")) -> Path:
    root.mkdir(parents=True)
    if config is not None:
        (root / "config.json").write_text(json.dumps(config))
    for name in files:
        (root / name).write_bytes(b"{}")
    return root


def test_read_config_names_what_a_policy_directory_lacks(tmp_path):
    assert read_config(policy_dir(tmp_path / "ok"))["type"] == "act"
    with pytest.raises(ValueError, match="is not a directory"):
        read_config(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"is not a LeRobot policy \(no config.json, model.safetensors\)"):
        read_config(policy_dir(tmp_path / "empty", config=None, files=()))
    with pytest.raises(ValueError, match="has no policy_preprocessor.json, policy_postprocessor.json; valid: a LeRobot >= 0.4 policy directory"):
        read_config(policy_dir(tmp_path / "old", files=("model.safetensors",)))
    with pytest.raises(ValueError, match="has no policy 'type'"):
        read_config(policy_dir(tmp_path / "typeless", config={"input_features": {}}))


def test_bad_lerobot_input_exits_2_with_one_line(tmp_path):
    """Each refused before anything runs (three CLI calls: each costs the CLI's start-up)."""
    bad = copy.deepcopy(ALOHA_FEATURES)
    bad["input_features"]["observation.images.top"]["shape"] = [3, 96, 96]
    common = ("run", "--suite", "aloha", "--policy", "lerobot", "--lerobot-python", sys.executable, "--out", str(tmp_path / "out"))
    assert_user_error(run_cli(*common, "--policy-path", str(tmp_path / "nowhere")), "is not a directory")
    assert_user_error(run_cli(*common, "--policy-path", str(policy_dir(tmp_path / "bad", config=bad))), "'observation.images.top' is VISUAL [3, 96, 96]; aloha has VISUAL [3, 480, 640]")
    assert_user_error(run_cli("run", "--suite", "robosuite", "--policy", "lerobot", "--policy-path", str(policy_dir(tmp_path / "ok")), "--lerobot-python",
                              str(tmp_path / "no-python")), "no mapping for simulator 'robosuite'; valid: aloha, libero")
    assert_user_error(run_cli("run", "--suite", "libero_spatial", "--policy", "lerobot", "--policy-path", str(policy_dir(tmp_path / "aloha-on-libero")),
                              "--lerobot-python", sys.executable, "--out", str(tmp_path / "out")),
                      "needs feature 'observation.images.top', which libero does not provide; valid: observation.images.image VISUAL [3, S, S]; observation.images.image2 VISUAL [3, S, S]; "
                      "observation.state STATE [8]; action ACTION [7] (S: 64, 128, 224, 256)")
    assert not (tmp_path / "out").exists()


# --- with LeRobot's environment ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lerobot_policies(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lerobot-policies")
    subprocess.run([LEROBOT_PYTHON, str(HERE / "lerobot_policies.py"), str(out)], check=True, capture_output=True, timeout=600)
    return out


def suite_episode(path: Path, steps: int) -> tuple[list[str], np.ndarray]:
    """The suite's episode of a served LeRobot policy (aloha transfer_cube, init 0, seed 0): the sha256 of the top
    image at every decision (read off the env when the policy is queried) and the executed actions."""
    from stress.core.spec import ScenarioSpec
    from stress.envs.cache import EnvCache
    from stress.policies.cache import PolicyCache
    from stress.policies.lerobot_client import check_policy, stop_servers
    from stress.runners.episode import run_episode

    seen = []
    spec = ScenarioSpec(suite="aloha", task_id=0, init_index=0, policy="lerobot", mode="direct", seed=0, max_steps=steps, image_size=480,
                        policy_options=(("policy_path", str(path)), ("python", LEROBOT_PYTHON), ("served", check_policy(path, "aloha")), ("simulator", "aloha")))
    envs, policies = EnvCache(), PolicyCache()
    try:
        result = run_episode(spec, envs, policies, on_decision=lambda env, snapshot, decision: seen.append(hashlib.sha256(env.render("top").tobytes()).hexdigest()))
    finally:
        envs.close()
        stop_servers()
    assert result.error is None and result.steps == steps, result.error
    return seen, np.asarray(result.actions)


@needs_lerobot
@pytest.mark.parametrize("kind", ["act", "diffusion"])
def test_parity_with_lerobots_own_rollout(lerobot_policies, kind):
    """The same policy, init state (gym-aloha seed 0) and torch seed through the suite (served from LeRobot's env)
    and through LeRobot's own ``lerobot_eval.rollout`` on its own gym_aloha env: the same image bytes reach the
    policy at every step, and the same actions come out (Diffusion's observation history and noise included)."""
    steps = 6
    proc = subprocess.run([LEROBOT_PYTHON, str(HERE / "lerobot_rollout.py"), str(lerobot_policies / kind), "0", str(steps)],
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    ours_images, ours_actions = suite_episode(lerobot_policies / kind, steps)
    assert len(ours_images) == steps and ours_images == theirs["image_sha256"]  # one query per step, as LeRobot's loop
    assert np.array_equal(ours_actions.astype(np.float32), np.asarray(theirs["actions"], dtype=np.float32))


@needs_lerobot
def test_stress_run_policy_lerobot_end_to_end(lerobot_policies, tmp_path):
    out = tmp_path / "runs"
    proc = run_cli("run", "--suite", "aloha", "--policy", "lerobot", "--policy-path", str(lerobot_policies / "act"), "--lerobot-python", LEROBOT_PYTHON,
                   "--episodes", "1", "--max-steps", "3", "--perturb", "lighting:5", "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not provided by this policy (actions only)" in proc.stdout
    store = RunStore.open(next(out.iterdir()))
    rows = store.query("SELECT perturbation, error, steps, decisions, setting FROM episodes ORDER BY perturbation")
    assert [r["perturbation"] for r in rows] == ["clean", "lighting:5"] and all(r["error"] is None and r["steps"] == r["decisions"] == 3 for r in rows), rows
    assert rows[0]["setting"].startswith("direct served=lerobot:act-")
    again = run_cli("run", "--resume", str(store.path), timeout=600)
    assert again.returncode == 0 and "2 already stored" in again.stderr, again.stderr


@needs_lerobot
def test_libero_observation_parity_with_lerobots_own_libero_env(lerobot_policies, tmp_path):
    """LeRobot's own LiberoEnv (its file run here on the suite's LIBERO: tests/lerobot_libero_env.py) and the suite's
    LIBERO adapter, same task (libero_spatial 0), init state 0 and 128 px, stepped with the same 5 random actions: the
    pixels it hands LeRobot's rollout equal what the server builds from the suite's observation, byte for byte, and the
    state fields equal at float32 (what LeRobot's LiberoProcessorStep keeps); then, in LeRobot's environment, what the
    policy's preprocessor receives (every tensor and the task) is the same from both (tests/lerobot_libero_inputs.py)."""
    from lerobot_libero_env import load_libero_env_class

    from stress.envs.libero import LiberoEnv as SuiteLibero

    lerobot_env_class, get_suite = load_libero_env_class(LEROBOT_PYTHON)
    theirs_env = lerobot_env_class(get_suite("libero_spatial"), 0, "libero_spatial", obs_type="pixels_agent_pos", observation_height=128, observation_width=128)
    ours_env = SuiteLibero("libero_spatial", 0, image_size=128)
    robosuite = None

    def theirs_now() -> dict:
        """LeRobot's observation (``_format_raw_obs``, LeRobot's code, of robosuite's observation as its step left it)
        with the camera frames rendered after ``mj_forward``: the one deliberate difference. The suite forwards the
        simulation after every step (a render is a function of the state alone); LIBERO's robosuite renders right
        after mj_step, with the geometry one physics substep behind (16 of 16384 agentview pixels differ after
        settling, most of them once the arm moves). The state fields are robosuite's step-time sensor values on both
        sides. (Not ``_get_observations(force_update=True)``: a forced sample shifts robosuite's sensor sampling.)"""
        robosuite.sim.forward()
        robosuite.sim._render_context_offscreen.gl_ctx.make_current()  # robosuite does not; the suite's env has its own
        raw = dict(robosuite._get_observations())
        for camera in ("agentview", "robot0_eye_in_hand"):  # as robosuite's camera observable renders (opengl convention)
            raw[f"{camera}_image"] = robosuite.sim.render(camera_name=camera, width=128, height=128, depth=False)
        return theirs_env._format_raw_obs(raw)

    saved = {}
    try:
        theirs_env.reset(seed=0)
        robosuite = theirs_env._env.env
        ours_env.reset(0)
        rng = np.random.default_rng(0)
        for step in range(5):
            theirs, obs = theirs_now(), ours_env.observe()
            ours = gym_observation(obs, MAPPINGS["libero"], 128)
            for key in ("image", "image2"):
                assert hashlib.sha256(ours["pixels"][key][0].tobytes()).hexdigest() == hashlib.sha256(theirs["pixels"][key].tobytes()).hexdigest(), (step, key)
            for part, field in (("eef", "pos"), ("eef", "quat"), ("gripper", "qpos")):
                assert np.array_equal(ours["robot_state"][part][field][0].astype(np.float32), theirs["robot_state"][part][field].astype(np.float32)), (step, field)
            saved.update({f"ours/{step}/{c}": obs.images[c] for c in ("agentview", "wrist")} | {f"ours/{step}/proprio": obs.proprio})
            saved.update({f"theirs/{step}/pixels/{k}": v for k, v in theirs["pixels"].items()})
            saved.update({f"theirs/{step}/robot_state/{p}/{f}": np.asarray(v) for p, fields in theirs["robot_state"].items() for f, v in fields.items()})
            action = rng.uniform(-1, 1, 7)
            ours_env.step(action)
            theirs_env.step(action)
        instruction = ours_env.instruction
        assert instruction == theirs_env.task_description
    finally:
        ours_env.close()
        theirs_env.close()
    np.savez(tmp_path / "steps.npz", instruction=np.array(instruction), **saved)
    proc = subprocess.run([LEROBOT_PYTHON, str(HERE / "lerobot_libero_inputs.py"), str(lerobot_policies / "act_libero"), str(tmp_path / "steps.npz")],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(steps) == 5 and {"observation.images.image", "observation.images.image2", "observation.state", "task"} <= set(steps[0]["ours"])
    assert all(step["ours"] == step["theirs"] for step in steps), steps


@needs_lerobot
def test_stress_run_policy_lerobot_on_libero(lerobot_policies, tmp_path):
    out = tmp_path / "runs"
    proc = run_cli("run", "--suite", "libero_spatial", "--tasks", "0", "--policy", "lerobot", "--policy-path", str(lerobot_policies / "act_libero"),
                   "--lerobot-python", LEROBOT_PYTHON, "--episodes", "1", "--max-steps", "3", "--perturb", "lighting:5", "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    store = RunStore.open(next(out.iterdir()))
    rows = store.query("SELECT perturbation, error, steps, decisions, setting FROM episodes ORDER BY perturbation")
    assert [r["perturbation"] for r in rows] == ["clean", "lighting:5"] and all(r["error"] is None and r["steps"] == r["decisions"] == 3 for r in rows), rows
    assert rows[0]["setting"].startswith("direct served=lerobot:act-") and {s.image_size for s in store.specs()} == {128}  # the checkpoint's size


def test_the_lerobot_loop_bench_is_skipped_without_lerobots_python(monkeypatch):
    from stress.bench.lerobot import loop_overhead

    monkeypatch.delenv("STRESS_LEROBOT_PYTHON", raising=False)
    assert set(loop_overhead()) == {"skipped"}


@needs_lerobot
def test_the_lerobot_loop_bench_times_both_loops_on_the_same_episode():
    """Figures are reported in docs/benchmarks.md, never asserted here: both loops ran their timed episodes."""
    from stress.bench.lerobot import loop_overhead

    figures = loop_overhead(steps=3, repeats=1)
    assert len(figures["lerobot_rollout_s"]) == len(figures["suite_episode_s"]) == 1 and figures["steps"] == 3
    assert np.isfinite(figures["overhead"]) and figures["lerobot_median_s"] > 0
