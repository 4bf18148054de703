"""What several commands print about a stored run: its summary, degradation, protocol and search tables, and its
failure gallery."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from scenarios.protocols import get_protocol
from stress.cli.common import console, print_tables
from stress.report.degradation import degradation, load
from stress.report.degradation_plot import save_degradation_plot
from stress.report.gallery import DEFAULT_VIDEOS, build_gallery as write_gallery
from stress.report.language import language_sensitivity
from stress.report.protocol import protocol_tables, verdict_line, write_protocol_report
from stress.report.maps import map_layout, map_tables
from stress.report.search import search_tables
from stress.report.summary import error_counts, summarise


def print_summary(store) -> None:
    table = Table(title=f"{store.path.name}: success rate (95% Wilson interval)")
    for column in ("policy", "setting", "perturbation", "sev", "n", "success", "95% CI", "clean, same inits", "errors"):
        table.add_column(column, justify="left" if column in ("policy", "setting", "perturbation") else "right")
    for r in summarise(store):
        clean = "—" if r.clean_rate is None else f"{r.clean_rate:.0%} (n={r.clean_pairs})"
        rate = "—" if r.episodes == r.errors else f"{r.rate:.0%} ({r.successes}/{r.episodes - r.errors})"
        table.add_row(r.policy, r.setting, r.perturbation, str(r.severity), str(r.episodes), rate, f"{r.low:.0%}–{r.high:.0%}", clean, str(r.errors))
    out = console()
    out.print(table)
    for e in error_counts(store):
        out.print(f"errors: {e['n']} x {e['kind']} (e.g. {e['example'][:160]})")


def print_degradation(store) -> None:
    """The degradation tables (stress.report.degradation); a table without data is one line saying how to get it."""
    tables = write_degradation(store)
    for row in tables["failures"]:
        row["counts_text"] = ", ".join(f"{k} {v}" for k, v in sorted(row["counts"].items(), key=lambda kv: -kv[1]))
    print_tables(tables, DEGRADATION_TABLES, DEGRADATION_HINTS)


def write_degradation(store) -> dict:
    """RUN/degradation.json and RUN/degradation.png; returns the tables."""
    episodes, decisions = load(store)
    tables = degradation(episodes, decisions)
    store.write_json("degradation.json", tables)
    if episodes:
        save_degradation_plot(episodes, decisions, tables, store.path / "degradation.png")
    return tables


def print_language(store) -> None:
    """The language-sensitivity table (stress.report.language); nothing for a run without the language family."""
    print_tables({"language": language_sensitivity(*load(store), frames=store.frames)}, LANGUAGE_TABLE)


LANGUAGE_TABLE = {"language": (
    "language sensitivity vs clean on the same inits (robustness: breaks should stay 0; grounding: breaks near 100 % = listening)", [
        ("kind", "kind", "s"), ("n", "episodes", "d"), ("success", "success", ".0%"), ("pairs", "pairs", "d"), ("clean", "clean_success", ".0%"),
        ("breaks (clean ok)", "breaks", ".0%"), ("edit dist", "edit_distance", ".2f"), ("word dist", "word_distance", ".2f"),
        ("embed dist", "embedding_distance", ".2f"),
        ("|value shift| step 0", "value_shift", ".3f"), ("future shift step 0 (0-255)", "future_shift", ".2f")])}


DEGRADATION_HINTS = {  # how to get a table a run has no data for
    "robustness": "keep the clean baseline (leave out --no-baseline)", "direct_vs_planning": "run with --mode both",
    "failures": "no episode failed", "seeds": "run with --policy-seeds 2", "world_model": "a policy with a world model and --true-futures executed",
    "value": "a policy that predicts values (--policy reference)", "selection": "run with --counterfactual-rollouts 1 and a planning mode",
}


DEGRADATION_TABLES = {
    "robustness": ("robustness vs clean on the same init states", [("pairs", "pairs", "d"), ("relative robustness", "relative_robustness", ".2f"), ("breakage", "breakage_rate", ".0%")]),
    "direct_vs_planning": ("best-of-N planning vs the direct policy, paired on the same scenarios", [
        ("n", "n", "d"), ("direct", "direct", ".0%"), ("planning", "planning", ".0%"), ("both", "both", "d"), ("direct only", "direct_only", "d"),
        ("planning only", "planning_only", "d"), ("neither", "neither", "d"), ("McNemar p", "mcnemar_p", ".3f"),
        ("P(plan fails | direct ok)", "p_planning_fails_given_direct_succeeds", ".0%"), ("P(plan ok | direct fails)", "p_planning_succeeds_given_direct_fails", ".0%")]),
    "failures": ("how the failures failed (signatures from simulator state)", [
        ("failures", "failures", "d"), ("most common", "top_signature", "s"), ("its share", "top_share", ".0%"), ("all", "counts_text", "s")]),
    "seeds": ("seed sensitivity: outcome flips when only the policy seed changes", [
        ("scenarios", "scenarios", "d"), ("seeds", "seeds", "d"), ("flip rate", "flip_rate", ".0%")]),
    "world_model": ("world model: predicted vs true future (copy-current-frame baseline)", [
        ("decisions", "decisions", "d"), ("PSNR", "future_psnr", ".2f"), ("copy PSNR", "baseline_psnr", ".2f"), ("SSIM", "future_ssim", ".3f"),
        ("copy SSIM", "baseline_ssim", ".3f"), ("PSNR agentview", "future_psnr_agentview", ".2f"), ("PSNR wrist", "future_psnr_wrist", ".2f"),
        ("PSNR occluded", "future_psnr_occluded", ".2f"), ("copy occluded", "baseline_psnr_occluded", ".2f"), ("PSNR visible", "future_psnr_visible", ".2f")]),
    "value": ("value predictions vs what happened", [
        ("decisions", "decisions", "d"), ("AUROC", "auroc", ".3f"), ("Brier", "brier", ".3f"), ("ECE", "ece", ".3f"),
        ("over-estimation", "overestimation", "+.3f"), ("over-est. (failed)", "overestimation_failed", "+.3f")]),
    "selection": ("best-of-N selection against counterfactual true outcomes", [
        ("decisions", "decisions", "d"), ("measured", "measured", "d"), ("regret", "regret", ".3f"), ("rank", "rank", ".2f"), ("Spearman", "spearman", "+.2f"),
        ("worse than direct", "worse_than_direct", ".0%"), ("better than direct", "better_than_direct", ".0%"), ("spread", "action_spread", ".2f"),
        ("ranking AUROC", "ranking_auroc", ".3f"), ("95% low", "ranking_auroc_low", ".3f"), ("95% high", "ranking_auroc_high", ".3f"),
        ("pairs", "ranking_pairs", "d")]),
}


def print_protocol(store) -> None:
    """A protocol run's figures beside the paper's, the verdict, and RUN/eval_info.json (stress.report.protocol)."""
    config = store.manifest.get("config", {})
    if not config.get("protocol"):
        return
    report = write_protocol_report(store, get_protocol(config["protocol"]), config.get("protocol_suites"), config.get("protocol_not_applied"))
    print_tables(*protocol_tables(report))
    print(verdict_line(report))
    print(f"LeRobot eval_info.json (clean episodes + the protocol report): {store.path / 'eval_info.json'}")


def print_map(report: dict) -> None:
    print_tables(map_tables(report), map_layout(report))


def print_search(report: dict) -> None:
    tables = search_tables(report)
    print_tables(tables, {
        "runs": (f"search for violations of {report['property']}: evaluations spent vs violations found", [
            ("run", "run", "s"), ("sampler", "sampler", "s"), ("scenarios", "evaluations", "d"), ("violations", "violations", "d"),
            ("per 100", "per_100", ".1f"), ("first at", "first", "d"), ("modes", "modes", "d"), ("invalid", "invalid", "d"), ("episodes run", "episodes", "d")]),
        "findings": ("findings: original -> shrunk (stress replay RUN/findings/ID.json)", [
            ("id", "id", "s"), ("failure mode", "failure_mode", "s"), ("original", "original", "s"), ("shrunk", "shrunk", "s"), ("fields", "fields", "s"),
            ("shrink evals", "shrink", "d"), ("1-minimal", "minimal", "s"), ("replay", "replay", "s"), ("verdict", "verdict", "s")]),
    })
    iid = report["iid"]
    if iid["n"]:
        low, high = iid["ci95"]
        print(f"unbiased estimate (i.i.d. {iid['source']} slice, n={iid['n']}): violation rate {iid['rate']:.1%} (95% Wilson {low:.1%}-{high:.1%}); "
              "the findings above are adversarial and say nothing about this rate")
    if not report["findings"] and not any(r["violations"] for r in tables["runs"]):
        print("no violation found within the budget")
    elif not report["findings"]:
        print("violations found (above), none shrunk into a finding (--max-findings 0)")


def build_gallery(run, out, workers, max_cards, videos=DEFAULT_VIDEOS):
    """Build a gallery with a progress bar for the videos; print where it is and what it cost."""
    err = Console(stderr=True)
    started = time.perf_counter()
    with Progress(TextColumn("[bold]gallery videos"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err, disable=not err.is_terminal) as bars:
        task = bars.add_task("videos", total=None)
        result = write_gallery(run, out, workers=workers, max_cards=max_cards, videos=videos, progress=lambda done, total: bars.update(task, completed=done, total=total))
    for line in result.missing:
        err.print(f"warning: {line}", markup=False, highlight=False)
    print(f"gallery: {result.failures} failed episodes, {result.cards} full cards; videos: {result.rendered} rendered, {result.cached} cached "
          f"({time.perf_counter() - started:.0f} s)")
    print(f"open: {result.path.resolve().as_uri()}")
    return result
