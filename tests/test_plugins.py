"""A third-party package extends stress through entry points alone: tests/data/stress_plugin_example declares a
perturbation family, a policy backend and a property; installed into a folder of its own (no network, no edit to
any module of the suite), the real CLI lists them and runs an episode with them."""

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """The example plug-in installed with pip into a temporary target (built from a copy: the build writes beside its sources)."""
    work = tmp_path_factory.mktemp("plugin")
    source, target = work / "source", work / "site"
    shutil.copytree(ROOT / "tests" / "data" / "stress_plugin_example", source)
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target),
                              str(source)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    return target


def cli(plugin_path, *args, timeout=600):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(plugin_path), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "stress.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_the_cli_lists_the_plugins_family_policy_and_property(plugin_path):
    for what, name, words in (("perturbations", "tint", "red tint on the camera images"), ("policies", "still", "Holds still"),
                              ("properties", "short_episode", "ends in under 50 steps")):
        listed = cli(plugin_path, "list", what, timeout=300)
        assert listed.returncode == 0 and name in listed.stdout and words in listed.stdout, listed.stdout + listed.stderr[-2000:]


def test_a_run_with_the_plugins_family_and_policy(plugin_path, tmp_path):
    out = tmp_path / "results"
    run = cli(plugin_path, "run", "--suite", "libero_spatial", "--tasks", "0", "--episodes", "1", "--perturb", "tint:3", "--policy", "still",
              "--max-steps", "8", "--out", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    rows = pq.read_table(next(out.iterdir()) / "episodes.parquet").to_pylist()
    assert sorted(r["perturbation"] for r in rows) == ["clean", "tint:3"] and {r["policy"] for r in rows} == {"still"}
    assert all(r["error"] is None and r["steps"] == 8 for r in rows)
    tinted = json.loads(next(r for r in rows if r["perturbation"] == "tint:3")["perturbations"])[0]
    assert tinted["params"] == {"strength": 0.3} and min(tinted["realisation"]["mean_abs_change"].values()) > 5  # the images really changed


def test_a_plugin_name_that_clashes_with_a_builtin_is_a_one_line_error(plugin_path, tmp_path):
    """A second package declaring a family under a built-in's name: exit 2 naming both."""
    clash = tmp_path / "clash"
    dist = clash / "stress_clash-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: stress-clash\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[stress.families]\nocclusion = stress_plugin_example:Tint\n")
    env_path = os.pathsep.join((str(clash), str(plugin_path)))
    listed = cli(env_path, "list", "perturbations", timeout=300)
    assert listed.returncode == 2 and "Traceback" not in listed.stderr, listed.stderr[-2000:]
    assert "perturbation 'occlusion' is declared twice: built-in perturbations.occlusion" in listed.stderr
    assert "plug-in stress_plugin_example:Tint (package stress-clash" in listed.stderr
