"""Published protocols (scenarios/protocols.py), their report and verdict (stress/report/protocol.py), and
``stress run --protocol`` on a tiny subset with the built-in model."""

import json

import pytest

from conftest import run_cli
from scenarios.protocols import get_protocol, protocol_specs
from stress.core.errors import UserError
from stress.report.protocol import DOES_NOT, NOT_APPLICABLE, REPRODUCES, protocol_report, verdict

COSMOS = get_protocol("cosmos-libero")


# --- the declaration and its expansion (no simulator) ---------------------------------------------------------
def test_cosmos_libero_declares_the_papers_protocol():
    p = COSMOS
    assert p.suites == ("libero_spatial", "libero_object", "libero_goal", "libero_10")
    assert (p.trials, p.seeds, p.image_size, p.settle_steps, p.mode) == (50, (195, 196, 197), 256, 10, "direct")
    assert dict(p.step_limits) == {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}
    assert dict(p.policy_options) == {"num_denoising_steps": 5}
    assert dict(p.paper) == {"libero_spatial": 98.1, "libero_object": 100.0, "libero_goal": 98.2, "libero_10": 97.6}
    assert (p.paper_average, p.tolerance) == (98.5, 1.0)
    assert p.reference_average(p.suites) == 98.5
    assert p.reference_average(["libero_spatial", "libero_goal"]) == pytest.approx(98.15)


def test_full_expansion_is_every_task_trial_and_seed():
    specs = protocol_specs(COSMOS, "reference")
    assert len(specs) == 4 * 10 * 50 * 3 == len({s.key for s in specs})
    spatial = [s for s in specs if s.suite == "libero_spatial"]
    assert {s.max_steps for s in spatial} == {220} and {s.max_steps for s in specs if s.suite == "libero_10"} == {520}
    assert {s.init_index for s in spatial} == set(range(50)) and {s.seed for s in specs} == {195, 196, 197}
    assert {(s.image_size, s.mode, s.policy_options) for s in specs} == {(256, "direct", (("num_denoising_steps", 5),))}
    # the expert takes no denoising steps: the option is left out, not an error
    assert {s.policy_options for s in protocol_specs(COSMOS, "expert", suites=["libero_goal"], tasks=[0], trials=1)} == {()}


def test_subset_and_remote_options():
    specs = protocol_specs(COSMOS, "remote", suites=["libero_object"], tasks=[2], trials=2, max_steps=16,
                           policy_options=(("server", "ws://127.0.0.1:1"), ("served", "reference:abc")))
    assert [(s.task_id, s.init_index, s.seed, s.max_steps) for s in specs] == [(2, i, seed, 16) for i in (0, 1) for seed in (195, 196, 197)]
    assert dict(specs[0].policy_options) == {"num_denoising_steps": 5, "server": "ws://127.0.0.1:1", "served": "reference:abc"}


@pytest.mark.parametrize("kwargs, message", [
    ({"suites": ["libero_90"]}, "valid: libero_spatial, libero_object, libero_goal, libero_10"),
    ({"trials": 51}, "valid: 1-50"),
    ({"trials": 0}, "valid: 1-50"),
    ({"tasks": [10]}, "valid: 0-9"),
])
def test_bad_selection_names_the_valid_values(kwargs, message):
    with pytest.raises(UserError, match=message):
        protocol_specs(COSMOS, "reference", **kwargs)


def test_unknown_protocol_names_the_valid_ones():
    with pytest.raises(UserError, match="unknown protocol 'cosmos'; valid: cosmos-libero"):
        get_protocol("cosmos")


# --- the verdict and the report on constructed numbers ----------------------------------------------------------
def test_verdict_compares_the_average_within_the_tolerance():
    assert verdict(98.0, 98.5, 1.0)["status"] == REPRODUCES
    assert verdict(97.5, 98.5, 1.0)["status"] == REPRODUCES  # the bound itself is within
    assert verdict(99.5, 98.5, 1.0)["status"] == REPRODUCES
    assert verdict(97.4, 98.5, 1.0)["status"] == DOES_NOT
    assert verdict(99.6, 98.5, 1.0)["status"] == DOES_NOT
    partial = verdict(98.0, 98.5, 1.0, ["subset"])
    assert partial["status"] == NOT_APPLICABLE and partial["within_tolerance"] and partial["difference"] == pytest.approx(-0.5)


def _episodes(rates: dict[str, float], trials: int = 50, perturbation: str = "clean", max_steps=None, errors: int = 0) -> list[dict]:
    """Constructed episode rows: the first round(rate * n) episodes of each suite succeed."""
    rows = []
    for suite, rate in rates.items():
        keys = [(t, i, seed) for t in range(10) for i in range(trials) for seed in COSMOS.seeds]
        wins = round(rate / 100 * len(keys))
        for n, (t, i, seed) in enumerate(keys):
            rows.append({"suite": suite, "task_id": t, "init_index": i, "seed": seed, "perturbation": perturbation, "success": n < wins,
                         "error": "policy_unavailable: gone" if n >= len(keys) - errors else None,
                         "max_steps": max_steps or COSMOS.step_limit(suite)})
    return rows


def test_report_of_a_complete_run_reproduces():
    episodes = _episodes({"libero_spatial": 98.0, "libero_object": 99.0, "libero_goal": 98.0, "libero_10": 97.0})
    report = protocol_report(COSMOS, episodes)
    clean = report["clean"]
    assert clean["average"] == pytest.approx(98.0) and clean["paper_average"] == 98.5
    assert clean["verdict"]["status"] == REPRODUCES and clean["verdict"]["problems"] == []
    spatial = clean["per_suite"][0]
    assert (spatial["suite"], spatial["n"], spatial["successes"], spatial["paper"]) == ("libero_spatial", 1500, 1470, 98.1)
    assert spatial["ci95"][0] < 98.0 < spatial["ci95"][1] and spatial["paper_in_ci"]
    assert len(clean["per_task"]) == 40 and set(clean["per_seed_average"]) == {195, 196, 197}
    from stress.report.protocol import protocol_tables

    tables, layout = protocol_tables(report)
    assert set(tables) == set(layout) == {"tasks", "suites", "perturbed"} and len(tables["tasks"]) == 40 and tables["perturbed"] == []
    assert tables["suites"][0]["success"] == "98.0 % (1470/1500)" and tables["suites"][0]["paper_in_ci"] == "yes"
    assert tables["suites"][-1]["suite"] == "average" and tables["suites"][-1]["paper"] == 98.5


def test_report_says_when_it_does_not_reproduce_and_when_it_cannot_say():
    low = protocol_report(COSMOS, _episodes({s: 95.0 for s in COSMOS.suites}))
    assert low["clean"]["verdict"]["status"] == DOES_NOT and low["clean"]["verdict"]["difference"] == pytest.approx(-3.5)
    one_suite = protocol_report(COSMOS, _episodes({"libero_goal": 97.4}), suites=["libero_goal"])
    assert one_suite["clean"]["verdict"]["paper"] == 98.2 and one_suite["clean"]["verdict"]["status"] == REPRODUCES
    short = protocol_report(COSMOS, _episodes({"libero_goal": 98.0}, trials=2), suites=["libero_goal"])
    assert short["clean"]["verdict"]["status"] == NOT_APPLICABLE and "subset: 60 of the protocol's 1500" in short["clean"]["verdict"]["problems"][0]
    steps = protocol_report(COSMOS, _episodes({"libero_goal": 98.0}, max_steps=16), suites=["libero_goal"])
    assert any("step limits overridden (max_steps 16" in p for p in steps["clean"]["verdict"]["problems"])
    errored = protocol_report(COSMOS, _episodes({"libero_goal": 98.0}, errors=3), suites=["libero_goal"])
    assert errored["clean"]["verdict"]["status"] == NOT_APPLICABLE and errored["clean"]["errors"] == 3
    all_errors = [dict(e, error="simulator_fault: NaN") if e["task_id"] == 9 else e for e in _episodes({"libero_goal": 98.0})]
    task9 = protocol_report(COSMOS, all_errors, suites=["libero_goal"])["clean"]["per_task"][-1]
    assert (task9["task_id"], task9["n"], task9["errors"], task9["pc_success"]) == (9, 0, 150, None)
    from stress.report.protocol import protocol_tables

    assert protocol_tables(protocol_report(COSMOS, all_errors, suites=["libero_goal"]))[0]["tasks"][-1]["success"] == "—"


def test_perturbed_episodes_get_figures_but_no_verdict():
    episodes = _episodes({"libero_spatial": 98.0}) + _episodes({"libero_spatial": 60.0}, perturbation="occlusion:3")
    report = protocol_report(COSMOS, episodes, suites=["libero_spatial"])
    assert report["clean"]["verdict"]["status"] == REPRODUCES  # the chosen suite is complete: 98.0 vs 98.1
    assert set(report["perturbed"]) == {"occlusion:3"} and "verdict" not in report["perturbed"]["occlusion:3"]
    assert report["perturbed"]["occlusion:3"]["average"] == pytest.approx(60.0)


def test_a_server_gets_only_the_settings_it_declares():
    from scenarios.protocols import accepted_options

    assert accepted_options(COSMOS, "remote", {"num_denoising_steps": 5, "precision": "float32"}) == (("num_denoising_steps", 5),)
    assert accepted_options(COSMOS, "remote", {}) == ()
    report = protocol_report(COSMOS, _episodes({"libero_goal": 98.0}), ["libero_goal"], not_applied={"num_denoising_steps": 5})
    assert report["clean"]["verdict"]["status"] == NOT_APPLICABLE
    assert report["clean"]["verdict"]["problems"] == ["policy option num_denoising_steps=5 not applied (the backend has no such setting)"]


# --- the command line ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragments", [
    (["--protocol", "cosmos"], ["unknown protocol 'cosmos'", "valid: cosmos-libero"]),
    (["--protocol", "cosmos-libero", "--mode", "planning"], ["--mode planning", "fixes its mode (direct)"]),
    (["--protocol", "cosmos-libero", "--policy-seeds", "2"], ["--policy-seeds 2", "195, 196, 197"]),
    (["--protocol", "cosmos-libero", "--trials", "51"], ["--trials 51", "valid: 1-50"]),
    (["--protocol", "cosmos-libero", "--suite", "libero_90"], ["'libero_90'", "valid: libero_spatial, libero_object, libero_goal, libero_10"]),
])
def test_bad_protocol_input_exits_2_with_one_line(args, fragments):
    from test_cli_errors import assert_user_error

    assert_user_error(run_cli("run", *args, timeout=120), *fragments)


def test_list_protocols():
    proc = run_cli("list", "protocols", timeout=120)
    assert proc.returncode == 0, proc.stderr
    for fragment in ("cosmos-libero", "libero_10: 520, 97.6", "average 98.5", "195, 196, 197", "256 px, 10 steps", "num_denoising_steps=5", "±1.0"):
        assert fragment in proc.stdout, fragment


def test_protocol_run_on_one_task_with_the_built_in_model(tmp_path):
    """The paper's protocol on libero_spatial task 0, 1 trial, 16 steps, with the clean episodes and occlusion on top:
    3 seeds x 2 scenes = 6 reference episodes through the normal runner and store; eval_info.json; show; resume."""
    args = ["--protocol", "cosmos-libero", "--suite", "libero_spatial", "--tasks", "0", "--trials", "1", "--max-steps", "16",
            "--perturb", "occlusion:3", "--true-futures", "none", "--out", str(tmp_path)]
    proc = run_cli("run", *args)
    assert proc.returncode == 0, proc.stderr
    run = next(tmp_path.iterdir())
    assert run.name.endswith("-cosmos-libero-occlusion")
    specs = json.loads((run / "manifest.json").read_text())["specs"]
    assert len(specs) == 6 and {s["seed"] for s in specs} == {195, 196, 197}
    assert {(s["image_size"], s["max_steps"], s["mode"], s["policy_options"]["num_denoising_steps"]) for s in specs} == {(256, 16, "direct", 5)}
    for fragment in ("success per task", "success per suite beside the paper's", "98.1", "under perturbation", "occlusion:3",
                     "verdict: measured average", "vs the paper's 98.1 % over libero_spatial", "tolerance ±1.0 -> not applicable",
                     "step limits overridden (max_steps 16", "subset: 3 of the protocol's 1500 episodes"):
        assert fragment in proc.stdout, fragment
    info = json.loads((run / "eval_info.json").read_text())
    assert {e["seed"] for e in info["per_episode"]} == {195, 196, 197} and {e["perturbation"] for e in info["per_episode"]} == {"clean"}
    assert [(t["task_group"], t["task_id"], t["metrics"]["n_episodes"]) for t in info["per_task"]] == [("libero_spatial", 0, 3)]
    assert info["overall"]["n_episodes"] == 3 and set(info["per_group"]) == {"libero_spatial"}
    clean = info["protocol"]["clean"]
    assert info["protocol"]["protocol"]["name"] == "cosmos-libero" and clean["per_suite"][0]["n"] == 3
    assert clean["verdict"]["status"] == "not applicable" and clean["paper_average"] == 98.1
    assert info["overall"]["pc_success"] == pytest.approx(clean["average"])
    assert set(info["protocol"]["perturbed"]) == {"occlusion:3"}

    shown = run_cli("show", str(run))
    assert shown.returncode == 0 and "verdict: measured average" in shown.stdout, shown.stderr
    resumed = run_cli("run", "--resume", str(run), "--true-futures", "none")
    assert resumed.returncode == 0 and "6 episodes, 6 already stored" in resumed.stderr, resumed.stderr
    assert "verdict: measured average" in resumed.stdout


def test_protocol_against_a_server_rendering_another_size_exits_2():
    """The protocol fixes 256 px; a policy server expecting 128 px (the built-in model's) is refused before any episode."""
    from test_remote_policy import fake_metadata, FakePolicy  # noqa: F401
    import threading

    from stress.policies.serve import PolicyServer

    server = PolicyServer(FakePolicy, fake_metadata(), port=0)
    ready = threading.Event()
    threading.Thread(target=server.serve_forever, kwargs={"ready": lambda port: ready.set()}, daemon=True).start()
    assert ready.wait(10)
    from test_cli_errors import assert_user_error

    proc = run_cli("run", "--protocol", "cosmos-libero", "--tasks", "0", "--trials", "1", "--policy", "remote", "--policy-server",
                   f"ws://127.0.0.1:{server.port}", timeout=120)
    assert_user_error(proc, "expects 128 px images", "renders 256 px")


def test_protocol_through_the_library_with_the_expert(tmp_path):
    """Any backend: the scripted expert (no denoising steps to set) on libero_spatial task 0, trial 0, the protocol's
    220-step limit, 3 seeds; run by the library's runner into a store, then the report and eval_info.json."""
    from stress.measurement.groundtruth import Measurement
    from stress.report.protocol import write_protocol_report
    from stress.runners import run_specs
    from stress.store import RunStore

    specs = protocol_specs(COSMOS, "expert", suites=["libero_spatial"], tasks=[0], trials=1)
    store = RunStore.create(tmp_path, "expert", specs, {"protocol": COSMOS.name})
    run_specs(specs, store, measurement=Measurement("none", 0))
    store.consolidate()
    report = write_protocol_report(store, COSMOS)
    suite = report["clean"]["per_suite"][0]
    assert (suite["suite"], suite["n"], suite["successes"], report["clean"]["errors"]) == ("libero_spatial", 3, 3, 0)
    assert report["clean"]["verdict"]["status"] == NOT_APPLICABLE and report["clean"]["verdict"]["problems"][0].startswith("subset: 3 of")
    info = json.loads((store.path / "eval_info.json").read_text())
    assert info["overall"]["pc_success"] == 100.0 and info["per_task"][0]["metrics"]["successes"] == [True] * 3
