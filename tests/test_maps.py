"""Failure-boundary maps: the adaptive estimator on synthetic curves with a known threshold (no simulator)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scenarios.boundary import Boundary, Curve, benchmark, curve_sampler, estimate, grid_levels, random_curve


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


def test_benchmark_adaptive_beats_the_grid_and_covers():
    result = benchmark(range(20), widths=(0.2,), budget=300)["by_width"]["0.2"]
    assert result["adaptive"]["reached"] == 20 and result["adaptive"]["coverage"] >= 0.85
    assert result["paired"]["adaptive_episodes"] < result["paired"]["grid_episodes"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "stress.cli", *args], capture_output=True, text=True)


def test_bench_maps_command(tmp_path):
    r = _cli("bench", "--maps", "--map-seeds", "0-2", "--widths", "0.3", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "5-level grid" in r.stdout and "maps" in json.loads((tmp_path / "bench.json").read_text())["benchmarks"]
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
                          (("--width", "2"), "--width 2.0 invalid; valid:")):
        r = _cli("map", *args, "--out", str(tmp_path))
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
