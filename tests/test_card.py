"""`stress card`: the design (pairs, budget, shared episodes), what a policy or suite cannot be tested for, bad input,
one real card on the reference model (short episodes, tiny budget), a second card that reuses every episode, and
card.html in a real browser (skips without chromium, like the gallery's tests)."""

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import run_cli
from scenarios.card import (HYPOTHESES, MIN_UNITS, SWAP_LEVEL, Context, blocks_for, block_specs, design, language_swap, push_params, smallest_budget,
                            applicability, units_of)
from stress.report.card import html, markdown, summary
from stress.report.language import language_sensitivity

CHROMIUM = shutil.which("chromium") or shutil.which("/usr/bin/chromium")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
BUDGET = "12"  # every hypothesis but the fifth gets one scenario: H1 4 + H2 1 + H3 5 + H4 2 more episodes


def _context(policy="reference", suite="libero_spatial"):
    families, _ = applicability(policy, suite)
    return Context(suite=suite, policy=policy, seed=0, max_steps=8, image_size=128, candidates=8, aggregation="average", options=(),
                   severities={}, replan=("replan_steps", 16, 4), families=families, language_swap=language_swap(suite, families, {}))


def test_design_pairs_identical_scenarios_within_the_budget():
    c = _context()
    units = units_of("libero_spatial", [0, 1])
    blocks = blocks_for(c, [h.id for h in HYPOTHESES])
    specs, allocation = design(c, blocks, units, 45)
    assert len(specs) <= 45 and len({s.key for s in specs}) == len(specs)
    assert all(len(v) >= MIN_UNITS for v in allocation.values()), allocation  # round-robin: every block gets scenarios
    assert allocation["ood_amplification"][:2] == [(0, 0), (1, 0)]  # init 0 of each task first
    ood = block_specs(c, "ood_amplification", allocation["ood_amplification"], units)
    direct, planning = ood[2], ood[3]  # perturbed direct and planning on one scenario: the same spec but the mode
    assert direct.perturbations and replace(planning, mode="direct", n_candidates=1, aggregation=None) == direct
    flips = block_specs(c, "borderline_flips", allocation["borderline_flips"][:1], units)
    assert [s.seed for s in flips] == [0, 1, 2, 0, 1, 2] and len({s.clean().key for s in flips}) == 3  # 3 seeds, clean and near the boundary
    cascades = block_specs(c, "open_loop_cascades", allocation["open_loop_cascades"][:1], units)
    assert [dict(s.policy_options).get("replan_steps") for s in cascades] == [None, 4, None, 4]
    assert cascades[2].perturbations[0].params == push_params(3, units[0], 0)  # the same push at both lengths
    assert cascades[0].key == ood[0].key  # the clean direct episode is shared (run once)
    language = block_specs(c, "language", allocation["language"][:1], units)  # meaning kept (the profile's) and another task's instruction
    profile = {s.key for s in block_specs(c, "profile", allocation["profile"][:1], units)}
    assert [s.label for s in language] == ["clean", "language:3", f"language:{SWAP_LEVEL}"] and [s.key in profile for s in language] == [True, True, False]
    assert language_swap("aloha", applicability("aloha-expert", "aloha")[0], {}) is None  # ALOHA's tasks share no scene: no swap to run


def test_smallest_budget_and_what_cannot_be_tested():
    c = _context()
    blocks = blocks_for(c, [h.id for h in HYPOTHESES])
    assert smallest_budget(c, blocks, units_of("libero_spatial", [0])) == (4, "value_overconfidence")
    _, untestable = applicability("aloha-expert", "aloha")
    assert set(untestable) == {"ood_amplification", "value_overconfidence", "borderline_flips", "mode_collapse"}
    assert "no value head" in untestable["value_overconfidence"] and "ignores its seed" in untestable["borderline_flips"]
    _, untestable = applicability("expert", "libero_spatial")
    assert "no planning mode" in untestable["ood_amplification"] and "replan_steps or chunk" in untestable["open_loop_cascades"]
    families, untestable = applicability("reference", "robosuite")
    assert "supports none of its families" in untestable["ood_amplification"] and "mid_chunk_push" in untestable["open_loop_cascades"]
    assert families["profile"] == ("language", "lighting", "sensor_noise")


def test_bad_input_one_line_each(tmp_path):
    proc = run_cli("card", "--budget-episodes", "3", "--out", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [("stress: error: --budget-episodes 3 is too small for any hypothesis; valid: 4 or more "
                                                 "(the smallest useful budget: value_overconfidence on 2 scenarios)")]
    proc = run_cli("card", "--policy", "expert", "--budget-episodes", "2", "--out", str(tmp_path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 5, proc.stderr  # one line per hypothesis it cannot test, then the budget
    assert lines[0] == "card: H1 OOD amplification not testable: policy 'expert' has no planning mode (best-of-N)"
    assert "valid: 12 or more (the smallest useful budget: borderline_flips" in lines[-1]
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    """A real card on the reference model: libero_spatial task 0, 8-step episodes, best-of-2, budget 12; then a second card on
    the same scenarios that reuses every episode of the first."""
    out = tmp_path_factory.mktemp("card")
    proc = run_cli("card", "--budget-episodes", BUDGET, "--max-steps", "8", "--candidates", "2", "--out", str(out / "first"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("not testable") == 1 and "card: H5 Mode collapse with few samples not testable: --candidates 2" in proc.stderr
    (first,) = (out / "first").iterdir()
    again = run_cli("card", "--budget-episodes", BUDGET, "--max-steps", "8", "--candidates", "2", "--out", str(out / "second"), "--reuse", str(first))
    assert again.returncode == 0, again.stderr
    (second,) = (out / "second").iterdir()
    return first, proc, second, again


def test_card_files_and_every_number_with_n_interval_and_keys(card):
    first, proc, _, _ = card
    lines = proc.stdout.strip().splitlines()
    assert 8 <= len(lines) <= 20 and lines[0].startswith("card: reference on libero_spatial task(s) 0; 12 episodes (0 reused, 12 run, 0 errors)")
    report = json.loads((first / "card.json").read_text())
    assert report["format"] == "stress-card/1" and [h["number"] for h in report["hypotheses"]] == [1, 2, 3, 4, 5]
    stored = {p.stem for p in (first / "parts").glob("*.parquet")}
    for h in report["hypotheses"][:4]:
        assert h["verdict"] in ("supported", "not supported", "inconclusive at this budget"), h
        assert {"difference", "low", "high", "n", "name", "margin"} <= set(h["effect"]) and h["episode_keys"]
        assert set(h["episode_keys"]) <= stored and set(h["failed_keys"]) <= set(h["episode_keys"])
        assert h["scenarios"] == 1
    assert report["hypotheses"][0]["details"]["perturbed"]["n"] == 1  # one OOD pair at this budget
    assert report["hypotheses"][4]["why"] == "--candidates 2 leaves no best-of-N above best-of-2 to compare with; valid: 3 or more"
    ledger = report["ledger"]
    assert ledger["overall"]["n"] == 2 and all(set(r["episode_keys"]) <= stored for r in ledger["rows"])  # clean and OOD pairs
    assert {p["axis"] for p in report["profile"]} == {"camera", "robot initial state", "language", "lighting", "background", "sensor noise", "layout"}
    md = (first / "card.md").read_text()
    assert "| 1 | OOD amplification |" in md and "## Planning-gain ledger" in md and "## Robustness profile" in md


def test_second_card_over_the_same_scenarios_runs_nothing(card):
    first, _, second, again = card
    assert again.stdout.startswith("card: reference on libero_spatial task(s) 0; 12 episodes (12 reused, 0 run, 0 errors)"), again.stdout
    a, b = (json.loads((p / "card.json").read_text()) for p in (first, second))
    assert [h["verdict"] for h in a["hypotheses"]] == [h["verdict"] for h in b["hypotheses"]]
    assert a["ledger"]["overall"] == b["ledger"]["overall"]


def _alarm_json(keys: list[str]) -> dict:
    """A stored ``stress alarm`` report (alarm.json's fields the card reads): the value signal fired 4 steps before
    the onset of two perturbed failures and stayed quiet on a clean success. The fixture's 8-step episodes never
    succeed, so the real command could not calibrate on them."""
    traces = {keys[0]: {"success": True, "onset": None, "perturbation": "clean", "fired": None, "scores": [[0, 0.1]]}}
    traces |= {k: {"success": False, "onset": 6, "perturbation": "object_pose:3", "fired": 2, "scores": [[0, 0.2], [2, 0.9]]} for k in keys[1:3]}
    groups = [{"perturbation": "clean", "fpr": 0.0, "fpr_ci": [0.0, 0.79], "coverage_gap": -0.05, "coverage_gap_ci": [-0.05, 0.74]},
              {"perturbation": "object_pose:3", "fpr": None, "fpr_ci": None, "coverage_gap": None, "coverage_gap_ci": None}]
    return {"run": "card", "calibration_run": "/somewhere/clean-run", "held_out_split": False, "alpha": 0.1,
            "settings": [{"policy": "reference", "setting": "direct", "calibration_successes": 12, "signals": {"value": {"groups": groups, "traces": traces}}}]}


def test_alarm_section_absent_then_added_by_re_rendering(card, tmp_path):
    first, proc, _, _ = card
    report = json.loads((first / "card.json").read_text())
    command = f"run `stress alarm {first}`"
    assert not report["alarm"]["measured"] and command in report["alarm"]["line"] and f"`stress card --resume {first}`" in report["alarm"]["line"]
    assert sum(command in line for line in proc.stdout.splitlines()) == 1  # one terminal line says how to add it
    assert command in (first / "card.md").read_text() and command in (first / "card.html").read_text()
    assert report["language"] == {"measured": False, "rows": [], "note": "not measured at this budget (no scenario for the profile's language episodes)"}
    folder = tmp_path / "card"
    shutil.copytree(first, folder)
    keys = sorted(json.loads((folder / "card.json").read_text())["hypotheses"][0]["episode_keys"])
    (folder / "alarm.json").write_text(json.dumps(_alarm_json(keys)))
    again = run_cli("card", "--resume", str(folder))
    assert again.returncode == 0, again.stderr
    lines = again.stdout.strip().splitlines()
    assert len(lines) <= 20 and "alarm: reference direct: best alarm value catches 1.00 of 2 perturbed failures before onset (median lead 4.00 steps), clean FPR 0.00 at alpha 0.1" in lines
    report = json.loads((folder / "card.json").read_text())
    assert report["alarm"]["measured"] and report["alarm"]["calibration"] == "clean-run" and report["alarm"]["stale"] == 0
    (row,) = report["alarm"]["settings"][0]["signals"]
    assert row["tpr"] == 1.0 and row["failed"] == 2 and row["lead_steps_median"] == 4.0
    assert "| reference direct | value (best) | 0.00 [0.00, 0.79] | 1.00 [0.34, 1.00] | 2 | 4 | — |" in (folder / "card.md").read_text()
    section = (folder / "card.html").read_text().split('<section id="alarm">')[1].split("</section>")[0]
    assert "not measured" not in section and "<td>reference direct</td><td>value (best)</td>" in section


def test_language_section_from_two_levels(card):
    """The section as the card renders it, from language_sensitivity on stored rows: a meaning-preserving rewrite the
    policy survives and another task's instruction that breaks it, the value moving with the words."""
    first, *_ = card
    report = json.loads((first / "card.json").read_text())
    base = {"suite": "libero_spatial", "task_id": 0, "init_index": 0, "seed": 0, "policy": "reference", "setting": "direct"}
    told = {3: ("please pick up the black bowl", "robustness"), 4: ("pick up the ketchup and place it in the basket", "grounding")}
    episodes = [base | {"episode_key": "c", "perturbation": "clean", "severity": 0, "success": True, "perturbations": "[]"}]
    episodes += [base | {"episode_key": f"l{level}", "perturbation": f"language:{level}", "severity": level, "success": level == 3,
                         "perturbations": json.dumps([{"name": "language", "realisation": {"original": "pick up the black bowl", "instruction": text, "kind": kind,
                                                                                           "normalised_edit_distance": 0.2, "word_distance": 0.3}}])}
                 for level, (text, kind) in told.items()]
    decisions = [{"episode_key": k, "step": 0, "candidate": -1, "pred_value": v} for k, v in (("c", 0.8), ("l3", 0.78), ("l4", 0.5))]
    rows = language_sensitivity(episodes, decisions)
    report["language"] = {"measured": True, "rows": rows, "note": "future shift: a card stores no predicted frames"}
    assert [(r["severity"], r["breaks"], round(r["value_shift"], 2)) for r in rows] == [(3, 0.0, 0.02), (4, 1.0, 0.3)]
    md = markdown(report)
    assert "| language:4 | grounding | 1 | 0 % | 100 % (n=1) | 100 % (n=1) |" in md and "Note: future shift" in md
    assert "language (breaks of clean successes): language:3 robustness 0 % of 1, value shift 0.020; language:4 grounding 100 % of 1, value shift 0.300" in summary(report)
    assert html(report).count("<td>language:") == 2


def test_card_html_in_a_real_browser(card):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")
    if not CHROMIUM:
        pytest.skip("chromium not installed (apt-get install chromium; .ci/run does it)")
    first, *_ = card
    report = json.loads((first / "card.json").read_text())
    failed = {k for h in report["hypotheses"] for k in h.get("failed_keys", [])}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        tab = browser.new_page()
        log = []
        tab.on("console", lambda m: log.append((m.type, m.text)))
        tab.on("pageerror", lambda e: log.append(("pageerror", str(e))))
        requests = []
        tab.on("request", lambda r: requests.append(r.url))
        tab.goto((first / "card.html").as_uri())
        tab.wait_for_load_state("load")
        assert [m for m in log if m[0] in ("error", "pageerror")] == [] and all(u.startswith("file://") for u in requests), (log, requests)
        titles = tab.eval_on_selector_all("article.hypothesis h3", "els => els.map(e => e.textContent)")
        assert [t.split(":")[0] for t in titles] == [f"H{h.number} {h.title}" for h in HYPOTHESES]
        links = tab.eval_on_selector_all("a[href^='gallery/index.html#card-']", "els => els.map(e => e.getAttribute('href'))")
        assert {re.sub(r"^gallery/index.html#card-", "", h) for h in links} == failed
        hrefs = tab.eval_on_selector_all("[href], [src]", "els => els.map(e => e.getAttribute('href') || e.getAttribute('src'))")
        assert not [h for h in hrefs if re.match(r"^[a-z]+:", h) or h.startswith("/")], "links must be relative"
        browser.close()
    assert Path(first / "card.md").is_file()


def test_reference_policy_executes_replan_steps_of_each_chunk():
    import numpy as np

    from stress.core.errors import UserError
    from stress.core.policy import Observation
    from stress.policies.reference.policy import ReferencePolicy

    rng = np.random.default_rng(0)
    obs = Observation(images={c: rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for c in ("agentview", "wrist")}, proprio=np.zeros(9),
                      instruction="", step=0)
    short = ReferencePolicy(replan_steps=4)
    short.reset("", 0, "direct")
    b = short.act(obs)
    short.replan_steps = 16  # the same instance with the whole chunk: the same noise seed, the same chunk
    short.reset("", 0, "direct")
    a = short.act(obs)
    assert a.actions.shape[0] == 16 and b.actions.shape[0] == 4 and np.array_equal(a.actions[:4], b.actions)  # the same chunk, cut
    short.replan_steps = 4
    short.reset("", 0, "planning", 2, "average")
    assert short.act(obs).actions.shape[0] == 4
    with pytest.raises(UserError, match="replan_steps 0 invalid; valid: 1-16"):
        ReferencePolicy(replan_steps=0)
