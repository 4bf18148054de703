"""`stress search`: the search code on the planted benchmark (no simulator), and through the CLI on real
LIBERO scenes with tiny budgets (the expert: fast, deterministic episodes)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from test_cli_errors import assert_user_error


# --- the planted benchmark (the same search code, a synthetic episode function) ------------------------
def test_planted_landscapes_are_seeded_and_their_corners_are_the_regions_nearest_points():
    from scenarios.planted import KINDS, MODES_PER_LANDSCAPE, landscape, planted_space, region_of
    from scenarios.shrink import relaxations

    assert landscape(5) == landscape(5) and landscape(5) != landscape(6)
    kinds = set()
    space = planted_space()
    for seed in range(20):
        regions = landscape(seed)
        assert len(regions) == MODES_PER_LANDSCAPE and len({r.kind for r in regions}) == MODES_PER_LANDSCAPE
        assert len({r.signature for r in regions}) == MODES_PER_LANDSCAPE
        kinds |= {r.kind for r in regions}
        for r in regions:
            point = {"context": {"task": 0, "init": 0, "camera": 0, "seed": 0}, "families": r.corner()}
            assert region_of(regions, point) is not None  # the corner violates ...
            assert region_of(regions, {**point, "families": {}}) is None  # ... the clean scenario holds
            # ... and no one-step relaxation stays in this region (it may land in an overlapping one)
            assert all(region_of((r,), p) is None for _, p in relaxations(space, point))
    assert kinds == set(KINDS)


def test_planted_search_shrinks_onto_each_region_corner_and_is_one_minimal():
    from scenarios.planted import MODES_PER_LANDSCAPE, PlantedEvaluator, corner_recovered, planted_space
    from scenarios.search import Search

    evaluator = PlantedEvaluator(seed=3)
    result = Search(planted_space(), "planted", evaluator, sampler="ce", budget=100, seed=3, max_findings=MODES_PER_LANDSCAPE, replays=2).run()
    findings = result["findings"]
    assert len({f["failure"] for f in findings}) >= 2
    for f in findings:
        assert corner_recovered(evaluator.regions, f), f["shrunk"]["scenario"]
        assert f["one_minimal"] and all(not r["violated"] for r in f["relaxations"])
        assert f["replay"] == {"reproduced": 2, "of": 2, "runs": [True, True]} and f["verdict"] == "violated"
        assert f["fields"]["shrunk"] <= f["fields"]["original"]
        assert f["shrink_path"][-1]["step"] == len(f["shrink_path"]) - 1


def test_planted_benchmark_on_held_out_landscapes_tells_learning_from_prior():
    """On landscapes the constants were not tuned on (100-119), ce against random and against blind-ce (ce
    fed noise instead of verdicts: the same prior, no learning). Measured (docs/search.md): ce 1.70x
    random's violations per 100 (26.5 against 15.6), blind-ce 1.11x (17.2); the bar of 1.4x (21.8) sits
    about 1.7 standard errors of a 20-landscape mean (2.8 violations per 100) from each. Every finding shrinks exactly onto its region's corner."""
    from scenarios.planted import benchmark

    result = benchmark(("random", "ce", "blind-ce"), range(100, 120), budget=100)
    random, ce, blind_ce = result["random"], result["ce"], result["blind-ce"]

    def passes(row):
        return (row["violations_per_100"] >= 1.4 * random["violations_per_100"] and row["median_first_violation"] <= random["median_first_violation"]
                and row["modes_100"] >= random["modes_100"] - 0.05)

    assert passes(ce)
    assert not passes(blind_ce)  # a prior alone does not pass the bar the guided sampler is held to
    assert ce["modes_100"] > blind_ce["modes_100"] and ce["violations_per_100"] > blind_ce["violations_per_100"]
    assert ce["exact"] == ce["findings"] == ce["one_minimal"] and ce["max_shrink_evaluations"] <= 40


def test_novelty_sampler_on_held_out_landscapes_learns_beyond_its_prior():
    """`novelty` against random and its score-blind twin (blind-novelty: the same novelty exploration, no
    verdicts, so no exploitation) on held-out landscapes 100-119. Measured (docs/search.md): novelty 87.5 %
    of modes, 32.1 violations per 100 (2.06x random's 15.6), first violation at 3 (random's: its warm-up
    is random's stream); blind-novelty 86.2 %, 17.6 (1.13x). The bar: 1.8x random (the standard error
    of a 20-landscape mean is about 0.2x), no fewer modes than random, the first violation no later. The
    guided target of 90 % of modes is not met on these seeds (it is on 200-219: 91.2 %), so it is not
    asserted; novelty is not the default."""
    from scenarios.planted import benchmark

    result = benchmark(("random", "novelty", "blind-novelty"), range(100, 120), budget=100)
    random, novelty, blind_novelty = result["random"], result["novelty"], result["blind-novelty"]

    def passes(row):
        return (row["violations_per_100"] >= 1.8 * random["violations_per_100"] and row["median_first_violation"] <= random["median_first_violation"]
                and row["modes_100"] >= random["modes_100"])

    assert passes(novelty)
    assert not passes(blind_novelty)  # its exploration alone does not pile up violations
    assert novelty["modes_100"] > blind_novelty["modes_100"] and novelty["violations_per_100"] > blind_novelty["violations_per_100"]
    assert novelty["exact"] == novelty["findings"] == novelty["one_minimal"]


def test_guided_default_sampler_meets_the_targets_on_held_out_landscapes_and_its_blind_twin_does_not():
    """`guided` (the default) against random and its score-blind twin on held-out landscapes 100-119 (its
    constants were tuned on 0-49 and 1000-1059). Measured (docs/search.md): guided 92.5 % of modes, 40.1
    violations per 100 (2.58x random's 15.6), first violation at 3 (random's 3), 11.2 modes as a real search
    records them (region x family set; random 9.4) and 92 % of regions hit under their own families
    (random 62 %); blind-guided 83.8 %, 21.6 (1.39x), 3, 7.2 recorded, 11 % own. The targets are 90 % of
    modes and 2x random; the bar here sits below them by the noise of a 20-landscape mean (a standard error
    of about 3 points of modes and 0.2x of the ratio, so a change that only reshuffles random streams does
    not fail it): 85 % of modes, 1.8x random, the first violation no later than random's, and no fewer
    recorded modes than random (a sampler that records every mode under a pair scores fewer). The blind
    twin misses it on modes, violations and recorded modes."""
    from scenarios.planted import benchmark

    result = benchmark(("random", "guided", "blind-guided"), range(100, 120), budget=100)
    random, guided, blind_guided = result["random"], result["guided"], result["blind-guided"]

    def passes(row):
        return (row["modes_100"] >= 0.85 and row["violations_per_100"] >= 1.8 * random["violations_per_100"]
                and row["median_first_violation"] <= random["median_first_violation"] and row["recorded_modes"] >= random["recorded_modes"])

    assert passes(guided)
    assert not passes(blind_guided)  # the same candidates and bounds read from noise
    assert blind_guided["recorded_modes"] < random["recorded_modes"]  # the prior alone piles every mode under a pair
    assert guided["modes_100"] > blind_guided["modes_100"] and guided["violations_per_100"] > blind_guided["violations_per_100"]
    assert guided["own_set"] >= 0.85 > 0.3 > blind_guided["own_set"]  # attribution names the single-family causes
    assert guided["median_first_violation"] <= blind_guided["median_first_violation"]  # the same warm-up stream: no verdict informs it
    assert guided["exact"] == guided["findings"] == guided["one_minimal"]


def test_guided_proposes_each_family_alone_after_a_new_mode_of_a_composition():
    """Attribution: after the first violation of a new mode of a pair, `guided` proposes each of its families
    alone at the same axis values and context; not again for the same mode, and never for its blind twin
    (which sees no violation)."""
    import numpy as np

    from scenarios.planted import planted_space
    from scenarios.samplers import make_sampler
    from scenarios.searchspace import CONTEXT

    space = planted_space()
    first_axis = len(CONTEXT) + 1 + space.max_families
    for name in ("guided", "blind-guided"):
        sampler = make_sampler(name, space, 0)
        u = sampler.propose()
        pair = space.decode(u)
        assert len(pair["families"]) == 2  # the warm-up fills every family slot
        mode = f"dropped x {'+'.join(pair['families'])}"
        sampler.update(u, -0.5, True, mode)
        proposed = [space.decode(sampler.propose()) for _ in range(2)]
        if name == "guided":
            assert proposed == [{"context": pair["context"], "families": {n: axes}} for n, axes in pair["families"].items()]
        else:
            assert all(len(p["families"]) == 2 for p in proposed)
        other = np.array(u)
        other[first_axis:] = np.random.default_rng(1).random(len(other) - first_axis)  # other axis values, the same two families
        assert space.decode(other)["families"].keys() == pair["families"].keys()
        sampler.update(other, -0.5, True, mode)
        assert len(space.decode(sampler.propose())["families"]) == 2  # the mode is not new: no projection


def test_parallel_shrink_is_the_sequential_shrink_in_fewer_rounds():
    """With --workers N the shrinker evaluates up to N scenarios it may ask next together; its walk reads
    their verdicts, so every finding (shrunk point, path, relaxations) is the sequential one's, in fewer
    rounds of evaluations for a few speculative episodes more."""
    from scenarios.planted import PlantedEvaluator, planted_space
    from scenarios.search import Search

    class Rounds(PlantedEvaluator):
        rounds = 0

        def evaluate(self, points):
            self.rounds += 1
            return super().evaluate(points)

    runs = {}
    for batch in (1, 2, 4):
        evaluators = [Rounds(seed) for seed in range(100, 106)]
        searches = [Search(planted_space(), "planted", e, sampler="random", budget=40, seed=e.seed, max_findings=4, batch=batch) for e in evaluators]
        findings = [[(f["shrunk"]["point"], f["shrink_path"], f["relaxations"], f["one_minimal"]) for f in s.run()["findings"]] for s in searches]
        runs[batch] = findings, sum(e.rounds - 40 // batch for e in evaluators), sum(e.episodes for e in evaluators), searches
    for batch, (_, rounds, episodes, _) in runs.items():  # the figures of docs/search.md (pytest -s)
        print(f"batch {batch}: {rounds} rounds, {episodes - 40 * 6} episodes shrinking and checking")
    assert runs[4][0] == runs[2][0] == runs[1][0] and sum(map(len, runs[1][0])) >= 15
    assert runs[4][1] < 0.7 * runs[1][1] and runs[4][2] > runs[1][2]
    for search in runs[4][3]:  # every episode is accounted for: the speculative ones under their own phase
        assert sum(r["episodes_run"] for r in search.log) == search.evaluator.episodes and not search.ahead


def test_planted_bench_command_keeps_tuning_and_report_seeds_apart(tmp_path):
    proc = run_cli("bench", "--planted", "--tune-seeds", "0-3", "--report-seeds", "3-5", "--out", str(tmp_path))
    assert_user_error(proc, "--report-seeds 3", "--tune-seeds")
    proc = run_cli("bench", "--planted", "--tune-seeds", "0", "--report-seeds", "100", "--budget", "20", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "bench.json").read_text())["benchmarks"]["planted"]
    assert saved["settings"]["tune_seeds"] == [0] and saved["settings"]["report_seeds"] == [100] and set(saved["figures"]["report"]) >= {"random", "ce", "blind-ce"}
    assert "held-out seeds 100" in proc.stdout and "recorded modes" in proc.stdout
    assert {"recorded_modes", "own_set"} <= set(saved["figures"]["report"]["guided"])


def test_search_is_deterministic_and_replays_its_own_history():
    """Same space, property, sampler and seed -> the same proposals and findings; a second search over a
    cache of the first's verdicts runs nothing new (what --resume relies on)."""
    from scenarios.planted import PlantedEvaluator, planted_space
    from scenarios.search import Search

    first, second = (Search(planted_space(), "planted", PlantedEvaluator(), sampler=s, budget=40, seed=7) for s in ("bandit", "bandit"))
    a, b = first.run(), second.run()
    assert [r["point"] for r in first.log] == [r["point"] for r in second.log]
    assert [f["id"] for f in a["findings"]] == [f["id"] for f in b["findings"]]
    evaluator = PlantedEvaluator()
    third = Search(planted_space(), "planted", evaluator, sampler="bandit", budget=40, seed=7)
    third.cache = dict(first.cache)
    third.run()
    assert evaluator.episodes == 0


@pytest.mark.parametrize("sampler", ["random", "halton", "sobol", "ce", "bandit", "novelty", "guided", "blind-ce", "blind-novelty", "blind-guided"])
def test_every_sampler_proposes_valid_points(sampler):
    from scenarios.planted import PlantedEvaluator, planted_space
    from scenarios.search import Search

    space = planted_space()
    search = Search(space, "planted", PlantedEvaluator(), sampler=sampler, budget=30, seed=1, max_findings=0)
    report = search.run()["report"]
    assert report["runs"]["search"]["evaluations"] == 30
    for row in search.log:
        families = row["point"]["families"]
        assert 1 <= len(families) <= space.max_families
        for name, indices in families.items():
            for axis in space.families[name]:
                assert axis.low <= indices[axis.name] <= axis.high


def test_iid_slice_and_compare_are_kept_apart_from_the_adversarial_finds():
    from scenarios.planted import PlantedEvaluator, planted_space
    from scenarios.search import Search

    report = Search(planted_space(), "planted", PlantedEvaluator(), sampler="ce", budget=50, seed=0, compare="random").run()["report"]
    assert set(report["runs"]) == {"search", "compare"} and report["runs"]["compare"]["sampler"] == "random"
    assert report["iid"]["source"] == "compare" and report["iid"]["n"] == 50
    low, high = report["iid"]["ci95"]
    assert 0 <= low <= report["iid"]["rate"] <= high <= 1
    with_iid = Search(planted_space(), "planted", PlantedEvaluator(), sampler="ce", budget=20, seed=0, iid=10).run()["report"]
    assert with_iid["iid"]["source"] == "iid" and with_iid["iid"]["n"] == 10


def test_space_limits_narrow_the_axes():
    from scenarios.session import space_from_config

    base = {"suite": "libero_spatial", "tasks": [0], "inits": [0, 1], "families": ["occlusion", "dynamics"], "cameras": ["both"], "seeds": [0]}
    space = space_from_config({**base, "limits": {"occlusion.area_fraction": [0, 20], "dynamics.friction_scale": [-5, 10]}})
    axes = {f"{n}.{a.name}": a for n in space.names for a in space.families[n]}
    assert (axes["occlusion.area_fraction"].low, axes["occlusion.area_fraction"].high) == (0, 20)
    assert axes["occlusion.area_fraction"].value(20) == 0.2 and axes["dynamics.friction_scale"].value(-5) == 0.5
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(50):
        point = space.decode(rng.random(space.dims))
        if "occlusion" in point["families"]:
            assert 0 <= point["families"]["occlusion"]["area_fraction"] <= 20


def test_properties_are_graded_and_user_properties_load(tmp_path):
    from scenarios import properties
    from scenarios.properties import Episode

    row = lambda success, steps=100, progress=0.5: {"success": success, "steps": steps, "max_steps": 200, "progress": progress}  # noqa: E731
    succeeds = properties.get("succeeds").check
    near, far = succeeds({"scenario": Episode(row(False, progress=0.9), [])}), succeeds({"scenario": Episode(row(False, progress=0.1), [])})
    assert near.violated and far.violated and far.score < near.score <= 0
    fast, slow = succeeds({"scenario": Episode(row(True, 40), [])}), succeeds({"scenario": Episode(row(True, 190), [])})
    assert not fast.violated and fast.score > slow.score > 0
    amplification = properties.get("planning_not_worse").check({"direct": Episode(row(True), []), "planning": Episode(row(False), [])})
    assert amplification.violated and amplification.score <= 0
    both_fail = properties.get("planning_not_worse").check({"direct": Episode(row(False), []), "planning": Episode(row(False), [])})
    assert not both_fail.violated and both_fail.score > 0
    over = properties.get("value_not_overconfident").check({"scenario": Episode(row(False), [{"candidate": -1, "step": 0, "pred_value": 0.9}])})
    assert over.violated
    user = tmp_path / "mine.py"
    user.write_text(
        "from scenarios.properties import Verdict, register\n"
        "@register('short_episode', variants=('scenario',), doc='ends in under 50 steps')\n"
        "def short(episodes):\n"
        "    steps = episodes['scenario'].row['steps']\n"
        "    return Verdict(steps >= 50, (50 - steps) / 50)\n")
    properties.load_file(user)
    assert properties.get("short_episode").check({"scenario": Episode(row(True, 80), [])}).violated


# --- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, fragments",
    [
        (["search", "--property", "flies"], ["'flies'", "succeeds", "planning_not_worse"]),
        (["search"], ["--property", "succeeds"]),
        (["search", "--property", "succeeds", "--families", "occlusion,smoke"], ["'smoke'", "occlusion"]),
        (["search", "--property", "succeeds", "--sampler", "genetic"], ["'genetic'", "random, halton, sobol, ce, bandit"]),
        (["search", "--property", "succeeds", "--budget", "0"], ["--budget 0", ">= 1"]),
        (["search", "--property", "succeeds", "--families", ""], ["families", "non-empty"]),
        (["search", "--property", "succeeds", "--inits", "0,99"], ["99", "0-49"]),
        (["search", "--property", "planning_not_worse", "--policy", "expert"], ["planning_not_worse", "planning mode", "reference"]),
        (["search", "--property", "value_not_overconfident", "--policy", "expert"], ["value_not_overconfident", "values", "reference"]),
        (["search", "--property", "physics_preserved"], ["physics_preserved", "'reference'", "expert"]),
        (["search", "--property", "physics_preserved", "--policy", "expert", "--families", "dynamics"], ["'dynamics'", "occlusion"]),
        (["list", "gadgets"], ["'gadgets'", "properties", "samplers"]),
    ],
)
def test_search_bad_input_exits_2_with_one_line(args, fragments):
    assert_user_error(run_cli(*args), *fragments)


def test_malformed_space_and_finding_files(tmp_path):
    space = tmp_path / "space.json"
    space.write_text("{not json")
    assert_user_error(run_cli("search", "--property", "succeeds", "--space", str(space)), "not valid JSON")
    space.write_text(json.dumps({"suite": "libero_spatial", "tasks": [0], "inits": [0], "families": ["occlusion"], "colour": "red"}))
    assert_user_error(run_cli("search", "--property", "succeeds", "--space", str(space)), "'colour'", "suite, tasks")
    space.write_text(json.dumps({"suite": "libero_spatial", "tasks": [0], "inits": [], "families": ["occlusion"], "cameras": ["both"], "seeds": [0]}))
    assert_user_error(run_cli("search", "--property", "succeeds", "--space", str(space)), "'inits'", "non-empty")
    space.write_text(json.dumps({"suite": "libero_spatial", "tasks": [0], "inits": [0], "families": ["occlusion"], "cameras": ["both"], "seeds": [0],
                                 "limits": {"occlusion.area_fraction": [5, 30]}}))
    assert_user_error(run_cli("search", "--property", "succeeds", "--space", str(space)), "occlusion.area_fraction [5, 30]", "0 <= low <= 0 <= high <= 100")
    finding = tmp_path / "finding.json"
    finding.write_text("[1, 2]")
    assert_user_error(run_cli("replay", str(finding)), "not a finding")
    finding.write_text(json.dumps({"format": "stress-finding/0", "id": "x"}))
    assert_user_error(run_cli("replay", str(finding)), "stress-finding/0", "stress-finding/1")
    finding.write_text(json.dumps({"format": "stress-finding/1", "id": "x"}))
    assert_user_error(run_cli("replay", str(finding)), "lacks", "malformed")


# --- real scenes: run, kill, resume, replay -----------------------------------------------------------
# ce: its severe start makes the first sample violate, so the kill below lands in a shrink (a run names its sampler and resumes with it)
SEARCH = ["search", "--property", "succeeds", "--policy", "expert", "--families", "policy_noise", "--max-families", "1", "--inits", "0",
          "--max-steps", "120", "--replays", "1", "--iid", "0", "--sampler", "ce"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stress.cli", *SEARCH, "--out", str(out), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _parts(out: Path) -> int:
    return sum(1 for _ in out.glob("*/parts/*.parquet"))


def _kill_when(proc: subprocess.Popen, out: Path, parts: int, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while _parts(out) < parts:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def killed_while_shrinking(tmp_path_factory):
    """A real search killed (SIGKILL) in the middle of shrinking its first violation, then resumed."""
    out = tmp_path_factory.mktemp("search")
    proc = _start(out, "--budget", "2")
    _kill_when(proc, out, parts=3)  # the first sample violates (the severe start), so part 3 is a shrink step
    run = next(out.iterdir())
    before = _parts(out)
    assert not (run / "search.json").exists()
    resumed = run_cli("search", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    return run, before, resumed


def test_resume_after_sigkill_while_shrinking_loses_nothing_and_runs_nothing_twice(killed_while_shrinking):
    run, before, resumed = killed_while_shrinking
    report = json.loads((run / "search.json").read_text())
    after = _parts(run.parent)
    assert report["episodes_run"] == after - before  # the resumed process ran exactly what was missing
    keys = {k for row in report["log"] for k in row["episode_keys"]}
    assert keys == {p.stem for p in (run / "parts").glob("*.parquet")}  # every stored episode is one the search used
    assert report["runs"]["search"]["evaluations"] == 2
    findings = list((run / "findings").glob("*.json"))
    assert findings and "findings: original -> shrunk" in resumed.stdout
    finding = json.loads(findings[0].read_text())
    assert finding["one_minimal"] and finding["replay"]["of"] == 1
    assert finding["shrunk"]["violated"] and finding["fields"]["shrunk"] <= finding["fields"]["original"]
    assert finding["replay_command"] == f"stress replay {run / 'findings' / findings[0].name}"
    assert (run / "search.png").stat().st_size > 0


def test_a_finding_replays_to_the_same_verdict(killed_while_shrinking):
    run, _, _ = killed_while_shrinking
    finding = next((run / "findings").glob("*.json"))
    proc = run_cli("replay", str(finding), "--times", "2")
    assert proc.returncode == 0, proc.stderr
    assert "reproduced 2 of 2" in proc.stdout and "reproduces" in proc.stdout


def test_show_reads_a_search_run(killed_while_shrinking):
    run, _, _ = killed_while_shrinking
    proc = run_cli("show", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "search for violations of succeeds" in proc.stdout and "success rate" in proc.stdout


def test_parallel_shrink_on_real_scenes_is_the_sequential_shrink(killed_while_shrinking, tmp_path):
    """The same search with --workers 2 (its shrink steps evaluated two at a time) finds the same finding,
    shrunk along the same path to the same 1-minimal scenario, as the sequential search above."""
    run, _, _ = killed_while_shrinking
    proc = run_cli(*SEARCH, "--budget", "2", "--workers", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    parallel_run = next(tmp_path.iterdir())
    parts = ("shrunk", "shrink_path", "relaxations", "one_minimal", "shrink_evaluations")
    sequential = {f.name: {k: json.loads(f.read_text())[k] for k in parts} for f in (run / "findings").glob("*.json")}
    parallel = {f.name: {k: json.loads(f.read_text())[k] for k in parts} for f in (parallel_run / "findings").glob("*.json")}
    for findings in (sequential, parallel):
        for finding in findings.values():
            finding["shrunk"] = {k: finding["shrunk"][k] for k in ("point", "scenario", "score", "violated")}
    assert parallel == sequential and all(f["one_minimal"] for f in parallel.values())


def test_resume_after_sigkill_while_sampling(tmp_path):
    proc = _start(tmp_path, "--budget", "3", "--max-findings", "0")
    _kill_when(proc, tmp_path, parts=2)
    run = next(tmp_path.iterdir())
    before = _parts(tmp_path)
    resumed = run_cli("search", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((run / "search.json").read_text())
    assert report["runs"]["search"]["evaluations"] == 3
    assert report["episodes_run"] == _parts(tmp_path) - before
    assert {k for row in report["log"] for k in row["episode_keys"]} == {p.stem for p in (run / "parts").glob("*.parquet")}
    # with --max-findings 0 nothing is shrunk: the closing line says whether violations were found, not "none found"
    found = report["runs"]["search"]["violations"] > 0
    assert ("none shrunk into a finding" in resumed.stdout) == found
    assert ("no violation found within the budget" in resumed.stdout) == (not found)


def test_search_a_served_policy(tmp_path):
    """The search as a client of `stress serve`: the same episodes land in the store, policy 'remote'."""
    from test_remote_policy import start_server

    server, url = start_server("--policy", "reference")
    try:
        proc = run_cli("search", "--property", "succeeds", "--policy", "remote", "--policy-server", url, "--families", "occlusion", "--inits", "0",
                       "--max-steps", "32", "--budget", "1", "--max-findings", "0", "--iid", "0", "--out", str(tmp_path))
        assert proc.returncode == 0, proc.stderr
    finally:
        server.terminate()
        server.wait()
    run = next(tmp_path.iterdir())
    report = json.loads((run / "search.json").read_text())
    assert report["runs"]["search"]["evaluations"] == 1 and report["episodes_run"] == 1
    import duckdb

    rows = duckdb.sql(f"SELECT policy, error FROM read_parquet('{run}/parts/*.parquet')").fetchall()
    assert rows == [("remote", None)]
    assert_user_error(run_cli("search", "--property", "succeeds", "--policy", "remote", "--policy-server", url), "unreachable")
