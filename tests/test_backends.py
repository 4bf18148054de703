"""Runner backends: scene-affine dispatch, the local pool and Ray actors storing the same episodes, crashed workers,
resume across backends, and bad backend input (docs/ray.md)."""

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import numpy as np
import pytest

from conftest import ROOT, run_cli
from stress.core.spec import ScenarioSpec
from stress.envs.cache import scene_of
from stress.runners.schedule import SceneScheduler
from test_cli_errors import assert_user_error

RUN = ["run", "--policy", "expert", "--tasks", "0,1", "--episodes", "2", "--max-steps", "24", "--workers", "2"]
COMPARED = ("episode_key", "success", "steps", "decisions", "failure", "progress", "error", "perturbations", "spec")


def _drain(scheduler, order):
    """Simulate the workers taking turns as they free up; returns each worker's sequence of scenes."""
    seen = {w: [] for w in range(len(scheduler.workers))}
    for w in order:
        spec = scheduler.take(w)
        if spec is not None:
            seen[w].append(scene_of(spec)[1])
            scheduler.finished(w, spec, 3.0)
    return seen


def test_scheduler_keeps_each_worker_on_its_scene():
    specs = [ScenarioSpec(suite="libero_spatial", task_id=t, init_index=i, policy="expert") for i in range(8) for t in (0, 1)]
    scheduler = SceneScheduler(2)
    scheduler.add(specs)
    seen = _drain(scheduler, [0, 1] * 8)
    assert len(scheduler) == 0
    assert sorted(map(set, seen.values()), key=min) == [{0}, {1}]  # no worker ever switched scenes: two builds in all
    # one scene, two workers: the second one joins (seven episodes of backlog outweigh a build), and only once
    scheduler = SceneScheduler(2)
    scheduler.add([s for s in specs if s.task_id == 0])
    seen = _drain(scheduler, [0, 1] * 4)
    assert len(seen[0]) == len(seen[1]) == 4
    # the last pending episode of a scene another worker holds is not worth a build to a worker holding another scene
    scheduler = SceneScheduler(2)
    scheduler.add(specs[1:2])
    scheduler.finished(1, scheduler.take(1), 3.0)
    scheduler.add([specs[0], specs[2]])
    assert scheduler.take(0).task_id == 0
    assert scheduler.take(1) is None
    # but a worker that holds nothing yet (just started) joins: its build is due anyway (a warm-up per worker)
    scheduler = SceneScheduler(2)
    scheduler.add([specs[0], specs[2]])
    assert scheduler.take(0) is not None and scheduler.take(1) is not None


def _rows(run):
    cols = ", ".join(COMPARED)
    return {r[0]: r for r in duckdb.sql(f"SELECT {cols} FROM read_parquet('{run}/episodes.parquet')").fetchall()}


def _actions(run, key):
    with np.load(run / "actions" / f"{key}.npz") as data:
        return data["actions"], data["decision_steps"]


def _only_run(out):
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def test_ray_actors_store_the_local_pools_episodes_and_survive_crashes(tmp_path):
    """A two-actor local Ray cluster stores the rows and actions the two-process local pool stores. In both, a worker
    that dies on an episode is replaced and the episode run again; one that dies on it twice stores worker_crashed."""
    local_out, ray_out, crash = tmp_path / "local", tmp_path / "ray", tmp_path / "crash"
    crash.mkdir()
    env = {**os.environ, "STRESS_TEST_CRASH_DIR": str(crash)}
    # the keys, from a dry manifest: the specs the CLI makes for these arguments
    from stress.cli import parse_args
    from stress.cli.run import specs_from_args

    keys = [s.key for s in specs_from_args(parse_args(RUN))[0]]
    assert len(keys) == 4
    (crash / keys[1]).write_text("1")
    local = subprocess.run([sys.executable, "-m", "stress.cli", *RUN, "--out", str(local_out)], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    assert (crash / keys[1]).read_text() == "0", "the local worker never crashed"
    (crash / keys[1]).write_text("1")
    (crash / keys[2]).write_text("2")
    ray = subprocess.run([sys.executable, "-m", "stress.cli", *RUN, "--backend", "ray", "--out", str(ray_out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ray.returncode == 0, ray.stderr
    assert "Traceback" not in ray.stderr
    local_run, ray_run = _only_run(local_out), _only_run(ray_out)
    local_rows, ray_rows = _rows(local_run), _rows(ray_run)
    assert sorted(local_rows) == sorted(ray_rows) == sorted(keys)  # nothing lost, nothing duplicated
    assert len(list((ray_run / "parts").glob("*.parquet"))) == 4
    assert ray_rows[keys[2]][COMPARED.index("error")] == "worker_crashed"
    for key in keys:
        if key != keys[2]:
            assert ray_rows[key] == local_rows[key]
            for a, b in zip(_actions(local_run, key), _actions(ray_run, key)):
                np.testing.assert_array_equal(a, b)
    assert local_rows[keys[1]][COMPARED.index("error")] is None  # retried after its crash, and then ran normally
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_killed_local_run_resumes_on_ray(tmp_path):
    out = tmp_path / "results"
    args = [sys.executable, "-m", "stress.cli", *RUN, "--workers", "1", "--out", str(out)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, parts = time.time() + 600, []
    while time.time() < deadline and proc.poll() is None:
        parts = list(out.glob("*/parts/*.parquet"))
        if parts:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run = _only_run(out)
    before = {p.name: p.read_bytes() for p in (run / "parts").glob("*.parquet")}
    assert 1 <= len(before) < 4, "nothing to resume"
    resumed = run_cli("run", "--resume", str(run), "--backend", "ray", "--workers", "2", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(before)} already stored" in resumed.stderr
    keys = [k for (k,) in duckdb.sql(f"SELECT episode_key FROM read_parquet('{run}/episodes.parquet')").fetchall()]
    assert len(keys) == len(set(keys)) == 4
    for name, data in before.items():  # stored episodes were not run again
        assert (run / "parts" / name).read_bytes() == data


@pytest.mark.parametrize("args, fragments", [
    (["--backend", "spark"], ["'spark'", "local, ray"]),
    (["--ray-address", "127.0.0.1:6379"], ["--backend ray"]),
    (["--backend", "ray", "--ray-address", "127.0.0.1:1"], ["127.0.0.1:1", "ray start --head"]),
    (["--backend", "ray", "--ray-address", "nowhere"], ["'nowhere'", "HOST:PORT"]),
    (["--backend", "ray", "--ray-gpus", "64"], ["cannot place", "64 GPU", "lower --workers or --ray-gpus"]),
])
def test_bad_backend_input_exits_2(args, fragments, tmp_path):
    # the three commands share the flags (stress.cli.execution.runner); search builds its runner on its own path, so one case checks it too
    for command in (["run", "--policy", "expert"], ["search", "--property", "succeeds", "--policy", "expert"])[: 2 if "127.0.0.1:1" in args else 1]:
        assert_user_error(run_cli(*command, *args, "--out", str(tmp_path)), *fragments)
    assert not list(tmp_path.iterdir()), "a run folder was written"


def test_backend_ray_without_ray_installed(tmp_path):
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(fake.parent)])}
    proc = subprocess.run([sys.executable, "-m", "stress.cli", "study", "aggregation", "--backend", "ray", "--out", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert_user_error(proc, "pip install 'stress[ray]'", "--backend local")


def test_a_killed_local_search_resumes_on_ray(tmp_path):
    from test_search import _kill_when, _parts, _start

    proc = _start(tmp_path, "--budget", "3", "--max-findings", "0")
    _kill_when(proc, tmp_path, parts=2)
    run = next(tmp_path.iterdir())
    before = _parts(tmp_path)
    resumed = run_cli("search", "--resume", str(run), "--backend", "ray")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((run / "search.json").read_text())
    assert report["runs"]["search"]["evaluations"] == 3
    assert report["episodes_run"] == _parts(tmp_path) - before  # the resumed search ran exactly what was missing
    assert {k for row in report["log"] for k in row["episode_keys"]} == {p.stem for p in (run / "parts").glob("*.parquet")}


def test_a_dead_ray_node_ends_the_run_in_one_line_and_resume_finishes_it(tmp_path):
    """The run's private Ray node killed mid-run (its raylet and the actors' processes): the driver says so in one line, keeps what finished,
    exits non-zero, and a local --resume completes the run (docs/ray.md)."""
    import psutil

    out = tmp_path / "results"
    args = [sys.executable, "-m", "stress.cli", *RUN, "--workers", "1", "--backend", "ray", "--out", str(out)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not list(out.glob("*/parts/*.parquet")):
            time.sleep(0.2)
        raylets = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "raylet"]
        assert raylets, "no raylet under the driver"
        for raylet in raylets:  # the node dies: its raylet and the actors' worker processes under it
            doomed = [raylet, *raylet.children(recursive=True)]
            for process in doomed:
                process.kill()
        _, stderr = proc.communicate(timeout=300)  # never waits forever on the dead node
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode not in (0, None), stderr[-2000:]
    assert "Ray" in stderr and "--resume" in stderr and "Traceback" not in stderr, stderr[-2000:]
    run = _only_run(out)
    stored = len(list((run / "parts").glob("*.parquet")))
    assert 1 <= stored < 4
    resumed = run_cli("run", "--resume", str(run), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{stored} already stored" in resumed.stderr
    keys = [k for (k,) in duckdb.sql(f"SELECT episode_key FROM read_parquet('{run}/episodes.parquet')").fetchall()]
    assert len(keys) == len(set(keys)) == 4
