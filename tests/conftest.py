import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one xdist worker per core: torch's own threads (in the worker and in the CLI processes it
    # starts, which inherit this) would only compete with the other worker (a training test took 3.6x longer)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def spatial_env():
    """One real LIBERO scene (libero_spatial task 0), shared: building one costs seconds."""
    from stress.envs.libero import LiberoEnv

    env = LiberoEnv("libero_spatial", 0)
    yield env
    env.close()


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "stress.cli", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    """``stress serve --port 0 ARGS`` in a subprocess: the process and the ws:// address it announced."""
    proc = subprocess.Popen([sys.executable, "-m", "stress.cli", "serve", "--port", "0", *args], cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    line = proc.stderr.readline()
    match = re.search(r"ws://[\d.]+:\d+", line)
    assert match, line + proc.stderr.read()
    return proc, match.group(0)


def lit_run_show_replay(tmp_path: Path, suite: str, policy: str) -> list[dict]:
    """The issue's end-to-end path on one task of a suite: ``stress run`` under lighting severity 5 with
    ``policy``, ``show`` and ``replay`` of the lit episode (checked); returns the stored rows."""
    import json

    import pyarrow.parquet as pq

    out = tmp_path / "results"
    run = run_cli("run", "--suite", suite, "--tasks", "0", "--episodes", "1", "--perturb", "lighting", "--severities", "5",
                  "--policy", policy, "--out", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    folder = next(out.iterdir())
    shown = run_cli("show", str(folder), timeout=300)
    assert shown.returncode == 0 and policy in shown.stdout and "lighting:5" in shown.stdout
    rows = pq.read_table(folder / "episodes.parquet").to_pylist()
    assert sorted(r["perturbation"] for r in rows) == ["clean", "lighting:5"] and {r["suite"] for r in rows} == {suite}
    lit = next(r for r in rows if r["perturbation"] != "clean")
    assert max(json.loads(lit["perturbations"])[0]["realisation"]["image_change"].values()) > 0.5  # the lights really changed the views
    replayed = run_cli("replay", str(folder), lit["episode_key"], timeout=600)
    assert replayed.returncode == 0 and "matches" in replayed.stdout, replayed.stdout + replayed.stderr[-1000:]
    return rows


def privileged_episode(env, policy, init: int, on_decision=None) -> tuple[bool, int]:
    """A privileged policy (no images) driven straight on an env, chunk by chunk: (success, steps).
    ``on_decision(decision)`` sees every decision (e.g. to check its chunk's shape)."""
    env.reset(init)
    policy.reset(env.instruction, init)
    while env.step_count < env.max_steps:
        decision = policy.act(env.observe(render=False))
        if on_decision:
            on_decision(decision)
        for action in decision.actions:
            if env.step(action):
                return True, env.step_count
            if env.step_count >= env.max_steps:
                break
    return False, env.step_count
