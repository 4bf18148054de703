"""The search and the dynamics family on ALOHA, through the public interfaces."""

import json

import pyarrow.parquet as pq

from conftest import run_cli
from stress.core.spec import PerturbationSpec
from stress.core.spec import ScenarioSpec
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.runners.episode import run_episode


def test_dynamics_on_aloha_scales_what_the_scene_has_and_says_what_it_has_not():
    envs = EnvCache()
    try:
        def run(params):
            spec = ScenarioSpec("aloha", 0, 0, (PerturbationSpec("dynamics", 3, params=params),), policy="aloha-expert", image_size=64, max_steps=50)
            return run_episode(spec, envs, PolicyCache())

        # ALOHA's joints carry no passive damping (its position actuators hold the arms): nothing to scale
        only_damping = run({"damping_scale": 4.0})
        assert only_damping.error == "not_realised: dynamics changed nothing: this scene has no damping to scale"
        both = run({"friction_scale": 2.5, "damping_scale": 4.0})
        assert both.error is None
        record = both.perturbations[0]["realisation"]
        assert record["not_applicable"] == ["damping_scale"] and abs(record["friction_scale"] - 2.5) < 1e-9
    finally:
        envs.close()


def test_search_on_aloha_runs_the_expert_at_the_simulators_image_size(tmp_path):
    proc = run_cli("search", "--suite", "aloha", "--tasks", "0", "--inits", "0-1", "--families", "dynamics,lighting", "--policy", "aloha-expert",
                   "--property", "succeeds", "--budget", "3", "--max-findings", "1", "--sampler", "ce", "--out", str(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = next(tmp_path.iterdir())
    report = json.loads((folder / "search.json").read_text())
    assert report["runs"]["search"]["evaluations"] == 3 and report["runs"]["search"]["invalid"] == 0
    rows = pq.read_table(folder / "episodes.parquet").to_pylist()
    assert rows and {r["suite"] for r in rows} == {"aloha"} and {json.loads(r["spec"])["image_size"] for r in rows} == {224}
