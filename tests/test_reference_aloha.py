"""The reference model on ALOHA's contract: the contract travels in the checkpoint, a tiny real ALOHA training run
gives a checkpoint that `stress run --suite aloha --policy reference` drives for one chunk, and a checkpoint of
another simulator fails with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stress.policies.reference.model import ALOHA, LIBERO, Architecture, ReferenceNet
from stress.policies.reference.policy import SHIPPED_CHECKPOINT, load_checkpoint
from stress.training.aloha_data import aloha_episode
from stress.training.build import aloha_jobs

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, env=None, timeout=300):
    full = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "stress.cli", *args], capture_output=True, text=True, env=full, cwd=ROOT, timeout=timeout)


def test_contract_is_read_from_the_checkpoint(tmp_path):
    # the shipped LIBERO file has no contract: it is LIBERO's
    assert "contract" not in torch.load(SHIPPED_CHECKPOINT, map_location="cpu", weights_only=True)
    assert load_checkpoint(SHIPPED_CHECKPOINT)[1]["contract"] == LIBERO
    arch = Architecture(width=32, blocks=1, channels=(8, 8, 8, 8), embed=16)
    net = ReferenceNet(arch, ALOHA)
    assert set(net.encoders) == set(ALOHA.cameras) and net.dim == 11 * 14 + 14 + 64 + 1  # 11 knots of the 50-step chunk
    blob = {"format": "stress-reference/1", "architecture": arch.to_dict(), "contract": ALOHA.to_dict(),
            "normalisation": {"proprio_mean": [0.0] * 14, "proprio_std": [1.0] * 14, "delta_std": [1.0] * 14},
            "instructions": [], "state_dict": net.state_dict(), "manifest": "{}"}
    torch.save(blob, tmp_path / "aloha.pt")
    loaded, meta = load_checkpoint(tmp_path / "aloha.pt", "aloha")
    assert meta["contract"] == ALOHA and loaded.slices["actions"] == slice(0, 154)
    # the knots are chunk steps, and the chunk their linear interpolation: a chunk through knots and back is exact on a line
    line = np.linspace(-1, 1, 50)[:, None].repeat(14, axis=1)
    assert np.allclose(ALOHA.from_knots(ALOHA.to_knots(line.reshape(1, -1)))[0], line)
    assert np.array_equal(LIBERO.from_knots(LIBERO.to_knots(line[:16, :7].reshape(1, -1)))[0], line[:16, :7])


def test_aloha_shard_labels_are_the_clean_plan_and_futures_a_chunk_later():
    from stress.training.aloha_data import training_env

    env = training_env(0)
    try:
        shard = aloha_episode(env, 101, "sabotage", seed=3)  # a training-only pose (gym-aloha's sampler, seed 101)
    finally:
        env.close()
    steps, future = shard["decision_steps"], shard["future_index"]
    assert shard["top"].shape[1:] == (64, 64, 3) and len(shard["top"]) == len(steps)
    assert np.all(steps[future] - steps[: len(future)] == 50)
    assert shard["label_actions"].shape == (len(future), 50, 14)
    assert not shard["label_valid"].all()  # the sabotaged chunk has no expert label
    clean = shard["label_valid"]
    # labels are the plan: the same steps of consecutive decisions agree (the plan is indexed by the step)
    assert np.allclose(shard["label_actions"][0, 10:], shard["label_actions"][1, :40])
    assert clean.sum() < len(clean)
    # 11 knots hold every chunk of a real plan (the rendered steps' labels) to 0.015 rad
    labels = shard["label_actions"].reshape(len(future), -1)
    assert np.abs(ALOHA.from_knots(ALOHA.to_knots(labels)) - shard["label_actions"]).max() < 0.015
    jobs = aloha_jobs(inits=(0, 101))
    assert [(j.init_index, j.variant) for j in jobs] == [(0, "demo"), (101, "demo"), (0, "noisy"), (101, "sabotage")]


def test_tiny_aloha_training_run_drives_one_chunk_through_the_cli(tmp_path):
    out, data = tmp_path / "model", tmp_path / "data"
    trained = _cli("train-reference", "--suite", "aloha", "--inits", "0", "--steps", "2", "--workers", "1", "--out", str(out), "--data", str(data))
    assert trained.returncode == 0, trained.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["contract"]["simulator"] == "aloha" and manifest["data"]["episodes"] == 2  # demo + noisy on init 0
    assert load_checkpoint(out / "reference.pt", "aloha")[1]["contract"] == ALOHA
    env = {"STRESS_REFERENCE_CHECKPOINT_ALOHA": str(out / "reference.pt")}
    run = _cli("run", "--suite", "aloha", "--tasks", "0", "--episodes", "1", "--policy", "reference", "--mode", "direct", "--max-steps", "50",
               "--true-futures", "none", "--out", str(tmp_path / "runs"), env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    import pyarrow.parquet as pq

    folder = next((tmp_path / "runs").iterdir())
    rows = pq.read_table(folder / "episodes.parquet").to_pylist()
    assert len(rows) == 1 and rows[0]["error"] is None and rows[0]["steps"] == 50
    # the ALOHA checkpoint on a LIBERO episode: one line, exit 2
    wrong = _cli("run", "--suite", "libero_spatial", "--tasks", "0", "--episodes", "1", "--policy", "reference", "--max-steps", "16",
                 "--out", str(tmp_path / "runs2"), env={"STRESS_REFERENCE_CHECKPOINT": str(out / "reference.pt")})
    assert wrong.returncode == 2 and "is for aloha" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, needle", [
    (("run", "--suite", "aloha", "--tasks", "0", "--episodes", "1", "--policy", "reference", "--max-steps", "50"), "is for libero"),
    (("train-reference", "--suite", "aloha", "--inits", "35"), "--inits 35 invalid for aloha"),
    (("train-reference", "--suite", "robosuite"), "unknown --suite 'robosuite'"),
])
def test_mismatches_are_one_line_errors(tmp_path, args, needle):
    env = {"STRESS_REFERENCE_CHECKPOINT_ALOHA": str(SHIPPED_CHECKPOINT)}  # LIBERO's weights for ALOHA episodes
    result = _cli(*args, "--out", str(tmp_path), env=env)
    assert result.returncode == 2 and needle in result.stderr, result.stderr[-1000:]
    assert len(result.stderr.strip().splitlines()) == 1
