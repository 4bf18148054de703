"""Bad input: exit code 2, one line naming the bad value and the valid ones, no traceback."""

import json

import pytest

from conftest import run_cli


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["run", "--perturb", "smoke"], ["'smoke'", "occlusion"]),
        (["run", "--perturb", "occlusion:7"], ["7", "0-5"]),
        (["run", "--perturb", "occlusion:high"], ["'high'", "0-5"]),
        (["run", "--suite", "libero_101"], ["'libero_101'", "libero_spatial"]),
        (["run", "--tasks", "12"], ["12", "0-9"]),
        (["run", "--policy", "gpt"], ["'gpt'", "expert"]),
        (["run", "--policy", "expert", "--mode", "planning"], ["'planning'", "direct"]),
        (["run", "--mode", "planning", "--aggregation", "max"], ["'max'", "average, lcb, success_vote, majority_mean"]),
        (["run", "--mode", "planning", "--candidates", "0"], ["--candidates 0", "1 or more"]),
        (["train-reference", "--steps", "0"], ["--steps 0", "1 or more"]),
        (["train-reference", "--inits", "0,77"], ["77", "0-49"]),
        (["run", "--camera", "frontview", "--perturb", "occlusion"], ["'frontview'", "agentview, wrist, both"]),
        (["list", "widgets"], ["'widgets'", "perturbations, policies, suites"]),
        (["show", "/nonexistent/run"], ["not a run folder"]),
        (["compare", "/nonexistent/a", "/nonexistent/b"], ["not a run folder"]),
        (["run", "--counterfactual-rollouts", "-1"], ["-1", "0 or more"]),
        (["run", "--policy-seeds", "0"], ["--policy-seeds 0", "1 or more"]),
        (["run", "--true-futures", "some"], ["'some'", "executed, all, none"]),
        (["study", "guidance"], ["'guidance'", "aggregation, value-source, denoising, candidates, temperature"]),
        (["study", "candidates", "--policy", "expert"], ["'expert'", "planning"]),
        (["study", "value-source", "--checkpoints", "/nonexistent/x.pt"], ["/nonexistent/x.pt", "existing .pt files"]),
        (["train-reference", "--own-steps", "-3"], ["--own-steps -3", "0 or more"]),
        (["train-reference", "--own-rounds", "0"], ["--own-rounds 0", "1 or more"]),
        (["train-reference", "--decoder-steps", "-1"], ["--decoder-steps -1", "0 or more"]),
        (["train-reference", "--perturbed-rounds", "-1"], ["--perturbed-rounds -1", "0 or more"]),
        (["train-reference", "--recon-loss", "huber"], ["'huber'", "l1, mse"]),
    ],
)
def test_bad_input_exits_2_with_one_line(args, fragments):
    assert_user_error(run_cli(*args), *fragments)


def test_malformed_scenario_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert_user_error(run_cli("run", "--scenario", str(broken)), "not valid JSON")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"suite": "libero_spatial", "task_id": 0, "init_index": 0, "colour": "red"}]))
    assert_user_error(run_cli("run", "--scenario", str(unknown)), "colour", "valid:")
    bad_param = tmp_path / "bad_param.json"
    bad_param.write_text(json.dumps({"suite": "libero_spatial", "task_id": 0, "init_index": 0, "perturbations": [{"name": "occlusion", "params": {"area_fraction": 3}}]}))
    assert_user_error(run_cli("run", "--scenario", str(bad_param)), "area_fraction 3", "0-1")
    text_task = tmp_path / "text_task.json"
    text_task.write_text(json.dumps({"suite": "libero_spatial", "task_id": "0", "init_index": 0}))
    assert_user_error(run_cli("run", "--scenario", str(text_task)), "task_id '0'", "integer")
    bad_init = tmp_path / "bad_init.json"
    bad_init.write_text(json.dumps({"suite": "libero_spatial", "task_id": 0, "init_index": 99}))
    assert_user_error(run_cli("run", "--scenario", str(bad_init)), "99", "0-49")
    bad_option = tmp_path / "bad_option.json"
    bad_option.write_text(json.dumps({"suite": "libero_spatial", "task_id": 0, "init_index": 0, "policy": "reference", "policy_options": {"guidance_scale": 2}}))
    assert_user_error(run_cli("run", "--scenario", str(bad_option)), "'guidance_scale'", "temperature")


def test_output_folder_that_is_a_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert_user_error(run_cli("run", "--out", str(target)), "is a file")


def test_run_folder_from_another_version(tmp_path):
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"format": "stress-run/0", "specs": []}))
    assert_user_error(run_cli("show", str(run)), "stress-run/0", "stress-run/1")
    assert_user_error(run_cli("run", "--resume", str(run)), "stress-run/0")
