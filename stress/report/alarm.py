"""The policy's own value and world model as a runtime failure alarm (docs/alarm.md): alarm signals computed from
a stored run, calibrated by split conformal prediction on clean successful episodes (``stress.core.conformal``)
and evaluated per perturbation and severity: true-positive rate before the failure onset, false-positive rate
and its gap to alpha, lead time, AUROC at matched steps, each with an interval. Writes ``alarm.json`` and
``alarm.png``.

Every signal is a score per decision, higher = more alarming:

- ``value``: 1 - the executed decision's predicted value;
- ``surprise``: minus the PSNR of the frame the world model predicted one chunk earlier against the frame
  seen now (the previous decision's ``future_psnr``: its true future is the frame this decision sees);
- ``ensemble_spread``: the standard deviation of the executed candidate's raw value ensemble (futures x values,
  the stored ``ensemble_std``): the value head's own uncertainty, where the policy reports its ensemble (planning);
- ``value_spread``: the standard deviation of the best-of-N candidates' predicted values (planning);
- ``action_spread``: the mean pairwise distance of the best-of-N candidates' action chunks (planning). It needs
  neither a value nor a world model: the policy-agnostic baseline by samples (STAC / FIPER's idea);
- ``seed_spread``: the mean pairwise distance of the chunks executed at the same step by the episodes of one
  scenario run under different policy seeds (``stress run --policy-seeds N``): the policy-agnostic baseline by
  seeds, for any policy, the expert included. One value per scenario and step, shared by its seed episodes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from stress.core.conformal import Thresholds, calibrate, first_alarm, matched_auroc, needed_calibration
from stress.core.errors import UserError, choice_error
from stress.core.metrics import action_spread, wilson_interval
from stress.envs import simulator_of
from stress.report.figures import pyplot
from stress.store import RunStore

SIGNALS = {  # name -> (what it is, what it needs)
    "value": ("1 - the predicted value of the executed decision", "value predictions"),
    "surprise": ("- PSNR of the world model's prediction one chunk earlier against the frame seen now", "measured true futures (--true-futures executed)"),
    "ensemble_spread": ("std of the executed candidate's value ensemble (futures x values)", "value ensemble (planning with more than one future or value)"),
    "value_spread": ("std of the best-of-N candidates' predicted values", "planning mode (best-of-N)"),
    "action_spread": ("mean pairwise distance of the best-of-N candidates' chunks (policy-agnostic, samples)", "planning mode (best-of-N)"),
    "seed_spread": ("mean pairwise distance of the chunks the scenario's policy-seed episodes executed at this step (policy-agnostic, seeds)",
                    "second policy seed (--policy-seeds 2 or more)"),
}
BASELINES = ("action_spread", "seed_spread")  # the signals that need no value and no world model
N_BOOT = 1000


# --- signals -------------------------------------------------------------------------------------------
def _load(store: RunStore) -> tuple[list[dict], dict[str, list[dict]]]:
    episodes = store.query("SELECT * FROM episodes WHERE error IS NULL ORDER BY episode_key")
    rows: dict[str, list[dict]] = defaultdict(list)
    if (store.path / "decisions").is_dir():
        for r in store.query("SELECT * FROM decisions ORDER BY episode_key, step, candidate"):  # *: a run stored before a column lacks it
            rows[r["episode_key"]].append(r)
    return episodes, rows


def _finite(x) -> bool:
    return x is not None and bool(np.isfinite(x))


def _value(rows):
    return {r["step"]: 1.0 - r["pred_value"] for r in rows if r["candidate"] == -1 and _finite(r["pred_value"])}


def _surprise(rows):
    executed = [r for r in rows if r["candidate"] == -1]
    return {now["step"]: -before["future_psnr"] for before, now in zip(executed, executed[1:]) if _finite(before["future_psnr"])}


def _value_spread(rows):
    by_step = defaultdict(list)
    for r in rows:
        if r["candidate"] >= 0 and _finite(r["pred_value"]):
            by_step[r["step"]].append(r["pred_value"])
    return {s: float(np.std(v)) for s, v in by_step.items() if len(v) >= 2}


def _executed(column: str):
    return lambda rows: {r["step"]: r[column] for r in rows if r["candidate"] == -1 and _finite(r.get(column))}


def _seed_spreads(store: RunStore, episodes: list[dict]) -> dict[str, dict[int, float]]:
    """Per episode, the seed spread at each of its decisions (empty for a scenario with one seed)."""
    scenarios = defaultdict(list)
    for e in episodes:
        spec = json.loads(e["spec"])
        spec.pop("seed", None)
        scenarios[json.dumps(spec, sort_keys=True)].append(e["episode_key"])
    out = {e["episode_key"]: {} for e in episodes}
    for keys in scenarios.values():
        if len(keys) < 2:
            continue
        chunks = defaultdict(list)  # step -> the chunks executed from it
        for key in keys:
            actions, steps = store.actions(key)
            ends = list(steps[1:]) + [len(actions)]
            for s, end in zip(steps, ends):
                chunks[int(s)].append((key, actions[int(s):int(end)]))
        for step, found in chunks.items():
            length = min(len(c) for _, c in found)
            spread = action_spread([c[:length] for _, c in found]) if length and len(found) >= 2 else None
            if spread is not None:
                for key, _ in found:
                    out[key][step] = spread
    return out


def traces(store: RunStore, episodes: list[dict], rows: dict[str, list[dict]], signals) -> dict[str, dict[str, dict[int, float]]]:
    """signal -> episode key -> {decision step: score}."""
    per_rows = {"value": _value, "surprise": _surprise, "ensemble_spread": _executed("ensemble_std"), "value_spread": _value_spread,
                "action_spread": _executed("action_spread")}
    out = {}
    for name in signals:
        if name == "seed_spread":
            out[name] = _seed_spreads(store, episodes)
        else:
            out[name] = {e["episode_key"]: per_rows[name](rows.get(e["episode_key"], [])) for e in episodes}
    return out


# --- calibration and evaluation ------------------------------------------------------------------------
def onset(episode: dict) -> int:
    """The failure onset: the signature's onset step, or for a failure without one (a timeout, never grasped)
    the end of the episode: an alarm anywhere in such an episode came before it ended."""
    return episode["failure_step"] if episode["failure_step"] is not None else episode["steps"]


def _interval(values, stat, seed: int = 0) -> list[float] | None:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, len(values), size=(N_BOOT, len(values)))
    stats = np.array([stat(values[i]) for i in idx])
    return [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]


def _auroc_interval(failed, succeeded, seed: int = 0) -> list[float] | None:
    if not failed or not succeeded:
        return None
    rng, found = np.random.default_rng(seed), []
    for _ in range(N_BOOT // 5):
        f = [failed[i] for i in rng.integers(0, len(failed), len(failed))]
        s = [succeeded[i] for i in rng.integers(0, len(succeeded), len(succeeded))]
        value = matched_auroc(f, s)["auroc"]
        if value is not None:
            found.append(value)
    return [float(np.percentile(found, 2.5)), float(np.percentile(found, 97.5))] if found else None


def evaluate(episodes: list[dict], trace: dict[str, dict[int, float]], thresholds: Thresholds, hz: float, alpha: float) -> dict:
    """One signal on one group of test episodes."""
    failed = [e for e in episodes if not e["success"] and trace.get(e["episode_key"])]
    succeeded = [e for e in episodes if e["success"] and trace.get(e["episode_key"])]
    fired_ok = [first_alarm(trace[e["episode_key"]], thresholds) for e in succeeded]
    before = lambda e: {s: v for s, v in trace[e["episode_key"]].items() if s <= onset(e)}
    leads, late, caught_timed = [], 0, 0
    # failures with a signature's own onset (a wrong place, a drop, ...): for the others the onset is the episode's end,
    # and an alarm that fires only because the episode outlasts every calibrating success counts as "before" it
    timed = [e for e in failed if e["failure_step"] is not None]
    for e in failed:
        step = first_alarm(before(e), thresholds)
        if step is not None:
            leads.append(onset(e) - step)
            caught_timed += e["failure_step"] is not None
        elif first_alarm(trace[e["episode_key"]], thresholds) is not None:
            late += 1
    fp = sum(s is not None for s in fired_ok)
    fpr = fp / len(succeeded) if succeeded else None
    fpr_ci = list(wilson_interval(fp, len(succeeded))) if succeeded else None
    f_traces, s_traces = [before(e) for e in failed], [trace[e["episode_key"]] for e in succeeded]
    matched = matched_auroc(f_traces, s_traces)
    return {
        "failed": len(failed), "succeeded": len(succeeded),
        "tpr": len(leads) / len(failed) if failed else None, "tpr_ci": list(wilson_interval(len(leads), len(failed))) if failed else None,
        "fired_after_onset": late,
        "onset_failed": len(timed), "tpr_onset": caught_timed / len(timed) if timed else None,
        "tpr_onset_ci": list(wilson_interval(caught_timed, len(timed))) if timed else None,
        "fpr": fpr, "fpr_ci": fpr_ci,
        "coverage_gap": None if fpr is None else fpr - alpha, "coverage_gap_ci": None if fpr_ci is None else [fpr_ci[0] - alpha, fpr_ci[1] - alpha],
        "lead_steps_median": float(np.median(leads)) if leads else None, "lead_steps_ci": _interval(leads, np.median),
        "lead_s_median": float(np.median(leads)) / hz if leads else None,
        "auroc_matched": matched["auroc"], "auroc_matched_ci": _auroc_interval(f_traces, s_traces), "auroc_pairs": matched["pairs"],
    }


def _setting(e: dict) -> tuple[str, str]:
    return e["policy"], e["setting"]


def _split(items: list, parity: int) -> list:
    return [x for i, x in enumerate(items) if i % 2 == parity]


def check_pair(calibration: list[dict], test: list[dict], cal_path: Path, test_path: Path) -> None:
    """A calibration run must be of the test run's policy and suite (one line naming both)."""
    for what in ("policy", "suite"):
        have, want = sorted({e[what] for e in calibration}), sorted({e[what] for e in test})
        if not set(want) <= set(have):
            raise UserError(f"calibration run {cal_path.name} has {what} {', '.join(have) or 'none'}, test run {test_path.name} has {what} "
                            f"{', '.join(want)}; calibrate on a run of the same {what}")


def alarm_report(run: Path, calibration: Path | None = None, alpha: float = 0.05, signals=tuple(SIGNALS)) -> dict:
    """The alarm's calibration and evaluation on ``run`` (calibrated on ``calibration``'s clean successful
    episodes, or, without one, on every other clean episode of ``run``, the rest held out)."""
    if not 0 < alpha < 1:
        raise UserError(f"--alpha {alpha} invalid; valid: a false-positive rate strictly between 0 and 1, e.g. 0.05")
    for name in signals:
        if name not in SIGNALS:
            raise choice_error("signal", name, tuple(SIGNALS))
    test_store = RunStore.open(run)
    test_episodes, test_rows = _load(test_store)
    if not test_episodes:
        raise UserError(f"run {run.name} has no finished episodes without error")
    if calibration is None:
        clean = [e for e in test_episodes if e["perturbation"] == "clean"]
        cal_store, cal_episodes, cal_rows = test_store, _split(clean, 0), test_rows
        held = {e["episode_key"] for e in _split(clean, 1)}
        test_episodes = [e for e in test_episodes if e["perturbation"] != "clean" or e["episode_key"] in held]
    else:
        cal_store = RunStore.open(calibration)
        cal_episodes, cal_rows = _load(cal_store)
        check_pair(cal_episodes, test_episodes, cal_store.path, test_store.path)
        cal_episodes = [e for e in cal_episodes if e["perturbation"] == "clean"]
    cal_traces = traces(cal_store, cal_episodes, cal_rows, signals)
    test_traces = traces(test_store, test_episodes, test_rows, signals)
    need = needed_calibration(alpha)
    out = {"run": str(test_store.path), "calibration_run": str(cal_store.path), "held_out_split": calibration is None, "alpha": alpha,
           "conformal_needed": need, "signals": {}, "settings": []}
    for name in signals:
        have_any = any(test_traces[name].values())
        out["signals"][name] = {"meaning": SIGNALS[name][0], "needs": SIGNALS[name][1],
                                "present": have_any, "note": None if have_any else f"absent: the run has no {SIGNALS[name][1]}"}
    for setting in sorted({_setting(e) for e in test_episodes}):
        policy, label = setting
        cal_ok = [e for e in cal_episodes if _setting(e) == setting and e["success"]]
        group_test = [e for e in test_episodes if _setting(e) == setting]
        hz = float(simulator_of(group_test[0]["suite"]).env_class.control_hz)
        entry = {"policy": policy, "setting": label, "control_hz": hz, "calibration_successes": len(cal_ok), "signals": {}}
        for name in signals:
            with_trace = [e for e in cal_ok if cal_traces[name].get(e["episode_key"])]
            if not any(test_traces[name].get(e["episode_key"]) for e in group_test):
                continue
            fit, conf = _split(with_trace, 0), _split(with_trace, 1)
            if len(conf) < need or not fit:
                where = "half of the run's clean episodes (the other half is held out)" if calibration is None else f"calibration run {cal_store.path.name}"
                raise UserError(f"too few clean successful episodes to calibrate signal {name!r} of {policy} {label} at alpha {alpha}: {len(with_trace)} in the "
                                f"{where}; needed {2 * need} (half fit the per-step scale, half, at least ceil((1-alpha)(n+1)) <= n = {need}, set the "
                                f"conformal quantile); run more clean episodes (with a step budget they can succeed in) or raise --alpha")
            th = calibrate([cal_traces[name][e["episode_key"]] for e in fit], [cal_traces[name][e["episode_key"]] for e in conf], alpha)
            groups = defaultdict(list)
            for e in group_test:
                groups[(e["perturbation"], e["severity"])].append(e)
            evals = [{"perturbation": p, "severity": s, **evaluate(groups[(p, s)], test_traces[name], th, hz, alpha)}
                     for p, s in sorted(groups, key=lambda k: (k[0] != "clean", k))]
            by_family = defaultdict(list)  # a family's severities pooled: more episodes, narrower intervals
            for p, s in groups:
                by_family[family_of(p)].append((p, s))
            families = [{"family": f, "perturbations": sorted(p for p, _ in keys),
                         **evaluate([e for k in keys for e in groups[k]], test_traces[name], th, hz, alpha)}
                        for f, keys in sorted(by_family.items()) if f != "clean" and len(keys) > 1]
            entry["signals"][name] = {"q": th.q, "n_fit": th.n_fit, "n_conformal": th.n_conformal,
                                      "threshold": [{"step": s, "threshold": th.at(s)} for s in th.steps], "groups": evals, "families": families,
                                      "traces": {e["episode_key"]: {"success": bool(e["success"]), "onset": onset(e) if not e["success"] else None,
                                                                    "perturbation": e["perturbation"],
                                                                    "fired": first_alarm(test_traces[name][e["episode_key"]], th),
                                                                    "scores": [[s, v] for s, v in sorted(test_traces[name][e["episode_key"]].items())]}
                                                 for e in group_test if test_traces[name].get(e["episode_key"])}}
        out["settings"].append(entry)
    return out


def family_of(perturbation: str) -> str:
    """``occlusion:3`` -> ``occlusion``; a composition keeps its families joined (``a:1+b:2`` -> ``a+b``)."""
    return "+".join(part.split(":")[0] for part in perturbation.split("+"))


def markdown_lines(report: dict) -> list[str]:
    """Every group's figures with their 95 % intervals as a Markdown table (docs/alarm.md's study tables), each family's
    severities pooled after its own rows."""
    def num(x, p=2):
        return "–" if x is None else f"{x:.{p}f}"

    def ci(x, pair, p=2):
        return num(x, p) if not pair else f"{num(x, p)} ({num(pair[0], p)}–{num(pair[1], p)})"

    lines = []
    for entry in report["settings"]:
        hz = entry["control_hz"]
        lines += [f"{entry['policy']} {entry['setting']}, alpha {report['alpha']}, {entry['calibration_successes']} clean successes to calibrate:", "",
                  "| signal | perturbation | TPR before onset | TPR, failures with an onset | FPR on successes | coverage gap | median lead, steps (s) | AUROC at matched steps |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, sig in entry["signals"].items():
            rows = [(g["perturbation"], g) for g in sig["groups"]] + [(f"{f['family']} (pooled)", f) for f in sig.get("families", [])]
            for label, g in rows:
                tpr = "–" if g["tpr"] is None else f"{round(g['tpr'] * g['failed'])} / {g['failed']} ({num(g['tpr_ci'][0])}–{num(g['tpr_ci'][1])})"
                timed = ("–" if g.get("tpr_onset") is None else
                         f"{round(g['tpr_onset'] * g['onset_failed'])} / {g['onset_failed']} ({num(g['tpr_onset_ci'][0])}–{num(g['tpr_onset_ci'][1])})")
                fpr = "–" if g["fpr"] is None else f"{round(g['fpr'] * g['succeeded'])} / {g['succeeded']} ({num(g['fpr_ci'][0])}–{num(g['fpr_ci'][1])})"
                gap = "–" if g["coverage_gap"] is None else f"{g['coverage_gap']:+.2f} ({g['coverage_gap_ci'][0]:+.2f}–{g['coverage_gap_ci'][1]:+.2f})"
                lead = "–" if g["lead_steps_median"] is None else f"{ci(g['lead_steps_median'], g['lead_steps_ci'], 0)} ({g['lead_steps_median'] / hz:.1f} s)"
                lines.append(f"| {name} | {label} | {tpr} | {timed} | {fpr} | {gap} | {lead} | {ci(g['auroc_matched'], g['auroc_matched_ci'])} |")
        lines.append("")
    return lines


def summary_lines(report: dict) -> list[str]:
    lines = [f"alarm at alpha {report['alpha']}: calibrated on {Path(report['calibration_run']).name}"
             + (" (every other clean episode; the rest held out)" if report["held_out_split"] else "")]
    for name, sig in report["signals"].items():
        if not sig["present"]:
            lines.append(f"  {name}: {sig['note']}")
    fmt = lambda x, p=2: "-" if x is None else f"{x:.{p}f}"
    for entry in report["settings"]:
        lines.append(f"{entry['policy']} {entry['setting']} ({entry['calibration_successes']} clean successes to calibrate)")
        lines.append(f"  {'signal':<14}{'perturbation':<16}{'fail':>5}{'TPR':>6}{'ok':>5}{'FPR':>6}{'lead':>6}{'AUROC@t':>9}")
        for name, sig in entry["signals"].items():
            for g in sig["groups"]:
                lines.append(f"  {name:<14}{g['perturbation']:<16}{g['failed']:>5}{fmt(g['tpr']):>6}{g['succeeded']:>5}{fmt(g['fpr']):>6}"
                             f"{fmt(g['lead_steps_median'], 0):>6}{fmt(g['auroc_matched']):>9}")
    return lines


def write_alarm(report: dict, folder: Path) -> tuple[Path, Path]:
    """``alarm.json`` and ``alarm.png`` in ``folder``."""
    folder = Path(folder)
    RunStore(folder).write_json("alarm.json", report)
    png = folder / "alarm.png"
    plot(report, png)
    return folder / "alarm.json", png


def plot(report: dict, path: Path) -> None:
    """Top: each signal's traces (failed red up to the onset, successful blue) with the threshold; bottom: TPR,
    FPR (alpha dashed) and median lead time per perturbation, one bar per signal."""
    plt = pyplot()

    panels = [(e, n, s) for e in report["settings"] for n, s in e["signals"].items()]
    cols = max(3, len(panels))
    fig, axes = plt.subplots(2, cols, figsize=(4 * cols, 7.5), squeeze=False)
    for ax, (entry, name, sig) in zip(axes[0], panels):
        for t in sig["traces"].values():
            steps = [s for s, _ in t["scores"] if t["success"] or s <= t["onset"]]
            vals = [v for s, v in t["scores"] if t["success"] or s <= t["onset"]]
            ax.plot(steps, vals, color="tab:blue" if t["success"] else "tab:red", alpha=0.5, lw=1, marker=".")
        last = max([sig["threshold"][-1]["step"]] + [s for t in sig["traces"].values() for s, _ in t["scores"]])  # the last threshold holds on
        points = sig["threshold"] + [{"step": last, "threshold": sig["threshold"][-1]["threshold"]}]
        ax.step([p["step"] for p in points], [p["threshold"] for p in points], where="post", color="k", ls="--", label="threshold")
        ax.set_title(f"{name} ({entry['setting']})", fontsize=9)
        ax.set_xlabel("env step")
        ax.plot([], [], color="tab:red", label="failed (to onset)")
        ax.plot([], [], color="tab:blue", label="succeeded")
        ax.legend(fontsize=7)
    for ax in axes[0][len(panels):]:
        ax.axis("off")
    rows = [(f"{e['setting'][:10]} {g['perturbation']}", n, g) for e in report["settings"] for n, s in e["signals"].items() for g in s["groups"]]
    labels = sorted({r[0] for r in rows}, key=lambda x: (" clean" not in x, x))
    names = list(dict.fromkeys(r[1] for r in rows))
    width = 0.8 / max(1, len(names))
    for ax, (metric, ci, title) in zip(axes[1], (("tpr", "tpr_ci", "TPR before onset"), ("fpr", "fpr_ci", "FPR on successes"),
                                                  ("lead_steps_median", "lead_steps_ci", "median lead (steps)"))):
        for j, name in enumerate(names):
            xs, ys, err = [], [], [[], []]
            for r in rows:
                if r[1] == name and r[2][metric] is not None:
                    x = labels.index(r[0]) + j * width
                    xs.append(x)
                    ys.append(r[2][metric])
                    lo, hi = r[2][ci] or (r[2][metric], r[2][metric])
                    err[0].append(r[2][metric] - lo)
                    err[1].append(hi - r[2][metric])
            ax.bar(xs, ys, width, yerr=err, label=name, capsize=2, color=f"C{j}")  # one colour per signal in every panel
        if metric == "fpr":
            ax.axhline(report["alpha"], color="k", ls="--", lw=1, label="alpha")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes[1][3:]:
        ax.axis("off")
    fig.suptitle(f"alarm at alpha {report['alpha']} ({Path(report['run']).name})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- what other reports show: the gallery's cards and `stress card` ------------------------------------------
ALARM_FILE = "alarm.json"


def stored_alarm(run: Path) -> dict | None:
    """The report ``stress alarm RUN`` wrote into the run folder, or None (never run, or unreadable)."""
    path = Path(run) / ALARM_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def alarms_by_episode(report: dict) -> dict[str, list[dict]]:
    """Per test episode of an alarm report, when each signal's calibrated alarm fired relative to the failure onset
    (for a failure; a success has none): ``fired`` (env step or None), ``onset``, ``lead`` (onset - fired, > 0 =
    before the onset) and ``verdict`` (one of ``before onset``, ``at onset``, ``after onset``, ``silent``, ``false
    alarm``, ``quiet``). What the gallery's failure cards show."""
    out: dict[str, list[dict]] = defaultdict(list)
    for entry in report.get("settings", []):
        for name, sig in entry["signals"].items():
            for key, t in sig["traces"].items():
                fired, onset_step = t["fired"], t["onset"]
                if t["success"]:
                    verdict, lead = ("false alarm" if fired is not None else "quiet"), None
                elif fired is None:
                    verdict, lead = "silent", None
                else:
                    lead = onset_step - fired
                    verdict = "before onset" if lead > 0 else "at onset" if lead == 0 else "after onset"
                out[key].append({"signal": name, "setting": entry["setting"], "fired": fired, "onset": onset_step, "lead": lead, "verdict": verdict})
    return dict(out)


def card_summary(run: Path) -> dict | None:
    """The alarm's section of ``stress card``: None when ``stress alarm RUN`` has not been run on ``run``; otherwise
    alpha, where it was calibrated, and per (policy, setting) and signal the clean FPR (the calibration check on
    held-out episodes), the worst coverage gap under a perturbation, the TPR before onset (Wilson interval) and
    the median lead over all perturbed failures, the best signal by TPR (ties: longer lead) and the policy-agnostic baseline's figures beside it,
    plus the line to show. Read from the stored ``alarm.json`` (no recomputation)."""
    report = stored_alarm(run)
    if report is None:
        return None
    settings = []
    for entry in report.get("settings", []):
        rows = []
        for name, sig in entry["signals"].items():
            clean = [g for g in sig["groups"] if g["perturbation"] == "clean"]
            gaps = [g for g in sig["groups"] if g["perturbation"] != "clean" and g["coverage_gap"] is not None]
            worst = max(gaps, key=lambda g: g["coverage_gap"], default=None)
            failures = [t for t in sig["traces"].values() if t["perturbation"] != "clean" and not t["success"]]
            leads = [t["onset"] - t["fired"] for t in failures if t["fired"] is not None and t["fired"] <= t["onset"]]
            rows.append({"signal": name, "baseline": name in BASELINES,
                         "clean_fpr": clean[0]["fpr"] if clean else None, "clean_fpr_ci": clean[0]["fpr_ci"] if clean else None,
                         "failed": len(failures), "tpr": len(leads) / len(failures) if failures else None,
                         "tpr_ci": list(wilson_interval(len(leads), len(failures))) if failures else None,
                         "lead_steps_median": float(np.median(leads)) if leads else None,
                         "worst_coverage_gap": None if worst is None else {"perturbation": worst["perturbation"], "gap": worst["coverage_gap"],
                                                                           "ci": worst["coverage_gap_ci"]}})
        scored = [r for r in rows if r["tpr"] is not None]
        best = max(scored, key=lambda r: (r["tpr"], r["lead_steps_median"] or 0), default=None)
        baseline = max((r for r in scored if r["baseline"]), key=lambda r: r["tpr"], default=None)
        settings.append({"policy": entry["policy"], "setting": entry["setting"], "calibration_successes": entry["calibration_successes"],
                         "signals": rows, "best": best["signal"] if best else None, "baseline": baseline["signal"] if baseline else None})
    fmt = lambda x: "-" if x is None else f"{x:.2f}"
    lines = []
    for s in settings:
        by = {r["signal"]: r for r in s["signals"]}
        if s["best"]:
            b = by[s["best"]]
            text = (f"{s['policy']} {s['setting']}: best alarm {b['signal']} catches {fmt(b['tpr'])} of {b['failed']} perturbed failures before onset "
                    f"(median lead {fmt(b['lead_steps_median'])} steps), clean FPR {fmt(b['clean_fpr'])} at alpha {report['alpha']}")
            if b["worst_coverage_gap"]:
                text += f"; worst coverage gap {b['worst_coverage_gap']['gap']:+.2f} under {b['worst_coverage_gap']['perturbation']}"
            if s["baseline"] and s["baseline"] != s["best"]:
                text += f"; policy-agnostic baseline {s['baseline']} catches {fmt(by[s['baseline']]['tpr'])}"
            lines.append(text)
        else:
            lines.append(f"{s['policy']} {s['setting']}: no perturbed failure to detect")
    return {"alpha": report["alpha"], "calibration_run": report["calibration_run"], "held_out_split": report["held_out_split"],
            "settings": settings, "lines": lines, "picture": str(Path(run) / "alarm.png")}
