"""`stress run` / `show` / `replay` / `list` through the real CLI on a real LIBERO scene."""

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import imageio.v3 as iio
import numpy as np
import pytest

from conftest import ROOT, run_cli

REQUIRED_COLUMNS = {"episode_key", "suite", "task_id", "init_index", "policy", "mode", "perturbations", "severity", "seed", "success", "steps", "wall_s", "error"}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    proc = run_cli("run", "--perturb", "occlusion:2", "--episodes", "2", "--max-steps", "32", "--mode", "both", "--candidates", "4",
                   "--counterfactual-rollouts", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run, proc


def test_run_writes_the_documented_tables(short_run):
    run, proc = short_run
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["format"] == "stress-run/1" and len(manifest["specs"]) == 8  # 2 inits x (clean, occlusion) x 2 modes
    assert {s["policy"] for s in manifest["specs"]} == {"reference"}  # the built-in default
    assert manifest["versions"]["mujoco"].startswith("3.3")
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{run}/episodes.parquet') ORDER BY init_index, perturbation").fetchall()
    columns = {d[0] for d in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{run}/episodes.parquet')").fetchall()}
    assert REQUIRED_COLUMNS <= columns
    assert len(rows) == 8
    table = duckdb.sql(f"SELECT perturbation, severity, error, steps, perturbations, episode_key FROM read_parquet('{run}/episodes.parquet')").fetchall()
    for label, severity, error, steps, perturbations, key in table:
        assert error is None
        assert steps == 32
        assert (run / "actions" / f"{key}.npz").is_file()
        records = json.loads(perturbations)
        if label == "clean":
            assert severity == 0 and records == []
        else:
            (record,) = records
            assert label == "occlusion:2" and severity == 2
            assert record["params"]["holes_px"]["agentview"]  # realised parameters, in pixels
            assert record["realisation"]["changed_fraction"]["agentview"] > 0
    assert "occlusion:2" in proc.stdout and "clean" in proc.stdout
    picture = iio.imread(run / "degradation.png")  # the report as one picture, next to degradation.json
    assert picture.shape[1] > 1000 and len(np.unique(picture[..., :3].reshape(-1, 3), axis=0)) > 50


DECISION_COLUMNS = {"episode_key", "step", "candidate", "chosen", "pred_value", "true_outcome", "future_psnr", "future_ssim",
                    "baseline_psnr", "baseline_ssim", "aggregation", "n_candidates"}


def test_decisions_carry_the_counterfactual_ground_truth(short_run):
    run, proc = short_run
    table = f"read_parquet('{run}/decisions.parquet')"
    columns = {d[0] for d in duckdb.sql(f"DESCRIBE SELECT * FROM {table}").fetchall()}
    assert DECISION_COLUMNS <= columns
    # every executed decision's predicted future was compared with the true one; the first decision's chunks were rolled out
    assert duckdb.sql(f"SELECT count(*) FROM {table} WHERE chosen AND (future_psnr IS NULL OR baseline_ssim IS NULL)").fetchall()[0][0] == 0
    assert duckdb.sql(f"SELECT count(*) FROM {table} WHERE NOT chosen AND future_psnr IS NOT NULL").fetchall()[0][0] == 0
    missing = duckdb.sql(f"SELECT count(*) FROM {table} WHERE step = 0 AND true_outcome IS NULL").fetchall()[0][0]
    assert missing == 0 and duckdb.sql(f"SELECT count(*) FROM {table} WHERE step > 0 AND true_outcome IS NOT NULL").fetchall()[0][0] == 0
    # under the occlusion patch the future error is also split into the occluded pixels and the rest
    split = duckdb.sql(f"SELECT e.perturbation, count(d.future_psnr_occluded), count(d.future_psnr_visible), count(*) FROM {table} d "
                       f"JOIN read_parquet('{run}/episodes.parquet') e USING (episode_key) WHERE d.chosen GROUP BY 1 ORDER BY 1").fetchall()
    assert split[0][:3] == ("clean", 0, 0) and split[1][0] == "occlusion:2" and split[1][1] == split[1][2] == split[1][3] > 0
    per_decision = duckdb.sql(f"SELECT n_candidates, count(*) FROM {table} WHERE step = 0 GROUP BY 1 ORDER BY 1").fetchall()
    assert per_decision == [(1, 4), (4, 20)]  # 4 direct episodes x 1 row; 4 planning episodes x (executed + 4 candidates)
    shown = run_cli("show", str(run)).stdout  # `stress run` itself ends with a short headline; the tables are show's
    for title in ("world model: predicted vs true future", "value predictions vs what happened", "best-of-N selection", "planning vs the direct policy"):
        assert title in shown
    assert json.loads((run / "degradation.json").read_text())["selection"][0]["measured"] == 2


def test_compare_two_runs_on_common_scenarios(short_run, tmp_path):
    run, _ = short_run
    proc = run_cli("compare", str(run), str(run))
    assert proc.returncode == 0, proc.stderr
    assert "8 common scenarios" in proc.stdout and "B - A" in proc.stdout and "regret A" in proc.stdout
    other = run_cli("run", "--policy", "expert", "--suite", "libero_object", "--episodes", "1", "--max-steps", "4", "--out", str(tmp_path))
    assert other.returncode == 0, other.stderr
    (other_run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    proc = run_cli("compare", str(run), str(other_run))
    assert proc.returncode == 2 and "share no scenario" in proc.stderr and "Traceback" not in proc.stderr


def test_show_summarises_against_clean_on_same_inits(short_run):
    run, _ = short_run
    proc = run_cli("show", str(run), "--episodes")
    assert proc.returncode == 0, proc.stderr
    assert "occlusion:2" in proc.stdout and "n=2" in proc.stdout  # paired with 2 clean episodes
    keys = duckdb.sql(f"SELECT episode_key FROM read_parquet('{run}/episodes.parquet')").fetchall()
    assert all(k in proc.stdout for (k,) in keys)


def test_replay_reproduces_the_recorded_outcome(short_run):
    run, _ = short_run
    key, steps = duckdb.sql(f"SELECT episode_key, steps FROM read_parquet('{run}/episodes.parquet') WHERE perturbation <> 'clean' LIMIT 1").fetchall()[0]
    proc = run_cli("replay", str(run), key)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "matches" in proc.stdout
    video = run / "media" / f"{key}.mp4"
    frames = iio.imread(video)
    assert frames.shape[0] == (steps + 1) // 2 + 1  # the reset scene, every other step at 10 fps, and always the final state
    assert frames.shape[1:] == (128, 256, 3)  # agentview | wrist at the policy's 128 px


def test_list_commands():
    perturbations = run_cli("list", "perturbations")
    assert perturbations.returncode == 0 and "occlusion" in perturbations.stdout and "pixels" in perturbations.stdout
    policies = run_cli("list", "policies")
    assert policies.returncode == 0 and "expert" in policies.stdout and "reference" in policies.stdout and "planning" in policies.stdout
    suites = run_cli("list", "suites")
    assert suites.returncode == 0 and "libero_object: 10 tasks, 280 max steps" in suites.stdout


def test_sigkill_then_resume_stores_every_episode_exactly_once(tmp_path):
    out = tmp_path / "results"
    args = [sys.executable, "-m", "stress.cli", "run", "--policy", "expert", "--perturb", "occlusion:1", "--episodes", "4", "--max-steps", "24", "--out", str(out)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    parts = []
    while time.time() < deadline and proc.poll() is None:
        parts = list(out.glob("*/parts/*.parquet"))
        if len(parts) >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(parts) >= 2, "the run stored nothing before the kill"
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    before = {p.name: p.read_bytes() for p in (run / "parts").glob("*.parquet")}
    assert len(before) < 8, "the run finished before the kill; nothing to resume"
    resumed = run_cli("run", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(before)} already stored" in resumed.stderr
    keys = [k for (k,) in duckdb.sql(f"SELECT episode_key FROM read_parquet('{run}/episodes.parquet')").fetchall()]
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(keys) == len(set(keys)) == len(manifest["specs"]) == 8
    for name, data in before.items():  # finished episodes were not re-run
        assert (run / "parts" / name).read_bytes() == data
    assert not list(run.rglob("*.tmp"))


def test_replay_reproduces_a_mid_chunk_event(tmp_path):
    """Events count steps into the executed chunk: the replay must re-create the chunk boundaries."""
    scenario = tmp_path / "push.json"
    push = {"name": "mid_chunk_push", "severity": 3, "seed": 1,
            "params": {"object": "target", "trigger": "chunk_step", "chunk": 1, "step": 5, "action": "move",
                       "displacement_m": 0.03, "direction_deg": 90.0}}
    scenario.write_text(json.dumps([{"suite": "libero_object", "task_id": 0, "init_index": 2, "perturbations": [push]}]))
    out = tmp_path / "results"
    proc = run_cli("run", "--scenario", str(scenario), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    key, record = duckdb.sql(f"SELECT episode_key, perturbations FROM read_parquet('{run}/episodes.parquet')").fetchall()[0]
    (realised,) = json.loads(record)
    assert realised["realisation"]["fired"] and realised["realisation"]["chunk"] == 1
    replayed = run_cli("replay", str(run), key)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "matches" in replayed.stdout


def test_composed_perturbations_are_recorded_separately(tmp_path):
    out = tmp_path / "results"
    proc = run_cli("run", "--policy", "expert", "--perturb", "lighting:3", "--perturb", "occlusion:2", "--episodes", "1", "--max-steps", "16", "--no-baseline", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    label, severity, records = duckdb.sql(f"SELECT perturbation, severity, perturbations FROM read_parquet('{run}/episodes.parquet')").fetchall()[0]
    assert label == "lighting:3+occlusion:2" and severity == 3
    lighting, occlusion = json.loads(records)
    assert lighting["name"] == "lighting" and lighting["layer"] == "model" and lighting["realisation"]["image_change"]
    assert occlusion["name"] == "occlusion" and occlusion["realisation"]["changed_fraction"]["agentview"] > 0


def test_a_perturbation_with_no_valid_scene_exits_2(tmp_path):
    scenario = tmp_path / "into_the_plate.json"
    shift = {"name": "object_pose", "severity": 1, "params": {"mode": "shift", "object": "target", "dx": 0.0, "dy": -0.5, "dyaw": 0.0}}
    scenario.write_text(json.dumps([{"suite": "libero_spatial", "task_id": 0, "init_index": 0, "perturbations": [shift]}]))
    proc = run_cli("run", "--scenario", str(scenario), "--out", str(tmp_path / "results"))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]  # the run is stored first; the verdict is the last line
    assert last.startswith("stress: error: perturbation object_pose:1 gave no valid scene") and "invalid_scene" in last
    assert "Traceback" not in proc.stderr


def test_denoising_study_varies_one_knob_on_identical_scenarios(tmp_path):
    proc = run_cli("study", "denoising", "--episodes", "1", "--max-steps", "16", "--candidates", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rows = json.loads((run / "study.json").read_text())
    settings = {r["setting"] for r in rows}
    assert settings == {f"{mode} steps={n}" for mode in ("direct", "best-of-2 average") for n in (1, 5, 10)}
    assert all(r["episodes"] == 1 and r["latency_ms"] > 0 and r["future_psnr"] > 0 for r in rows)
    specs = json.loads((run / "manifest.json").read_text())["specs"]
    assert {(s["init_index"], s["task_id"], s["seed"]) for s in specs} == {(0, 0, 0)}  # identical scenarios
    assert iio.imread(run / "study.png").shape[2] in (3, 4)
    assert "study denoising" in proc.stdout


def test_policy_seeds_vary_only_the_policy(tmp_path):
    proc = run_cli("run", "--policy", "expert", "--perturb", "occlusion:1", "--no-baseline", "--episodes", "1", "--max-steps", "4",
                   "--policy-seeds", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    specs = json.loads((run / "manifest.json").read_text())["specs"]
    assert sorted(s["seed"] for s in specs) == [0, 1]
    assert specs[0]["perturbations"] == specs[1]["perturbations"]  # the same scene for both policy seeds
    assert "seed sensitivity" in run_cli("show", str(run)).stdout
