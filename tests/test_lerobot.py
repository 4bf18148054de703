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
from stress.policies.lerobot_server import MAPPINGS, check_features, gym_observation, read_config
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


# --- the mapping: what LeRobot's gym_aloha env hands its rollout -------------------------------------------------
def test_the_observation_is_what_gym_aloha_hands_lerobot():
    import gymnasium
    import gym_aloha  # noqa: F401  (registers gym_aloha/*)

    from stress.envs.aloha import AlohaEnv

    stock = gymnasium.make("gym_aloha/AlohaTransferCube-v0", obs_type="pixels_agent_pos")  # LeRobot's AlohaEnv config's obs_type
    env = AlohaEnv("aloha", "transfer_cube", image_size=MAPPINGS["aloha"].image_size)
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
    config = copy.deepcopy(ALOHA_FEATURES)
    change(config)
    with pytest.raises(ValueError) as raised:
        check_features(config, MAPPINGS["aloha"])
    assert message in str(raised.value) and "\n" not in str(raised.value)


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
    assert_user_error(run_cli("run", "--policy", "lerobot", "--policy-path", str(policy_dir(tmp_path / "ok")), "--lerobot-python", str(tmp_path / "no-python")),
                      "no mapping for simulator 'libero'; valid: aloha")
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
