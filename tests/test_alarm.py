"""The runtime failure alarm (docs/alarm.md): the conformal calibration against closed forms and a simulation of its
guarantee; the command on one tiny real run of the reference model: its signals, alarm.json / alarm.png and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from stress.core.conformal import calibrate, conformal_quantile, conformal_rank, first_alarm, matched_auroc, needed_calibration

ROOT = Path(__file__).resolve().parents[1]


def test_conformal_rank_and_needed():
    assert conformal_rank(0.05, 19) == 19 and conformal_rank(0.05, 18) == 19
    assert needed_calibration(0.05) == 19 and needed_calibration(0.1) == 9 and needed_calibration(0.5) == 1
    assert conformal_quantile(list(range(1, 20)), 0.05) == 19
    assert conformal_quantile(list(range(1, 40)), 0.05) == math.ceil(0.95 * 40)
    with pytest.raises(ValueError, match="needs at least 19"):
        conformal_quantile(list(range(18)), 0.05)


def test_calibration_guarantee_holds_for_exchangeable_episodes():
    """Traces drawn alike with a drift over time: the share of fresh episodes the calibrated alarm fires on is
    about alpha (split conformal: exactly 1 - 19/20 = 0.05 in expectation with 19 conformal episodes)."""
    rng = np.random.default_rng(0)
    draw = lambda: {s: float(rng.normal(s / 16, 1 + s / 64)) for s in range(0, 160, 16) if rng.random() > 0.1}
    fired = []
    for _ in range(400):
        th = calibrate([draw() for _ in range(19)], [draw() for _ in range(19)], 0.05)
        fired += [first_alarm(draw(), th) is not None for _ in range(5)]
    assert 0.03 < np.mean(fired) < 0.07


def test_thresholds_vary_with_time_and_first_alarm():
    fit = [{0: 0.0 + e, 16: 10.0 + e} for e in (-1, 0, 1)]
    th = calibrate(fit, [{0: 0.5, 16: 10.5}], 0.5)
    assert th.at(0) < th.at(16) and th.at(20) == th.at(16) and th.at(-5) == th.at(0)
    assert first_alarm({0: 5.0, 16: 5.0}, th) == 0 and first_alarm({0: -5.0, 16: 20.0}, th) == 16 and first_alarm({0: -5.0}, th) is None


def test_matched_auroc_compares_at_the_same_step():
    # failed episodes score high only because scores grow with time and they last longer: matched at a step, no signal
    failed = [{0: 1.0, 16: 2.0, 32: 3.0}, {0: 0.0, 16: 1.0, 32: 2.0}]
    succeeded = [{0: 1.0, 16: 1.0}, {0: 0.0, 16: 2.0}]
    out = matched_auroc(failed, succeeded)
    assert out["auroc"] == 0.5 and out["pairs"] == 8 and out["per_step"][2]["auroc"] is None
    assert matched_auroc([{0: 2.0}], [{0: 1.0}])["auroc"] == 1.0 and matched_auroc([{0: 1.0}], [])["auroc"] is None


# --- on one tiny real run ----------------------------------------------------------------------------------
from conftest import run_cli  # noqa: E402

from stress.core.conformal import Thresholds  # noqa: E402
from stress.report import alarm as report  # noqa: E402
from stress.store import RunStore  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference model best-of-2, clean and occlusion:3, two policy seeds, 32 steps (none can succeed, so
    nothing can be calibrated: the evaluation is checked with thresholds fitted on clean episodes by hand);
    and one clean episode of the expert (no value, no world model)."""
    out = tmp_path_factory.mktemp("alarm")
    proc = run_cli("run", "--perturb", "occlusion:3", "--episodes", "1", "--max-steps", "32", "--mode", "planning", "--candidates", "2",
                   "--policy-seeds", "2", "--out", str(out / "ref"))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("run", "--policy", "expert", "--episodes", "1", "--max-steps", "16", "--out", str(out / "expert"))
    assert proc.returncode == 0, proc.stderr
    (ref,) = (out / "ref").iterdir()
    (expert,) = (out / "expert").iterdir()
    return ref, expert


def test_signals_from_a_stored_run(runs):
    ref, _ = runs
    store = RunStore.open(ref)
    episodes, rows = report._load(store)
    traces = report.traces(store, episodes, rows, list(report.SIGNALS))
    assert len(episodes) == 4
    for e in episodes:
        key = e["episode_key"]
        assert sorted(traces["value"][key]) == [0, 16]  # a score at each decision
        assert sorted(traces["surprise"][key]) == [16]  # the first decision has no earlier prediction to check
        value = [r["pred_value"] for r in rows[key] if r["candidate"] == -1]
        assert traces["value"][key][0] == pytest.approx(1 - value[0])
        for name in ("ensemble_spread", "value_spread", "action_spread", "seed_spread"):
            assert sorted(traces[name][key]) == [0, 16] and all(v >= 0 for v in traces[name][key].values())
        # the ensemble spread is the executed candidate's 3 futures x 5 values, as stored with it
        chosen = {r["step"]: r for r in rows[key] if r["candidate"] >= 0 and r["chosen"]}
        assert all(traces["ensemble_spread"][key][s] == chosen[s]["ensemble_std"] > 0 for s in (0, 16))
    # the seed spread is one figure per scenario and step, shared by its two seed episodes
    by_label = {}
    for e in episodes:
        by_label.setdefault(e["perturbation"], []).append(traces["seed_spread"][e["episode_key"]])
    assert all(a == b for a, b in by_label.values())


def _value_traces_and_thresholds(runs):
    """The reference run's episodes, their value traces, and thresholds fitted by hand on its clean episodes
    (none succeeds in 32 steps, so nothing can be calibrated the regular way)."""
    ref, _ = runs
    store = RunStore.open(ref)
    episodes, rows = report._load(store)
    traces = report.traces(store, episodes, rows, ["value"])["value"]
    clean = [traces[e["episode_key"]] for e in episodes if e["perturbation"] == "clean"]
    return episodes, traces, report.calibrate(clean[:1] * 3, clean[1:], 0.5)


def test_evaluation_and_picture_on_real_traces(runs, tmp_path):
    episodes, traces, th = _value_traces_and_thresholds(runs)
    assert isinstance(th, Thresholds) and th.n_conformal == 1
    row = report.evaluate(episodes, traces, th, 20.0, 0.5)
    assert row["failed"] == 4 and row["succeeded"] == 0 and row["fpr"] is None and row["auroc_matched"] is None
    assert 0 <= row["tpr"] <= 1 and row["tpr_ci"][0] <= row["tpr"] <= row["tpr_ci"][1]
    if row["lead_steps_median"] is not None:  # timeouts: the onset is the episode's end, 32
        assert row["lead_s_median"] == pytest.approx(row["lead_steps_median"] / 20.0)


def test_a_family_s_severities_are_pooled_on_the_same_thresholds(runs):
    """One threshold, the test episodes of every severity of a family evaluated together, after their own rows."""
    episodes, traces, th = _value_traces_and_thresholds(runs)
    assert report.family_of("occlusion:3") == "occlusion" and report.family_of("lighting:1+occlusion:5") == "lighting+occlusion"
    occluded = [e for e in episodes if e["perturbation"] == "occlusion:3"]
    pooled = report.evaluate(occluded + occluded, traces, th, 20.0, 0.5)  # a second severity's worth of episodes
    alone = report.evaluate(occluded, traces, th, 20.0, 0.5)
    assert pooled["failed"] == 2 * alone["failed"] and pooled["tpr"] == alone["tpr"]


def test_too_few_clean_successes_exits_2_naming_the_number(runs):
    ref, _ = runs
    proc = run_cli("alarm", str(ref), "--signals", "value")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "needed 38" in proc.stderr and "ceil((1-alpha)(n+1))" in proc.stderr
    proc = run_cli("alarm", str(ref), "--signals", "value", "--alpha", "0.2", "--calibration", str(ref))
    assert proc.returncode == 2 and "needed 8" in proc.stderr and f"calibration run {ref.name}" in proc.stderr


@pytest.mark.parametrize("flags, says", [(["--alpha", "1.5"], "--alpha 1.5 invalid; valid: a false-positive rate strictly between 0 and 1"),
                                         (["--alpha", "nan"], "--alpha nan invalid"),
                                         (["--signals", "value,psnr"], "unknown signal 'psnr'; valid: value, surprise")])
def test_bad_flags_exit_2(runs, flags, says):
    ref, _ = runs
    proc = run_cli("alarm", str(ref), *flags)
    assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_calibration_of_another_policy_and_a_run_without_values(runs):
    ref, expert = runs
    proc = run_cli("alarm", str(ref), "--calibration", str(expert))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "has policy expert" in proc.stderr and "has policy reference" in proc.stderr
    proc = run_cli("alarm", str(expert))  # no value, no world model, one seed: every signal says it is absent, nothing to calibrate
    assert proc.returncode == 0, proc.stderr
    assert "value: absent: the run has no value predictions" in proc.stdout
    data = json.loads((expert / "alarm.json").read_text())
    assert data["signals"]["surprise"]["present"] is False and (expert / "alarm.png").is_file()


# --- positive, end to end: a stored clean calibration run, a pushed test run through the CLI ----------------------
ALARM_DATA = ROOT / "tests" / "data" / "alarm"


def test_the_calibrated_alarm_fires_before_onset_on_pushed_failures(tmp_path):
    """The expert with action noise (0.1, its own generator: no network, so no float-rounding differences between
    CPUs decide the outcome), two policy seeds. Calibration: a stored clean run (made by `stress run --scenario
    tests/data/alarm/calibration.json`:
    libero_spatial task 0, inits 0-5, 12 successes). Test: init 3 under the strongest mid-chunk push, run here;
    seed 0 ends near the goal without placing (a timeout: the onset is the episode's end), seed 1 succeeds late.
    The seed-spread alarm (policy-agnostic) fires while the pushed trajectories diverge, before the onset of the
    failure; it also fires on the pushed success (a false alarm: the alpha guarantee does not survive the shift).
    The gallery's failure card and the card summary say so."""
    (calibration,) = [p for p in ALARM_DATA.iterdir() if p.is_dir()]
    scenario = tmp_path / "push.json"  # of the twelve pushed scenarios of docs/alarm.md's figures, init 3's two seeds
    scenario.write_text(json.dumps([s for s in json.loads((ALARM_DATA / "push.json").read_text()) if s["init_index"] == 3]))
    proc = run_cli("run", "--scenario", str(scenario), "--workers", "1", "--out", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    (run,) = (tmp_path / "runs").iterdir()
    proc = run_cli("alarm", str(run), "--calibration", str(calibration), "--alpha", "0.2", "--signals", "seed_spread", "--markdown")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((run / "alarm.json").read_text())
    # --markdown: each group's row with its counts and intervals (one severity here: no pooled family row)
    assert "| seed_spread | mid_chunk_push:5 | 1 / 1 (" in proc.stdout and "(pooled)" not in proc.stdout
    assert data["settings"][0]["signals"]["seed_spread"]["families"] == []
    (entry,) = data["settings"]
    sig = entry["signals"]["seed_spread"]
    assert entry["calibration_successes"] == 12 and (sig["n_fit"], sig["n_conformal"]) == (6, 6)
    failed = [t for t in sig["traces"].values() if not t["success"]]
    assert failed, "the pushed scenario no longer fails: pick another init state"
    assert all(t["fired"] is not None and t["fired"] < t["onset"] for t in failed)
    (group,) = [g for g in sig["groups"] if g["perturbation"] == "mid_chunk_push:5"]
    # its failure is a timeout (no signature onset): caught "before the onset" only in the episode-end sense
    assert (group["onset_failed"], group["tpr_onset"], group["tpr_onset_ci"]) == (0, None, None)
    assert group["tpr"] == 1.0 and group["lead_steps_median"] > 0 and group["lead_s_median"] == group["lead_steps_median"] / 20.0
    # the card hook: the stored report, summarised
    summary = report.card_summary(run)
    (setting,) = summary["settings"]
    assert setting["best"] == "seed_spread" and setting["signals"][0]["tpr"] == 1.0 and summary["alpha"] == 0.2
    assert "catches 1.00 of" in summary["lines"][0] and report.card_summary(tmp_path) is None
    # the gallery's failure card: when the alarm fired relative to the onset
    proc = run_cli("gallery", str(run), "--videos", "0", "--out", str(tmp_path / "gallery"))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "gallery" / "index.html").read_text()
    lead = failed[0]["onset"] - failed[0]["fired"]
    assert f"<b>seed_spread</b> fired at step {failed[0]['fired']}, {lead} steps" in html and 'class="alarm"' in html
