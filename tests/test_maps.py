"""Failure-boundary maps: the adaptive estimator on synthetic curves with a known threshold (no simulator)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import duckdb
import pytest

from scenarios.boundary import Boundary, Curve, benchmark, curve_sampler, estimate, grid_levels, pair_benchmark, random_curve, random_surface
from scenarios.maps import axis_values, check_config, curves_of
from stress.core.errors import UserError
from stress.report.maps import boundary_levels
from test_gallery import BROWSER_ARGS, CHROMIUM


def test_threshold_of_a_known_curve_is_inside_its_interval():
    curve = Curve(high=40, centre=0.4, slope=0.05, hi=0.98, lo=0.02)
    b = estimate(40, curve_sampler(curve, 1), width=0.1, budget=200)
    t = b.threshold()
    assert t["width"] <= 0.1 and t["low"] <= curve.threshold <= t["high"]
    assert t["median_index"] == pytest.approx(t["median"] * 40)
    # repeated episodes near the boundary, not a grid: most episodes within 0.15 of the axis of the threshold
    near = sum(n for level, (_, n) in b.counts.items() if abs(level / 40 - curve.threshold) <= 0.15)
    assert near >= 0.6 * b.episodes


def test_outside_the_axis():
    always = Boundary(10, {0: [0, 12], 10: [0, 12]})  # fails even at rest
    never = Boundary(10, {0: [12, 12], 10: [12, 12]})  # holds across the axis
    assert always.threshold()["high"] < 0.05 and never.threshold()["low"] > 0.95


def test_deterministic_and_curve_with_wilson():
    curve = random_curve(3)
    a = estimate(40, curve_sampler(curve, 7), 0.15, 120)
    b = estimate(40, curve_sampler(curve, 7), 0.15, 120)
    assert a.counts == b.counts and a.threshold() == b.threshold()
    for row in a.curve():
        assert row["ci95"][0] <= row["rate"] <= row["ci95"][1]


def test_grid_design_uses_five_levels():
    assert grid_levels(40) == [0, 10, 20, 30, 40]
    b = estimate(40, curve_sampler(random_curve(1), 1), 0.2, 60, design="grid")
    assert set(b.counts) == {0, 10, 20, 30, 40}


def test_grid_of_n_levels_round_robin_within_the_budget():
    assert grid_levels(190, 3) == [0, 95, 190] and grid_levels(2, 5) == [0, 1, 2]  # a short axis: every level
    b = estimate(40, curve_sampler(random_curve(1), 1), 0.01, 23, design="grid", grid=3)
    # 7 full rounds of 3, then the 8th stops at the budget: mildest levels first
    assert b.episodes == 23 and {lv: n for lv, (_, n) in b.counts.items()} == {0: 8, 20: 8, 40: 7}


def test_surface_has_its_boundary_where_it_says():
    s = random_surface(4)
    assert s.boundary(0) == pytest.approx(s.first) and s.boundary(s.second) == pytest.approx(0) and s.boundary(min(1, 1.5 * s.second)) < 0
    for b in (0.0, 0.5 * s.second):  # along the first axis at any level of the second: 50 % at the boundary
        assert float(s.p(s.boundary(b) * s.high, b * s.high)) == pytest.approx(0.5)
    assert float(s.p(0, s.second * s.high)) == pytest.approx(0.5)  # the second axis alone crosses at b0


def test_pair_benchmark_rows_coverage_and_saving():
    result = pair_benchmark(range(3), widths=(0.2,), budget=200)
    assert result["designs"] == ["adaptive", "grid 5"] and result["seeds"] == [0, 1, 2]
    by = result["by_width"]["0.2"]
    parts = ["second axis alone", "row 0 (rest)", "row 1", "row 2 (top)"]
    for design in result["designs"]:
        assert list(by[design]) == [*parts, "whole pair"] and all(by[design][p]["n"] == 3 for p in parts)
        assert by[design]["whole pair"]["mean_episodes"] == pytest.approx(sum(by[design][p]["mean_episodes"] for p in parts))
    assert by["adaptive"]["whole pair"]["reached"] == 3 and by["adaptive"]["row 1"]["coverage"] >= 2 / 3
    assert by["paired"]["n"] >= 2 and by["paired"]["adaptive_episodes"] < by["paired"]["grid_episodes"]
    assert list(by["paired_parts"]) == parts
    assert pair_benchmark(range(3), widths=(0.2,), budget=200) == result  # seeded


def test_benchmark_adaptive_beats_the_grid_and_covers():
    result = benchmark(range(20), widths=(0.2,), budget=300)["by_width"]["0.2"]
    assert result["adaptive"]["reached"] == 20 and result["adaptive"]["coverage"] >= 0.85
    assert result["paired"]["adaptive_episodes"] < result["paired"]["grid_episodes"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "stress.cli", *args], capture_output=True, text=True)


def test_bench_maps_command(tmp_path):
    r = _cli("bench", "--maps", "--map-seeds", "0-2", "--pair-seeds", "0-2", "--widths", "0.3", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "5-level grid" in r.stdout and "pair maps on 3 synthetic surfaces" in r.stdout and "row 2 (top)" in r.stdout and "maps" in json.loads((tmp_path / "bench.json").read_text())["benchmarks"]
    bad = _cli("bench", "--maps", "--widths", "wide", "--out", str(tmp_path))
    assert bad.returncode == 2 and "--widths 'wide' invalid; valid:" in bad.stderr and "Traceback" not in bad.stderr


def test_map_command_on_real_episodes_show_and_resume(tmp_path):
    """The expert on one LIBERO task, one axis, 4 tiny episodes: map.json, map.png, `stress show`, and a resume
    that runs nothing again."""
    r = _cli("map", "--policy", "expert", "--families", "dynamics", "--axes", "dynamics.mass_scale", "--inits", "0-1", "--max-steps", "5",
             "--budget", "4", "--batch", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    run = next(tmp_path.glob("*-map"))
    report = json.loads((run / "map.json").read_text())
    (curve,) = report["curves"]
    assert curve["family"] == "dynamics" and curve["axis"] == "mass_scale" and curve["episodes"] + curve["invalid"] == 4
    assert (run / "map.png").stat().st_size > 0 and report["episodes_run"] == 4
    assert report["format"] == "stress-map/1" and report["design"] == curve["design"] == "adaptive" and curve["grid_levels"] is None
    assert sum(row["episodes"] for row in curve["levels"]) == curve["episodes"]
    shown = _cli("show", str(run))
    assert shown.returncode == 0 and "failure boundaries" in shown.stdout and "dynamics.mass_scale" in shown.stdout
    again = _cli("map", "--resume", str(run))
    assert again.returncode == 0, again.stderr
    assert json.loads((run / "map.json").read_text())["episodes_run"] == 0
    assert json.loads((run / "map.json").read_text())["curves"] == report["curves"]


def test_map_bad_input_exits_2(tmp_path):
    for args, message in ((("--axes", "dynamics.bogus", "--families", "dynamics"), "--axes 'dynamics.bogus' names no axis"),
                          (("--policy", "expert", "--modes", "direct,planning"), "has no 'planning' mode"),
                          (("--width", "2"), "--width 2.0 invalid; valid:"),
                          (("--grid", "1"), "--grid 1 invalid; valid: 2-50"),
                          (("--grid", "five"), "--grid: invalid int value: 'five'")):
        r = _cli("map", *args, "--out", str(tmp_path))
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_grid_config_checked_through_the_library():
    config = {"suite": "libero_spatial", "task": 0, "inits": [0], "families": ["dynamics"], "camera": "both", "seeds": [0], "axes": ["dynamics.mass_scale"],
              "policy": "expert", "modes": ["direct"], "width": 0.2, "budget": 4, "batch": 2, "workers": 1}
    for bad in (1, 51, 2.5, True, "3"):
        with pytest.raises(UserError, match=r"--grid .* invalid; valid: an integer 2-50"):
            check_config({**config, "grid": bad})
    check_config({**config, "grid": 3})


def test_grid_map_of_a_pair_on_real_episodes_show_and_resume(tmp_path):
    """``--grid 3`` with a pair: every curve and row visits only its 3 grid levels round-robin (the expert, 5 steps), map.json
    says so, `stress show` and the gallery name the design, and a resume re-walks the same grid and runs nothing."""
    r = _cli("map", "--policy", "expert", "--pair", "dynamics.mass_scale,dynamics.damping_scale", "--pair-levels", "2", "--grid", "3",
             "--inits", "0-1", "--max-steps", "5", "--budget", "4", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    run = next(tmp_path.glob("*-map"))
    report = json.loads((run / "map.json").read_text())
    assert report["format"] == "stress-map/1" and report["design"] == "grid 3"
    (alone,) = report["curves"]
    (pair,) = report["pairs"]
    assert alone["axis"] == "damping_scale" and alone["design"] == "grid 3" and alone["grid_levels"] == [0, 95, 190]
    for c in (alone, *pair["rows"]):  # 4 episodes round-robin on [0, 95, 190]: 2, 1, 1
        assert c["episodes"] == 4 and [(lv["level"], lv["episodes"]) for lv in c["levels"]] == [(0, 2), (95, 1), (190, 1)]
    assert [row["second_level"] for row in pair["rows"]][0] == 0 and len(pair["rows"]) == 2
    assert (run / "map.png").stat().st_size > 0
    shown = _cli("show", str(run))
    assert shown.returncode == 0 and "fixed grid of 3 levels per axis" in shown.stdout
    gallery = _cli("gallery", str(run), "--videos", "0")
    assert gallery.returncode == 0, gallery.stderr
    html = (run / "gallery" / "index.html").read_text()
    assert '<span class="map-design">on a fixed grid of 3 levels per axis (the baseline)</span>' in html and "map-pairs" in html
    again = _cli("map", "--resume", str(run))
    assert again.returncode == 0, again.stderr
    resumed = json.loads((run / "map.json").read_text())
    assert resumed["episodes_run"] == 0 and resumed["pairs"] == report["pairs"] and resumed["design"] == "grid 3"


@pytest.fixture(scope="module")
def pair_map(tmp_path_factory):
    """The expert, 5 steps (every episode fails): dynamics.mass_scale on both sides of rest, and the pair
    mass_scale x damping_scale at 2 levels of damping; 4 episodes per curve."""
    out = tmp_path_factory.mktemp("pair-map")
    r = _cli("map", "--policy", "expert", "--families", "dynamics", "--axes", "dynamics.mass_scale", "--sides", "both",
             "--pair", "dynamics.mass_scale,dynamics.damping_scale", "--pair-levels", "2", "--inits", "0-1", "--max-steps", "5",
             "--budget", "4", "--batch", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    run = next(out.glob("*-map"))
    return run, json.loads((run / "map.json").read_text())


def _perturbations(run, keys):
    rows = duckdb.sql(f"SELECT episode_key, perturbations FROM read_parquet('{run}/episodes.parquet')").fetchall()
    found = {k: json.loads(p) for k, p in rows}
    return [found[k] for k in keys]


def test_both_sides_and_a_pair_of_axes(pair_map):
    run, report = pair_map
    up, down, alone = report["curves"]
    assert (up["axis"], up["side"], down["axis"], down["side"]) == ("mass_scale", "+", "mass_scale", "-")
    assert up["values"][0] == down["values"][0] == 1.0 and up["values"][-1] == 20.0 and down["values"][-1] == pytest.approx(0.1)
    assert up["high"] == 190 and down["high"] == 9
    for lv in down["levels"]:  # the lighter side: every episode at level l ran mass x values[l] < 1
        for record in _perturbations(run, lv["keys"]):
            (dyn,) = record
            assert dyn["params"]["mass_scale"] == pytest.approx(down["values"][lv["level"]]) and dyn["params"]["mass_scale"] < 1
    (pair,) = report["pairs"]
    assert (pair["first"]["axis"], pair["second"]["axis"]) == ("mass_scale", "damping_scale")
    # the second axis alone (mass at rest) was mapped first: every episode failed, so its threshold lies near rest and
    # the rows stop at the top of its interval instead of running to damping x20, where mass x1 already fails
    assert (alone["axis"], alone["side"], alone["episodes"]) == ("damping_scale", "+", 4) and pair["second_threshold"] == alone["threshold"]
    rest, end = pair["rows"]
    assert rest["second_level"] == 0 and end["second_level"] == math.ceil(alone["threshold"]["high_index"]) < 190
    assert end["second_value"] == pytest.approx(pair["second"]["values"][end["second_level"]])
    assert rest["levels"] == up["levels"]  # damping at rest: the mass axis's own curve, the same episodes
    for lv in end["levels"]:
        for (dyn,) in _perturbations(run, lv["keys"]):
            assert dyn["params"]["damping_scale"] == pytest.approx(end["second_value"])
            assert dyn["params"]["mass_scale"] == pytest.approx(pair["first"]["values"][lv["level"]])
    keys = {k for c in [*report["curves"], *pair["rows"]] for lv in c["levels"] for k in lv["keys"]}
    assert report["episodes"] == report["episodes_run"] == len(keys) <= 16  # 4 per curve and row, rest shared
    assert (run / "map.png").stat().st_size > 0
    shown = _cli("show", str(run))
    assert shown.returncode == 0 and "pairs of axes" in shown.stdout and "damping_scale = 1 " in shown.stdout


def test_pair_bad_input_exits_2(tmp_path):
    for args, message in ((("--pair", "dynamics.mass_scale"), "--pair 'dynamics.mass_scale' invalid; valid: two different axes"),
                          (("--pair", "dynamics.mass_scale,dynamics.mass_scale"), "invalid; valid: two different axes"),
                          (("--pair", "dynamics.mass_scale,dynamics.bogus"), "dynamics.damping_scale"),
                          (("--pair", "dynamics.mass_scale,dynamics.damping_scale", "--pair-levels", "1"), "--pair-levels 1 invalid; valid: an integer >= 2"),
                          (("--sides", "left"), "--sides 'left' invalid; valid: far, both")):
        r = _cli("map", "--policy", "expert", *args, "--out", str(tmp_path))
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_gallery_of_a_map_in_the_browser(pair_map):
    """`stress gallery` on a map run: the picture, a row per curve and per pair row, and the episodes at each boundary
    linking to their cards, in headless chromium (as tests/test_gallery.py)."""
    run, report = pair_map
    r = _cli("gallery", str(run), "--videos", "0")
    assert r.returncode == 0, r.stderr
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")
    if not CHROMIUM:
        pytest.skip("chromium not installed (apt-get install chromium; .ci/run does it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.goto((run / "gallery" / "index.html").as_uri())
        tab.wait_for_load_state("load")
        assert errors == []
        assert tab.eval_on_selector("#map-picture", "i => i.complete && i.naturalWidth > 0")
        assert tab.locator("nav a[href='#map']").count() == 1
        curves = tab.locator("table.map-curves tbody tr")
        assert curves.count() == 3 and "dynamics.mass_scale (-)" in curves.nth(1).inner_text()
        pairs = tab.locator("table.map-pairs tbody tr")
        assert pairs.count() == 2 and "damping_scale = 1\t" in pairs.nth(0).inner_text()
        links = tab.eval_on_selector_all("#map a.ep", "els => els.map(a => [a.getAttribute('href'), !!document.getElementById(a.getAttribute('href').slice(1))])")
        # every episode failed (5 steps), so every episode at a boundary links to its card, and every card exists
        at_boundary = {k for c in [*report["curves"], *report["pairs"][0]["rows"]] for lv in c["levels"]
                       if lv["level"] in [x["level"] for x in boundary_levels(c)] for k in lv["keys"]}
        assert links and all(ok for _, ok in links) and {h[len("#card-"):] for h, _ in links} == at_boundary
        tab.click("#map a.ep >> nth=0")
        assert tab.evaluate("location.hash") == links[0][0]
        assert tab.locator(links[0][0]).is_visible()
        browser.close()


def test_a_severity_family_is_mapped_from_clean_to_its_highest_severity():
    config = {"suite": "libero_spatial", "task": 0, "inits": [0], "families": ["distractors", "dynamics"], "camera": "both", "seeds": [0],
              "axes": ["distractors.severity", "dynamics.mass_scale"], "sides": "both"}
    space, walks, pairs = curves_of(config)
    assert [(w.name, w.side, w.high) for w in walks] == [("distractors.severity", 1, 5), ("dynamics.mass_scale", 1, 190), ("dynamics.mass_scale", -1, 9)]
    assert axis_values(space, walks[0]) == [0, 1, 2, 3, 4, 5] and pairs == []
