"""A protocol run's figures beside the paper's, and the reproduction verdict (``stress run --protocol``).

Per task and per suite: success in percent with its 95 % Wilson interval, pooled over the trials and the
seeds (each seed is a full evaluation; pooling equal-sized seed runs equals the mean of the per-seed rates,
which is what the paper reports). The measured average is the mean of the per-suite rates.

The verdict compares exactly one pair of numbers: the measured average over the run's suites against the
paper's average over the same suites (``Protocol.reference_average``); |measured - paper| <= tolerance
(1.0 points for cosmos-libero) -> "reproduces", else "does not reproduce". It is given only for the clean
episodes of a complete protocol run (every task x trial x seed of the chosen suites at the protocol's step
limits, none errored); otherwise the comparison is printed and the verdict is "not applicable", with why.
Perturbed episodes (``--perturb`` on top of the protocol) get their own per-suite figures, never a verdict.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from scenarios.protocols import Protocol
from stress.core.metrics import wilson_interval
from stress.report.eval_info import eval_info

REPRODUCES, DOES_NOT, NOT_APPLICABLE = "reproduces", "does not reproduce", "not applicable"


def verdict(measured: float, paper: float, tolerance: float, problems: list[str] | None = None) -> dict[str, Any]:
    """The reproduction verdict on a measured average success (percent) against the paper's (percent).

    ``problems``: why the run is not the protocol (a subset, overridden step limits, errored episodes);
    any problem makes the verdict "not applicable" (the difference is still reported)."""
    difference = measured - paper
    within = abs(difference) <= tolerance + 1e-9  # 97.5 vs 98.5 is within 1.0 despite float rounding
    status = NOT_APPLICABLE if problems else REPRODUCES if within else DOES_NOT
    return {"status": status, "measured": measured, "paper": paper, "difference": difference, "tolerance": tolerance, "within_tolerance": within,
            "problems": list(problems or [])}


def _rate(successes: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(successes, n)
    return {"successes": successes, "n": n, "pc_success": 100.0 * successes / n if n else None, "ci95": [100.0 * low, 100.0 * high]}


def _figures(protocol: Protocol, rows: list[dict], suites: tuple[str, ...]) -> dict[str, Any]:
    valid = [e for e in rows if e["error"] is None]
    by_task, by_suite, by_suite_seed = defaultdict(list), defaultdict(list), defaultdict(list)
    for e in valid:
        by_task[(e["suite"], e["task_id"])].append(bool(e["success"]))
        by_suite[e["suite"]].append(bool(e["success"]))
        by_suite_seed[(e["suite"], e["seed"])].append(bool(e["success"]))
    errors = defaultdict(int)
    for e in rows:
        if e["error"] is not None:
            errors[(e["suite"], e["task_id"])] += 1
    order = {s: i for i, s in enumerate(protocol.suites)}
    tasks = [{"suite": s, "task_id": t, **_rate(sum(by_task[(s, t)]), len(by_task[(s, t)])), "errors": errors[(s, t)]}  # tasks with only errors too
             for s, t in sorted(set(by_task) | set(errors), key=lambda key: (order[key[0]], key[1]))]
    per_suite = []
    for suite in (s for s in suites if by_suite[s]):
        outcomes = by_suite[suite]
        row = {"suite": suite, **_rate(sum(outcomes), len(outcomes)), "paper": protocol.paper_figure(suite),
               "errors": sum(n for (s, _), n in errors.items() if s == suite),
               "per_seed": {seed: 100.0 * sum(by_suite_seed[(suite, seed)]) / len(by_suite_seed[(suite, seed)])
                            for seed in protocol.seeds if by_suite_seed[(suite, seed)]}}
        row["difference"] = row["pc_success"] - row["paper"]
        row["paper_in_ci"] = row["ci95"][0] <= row["paper"] <= row["ci95"][1]
        per_suite.append(row)
    measured = [r["suite"] for r in per_suite]
    average = sum(r["pc_success"] for r in per_suite) / len(per_suite) if per_suite else None
    seeds = {seed: sum(r["per_seed"][seed] for r in per_suite) / len(per_suite)
             for seed in protocol.seeds if per_suite and all(seed in r["per_seed"] for r in per_suite)}
    pooled = _rate(sum(r["successes"] for r in per_suite), sum(r["n"] for r in per_suite))
    return {"per_task": tasks, "per_suite": per_suite, "suites": measured, "average": average, "average_ci95": pooled["ci95"],
            "per_seed_average": seeds, "paper_average": protocol.reference_average(measured) if measured else None,
            "episodes": len(valid), "errors": len(rows) - len(valid)}


def _problems(protocol: Protocol, clean: list[dict], suites: tuple[str, ...]) -> list[str]:
    """Why the clean episodes are not the complete protocol on ``suites`` (empty when they are)."""
    expected = {(s, t, i, seed) for s in suites for t in range(protocol.tasks_per_suite) for i in range(protocol.trials) for seed in protocol.seeds}
    problems = []
    overridden = sorted({e["max_steps"] for e in clean if e["max_steps"] != protocol.step_limit(e["suite"])})
    if overridden:
        problems.append(f"step limits overridden (max_steps {', '.join(map(str, overridden))}; the protocol's: "
                        f"{', '.join(f'{s} {protocol.step_limit(s)}' for s in suites)})")
    done = {(e["suite"], e["task_id"], e["init_index"], e["seed"]) for e in clean if e["error"] is None}
    if len(done & expected) < len(expected):
        problems.append(f"subset: {len(done & expected)} of the protocol's {len(expected)} episodes on {', '.join(suites)} "
                        f"({protocol.tasks_per_suite} tasks x {protocol.trials} trials x {len(protocol.seeds)} seeds per suite)")
    errored = sum(1 for e in clean if e["error"] is not None)
    if errored:
        problems.append(f"{errored} episodes errored (stress show RUN lists them; policy_unavailable ones run again on --resume)")
    return problems


def protocol_report(protocol: Protocol, episodes: list[dict], suites=None, not_applied: dict | None = None) -> dict[str, Any]:
    """The figures of a protocol run's episodes (rows of ``episodes.parquet``).

    ``suites``: the suites the run chose (default: every protocol suite with an episode). ``not_applied``: the
    protocol's policy options the backend could not take (name -> value); a model policy then did not run the
    paper's settings, which the verdict lists as a problem. Returns
    ``{"protocol", "suites", "clean": figures + "verdict", "perturbed": {label: figures}}``."""
    suites = tuple(s for s in protocol.suites if s in set(suites if suites is not None else (e["suite"] for e in episodes)))
    clean = [e for e in episodes if e["perturbation"] == "clean"]
    figures = _figures(protocol, clean, suites)
    if figures["average"] is None:
        figures["verdict"] = {"status": NOT_APPLICABLE, "problems": ["no finished clean episode"], "tolerance": protocol.tolerance}
    else:
        problems = _problems(protocol, clean, suites) + [f"policy option {k}={v} not applied (the backend has no such setting)" for k, v in (not_applied or {}).items()]
        figures["verdict"] = verdict(figures["average"], figures["paper_average"], protocol.tolerance, problems)
    perturbed = defaultdict(list)
    for e in episodes:
        if e["perturbation"] != "clean":
            perturbed[e["perturbation"]].append(e)
    return {"protocol": protocol.to_dict(), "suites": list(suites), "clean": figures,
            "perturbed": {label: _figures(protocol, rows, suites) for label, rows in sorted(perturbed.items())}}


def verdict_line(report: dict[str, Any]) -> str:
    """One line saying what the verdict compares and its outcome."""
    v, clean = report["clean"]["verdict"], report["clean"]
    if "measured" not in v:
        return f"verdict: {v['status']} ({'; '.join(v['problems'])})"
    text = (f"verdict: measured average {v['measured']:.1f} % vs the paper's {v['paper']:.1f} % over {', '.join(clean['suites'])} "
            f"(clean episodes, mean of the per-suite rates): {v['difference']:+.1f} points, tolerance ±{v['tolerance']:.1f} -> {v['status']}")
    if v["problems"]:
        text += f" ({'; '.join(v['problems'])}; the comparison above is indicative only)"
    return text


def protocol_tables(report: dict[str, Any]) -> tuple[dict[str, list[dict]], dict]:
    """The report as display rows and their layout (title, columns) for the CLI's table printer: per task, per suite
    beside the paper's (plus the average), and per perturbation and suite."""
    name, clean = report["protocol"]["name"], report["clean"]
    rate = lambda r: {"success": f"{r['pc_success']:.1f} % ({r['successes']}/{r['n']})" if r["n"] else "—",
                      "ci": f"{r['ci95'][0]:.1f}–{r['ci95'][1]:.1f} %" if r["n"] else "—"}
    seeds = lambda by_seed: ", ".join(f"{seed}: {pc:.1f}" for seed, pc in by_seed.items())
    tables = {"tasks": [{"suite": r["suite"], "task": r["task_id"], **rate(r), "errors": r["errors"]} for r in clean["per_task"]],
              "suites": [{"suite": r["suite"], **rate(r), "paper": r["paper"], "difference": r["difference"], "paper_in_ci": "yes" if r["paper_in_ci"] else "no",
                          "seeds": seeds(r["per_seed"]), "errors": r["errors"]} for r in clean["per_suite"]],
              "perturbed": [{"perturbation": label, "suite": r["suite"], **rate(r), "paper": r["paper"]}
                            for label, figures in report["perturbed"].items() for r in figures["per_suite"]]}
    if clean["average"] is not None:
        low, high = clean["average_ci95"]
        tables["suites"].append({"suite": "average", "success": f"{clean['average']:.1f} %", "ci": f"{low:.1f}–{high:.1f} %", "paper": clean["paper_average"],
                                 "difference": clean["average"] - clean["paper_average"], "seeds": seeds(clean["per_seed_average"])})
    layout = {
        "tasks": (f"{name}: success per task (clean; trials x seeds pooled, 95% Wilson interval)", [
            ("suite", "suite", "s"), ("task", "task", "d"), ("success", "success", "s"), ("95% CI", "ci", "s"), ("errors", "errors", "d")]),
        "suites": (f"{name}: success per suite beside the paper's (percent)", [
            ("suite", "suite", "s"), ("success", "success", "s"), ("95% CI", "ci", "s"), ("paper", "paper", ".1f"), ("difference", "difference", "+.1f"),
            ("paper in CI", "paper_in_ci", "s"), ("per seed", "seeds", "s"), ("errors", "errors", "d")]),
        "perturbed": (f"{name} under perturbation (no verdict: the paper measured clean scenes)", [
            ("suite", "suite", "s"), ("success", "success", "s"), ("95% CI", "ci", "s"), ("paper (clean)", "paper", ".1f")]),
    }
    return tables, layout


def write_protocol_report(store, protocol: Protocol, suites=None, not_applied: dict | None = None) -> dict[str, Any]:
    """Compute the report of a protocol run and write ``RUN/eval_info.json``: LeRobot's shape (``per_episode``,
    ``per_task``, ``per_group``, ``overall``; stress.report.eval_info) over the clean episodes, plus a
    ``protocol`` entry with this report."""
    episodes = store.query("SELECT * FROM episodes")
    report = protocol_report(protocol, episodes, suites, not_applied)
    order = {}
    for i, spec in enumerate(store.specs()):
        order.setdefault(spec.key, i)
    info = eval_info([e for e in episodes if e["perturbation"] == "clean"], order, {})
    info["protocol"] = report
    store.write_json("eval_info.json", info)
    return report
