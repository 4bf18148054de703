"""The degradation report tables (stress.report.degradation) on hand-built episodes and decisions
(the metric functions themselves: tests/test_metrics.py)."""

import math

import pytest

from stress.core.metrics import spearman
from stress.report.degradation import compare, degradation


def _episode(key, mode, success, perturbation="clean", severity=0, init=0, policy="reference", failure=None):
    return {"failure": failure or ("success" if success else "timeout"), "episode_key": key, "suite": "libero_spatial", "task_id": 0, "init_index": init, "perturbation": perturbation,
            "severity": severity, "seed": 0, "policy": policy, "mode": mode, "setting": "direct" if mode == "direct" else "best-of-3 average",
            "success": success, "spec": "{}"}


def _decision(episode, step, candidate, chosen, pred, **more):
    return {"episode_key": episode["episode_key"], "step": step, "candidate": candidate, "chosen": chosen, "pred_value": pred,
            "policy": episode["policy"], "mode": episode["mode"], "setting": episode["setting"], "perturbation": episode["perturbation"], "severity": episode["severity"],
            "episode_success": episode["success"], **more}


def test_report_tables_on_hand_built_run():
    episodes = [_episode("d0", "direct", True, init=0), _episode("p0", "planning", False, init=0),
                _episode("d1", "direct", False, init=1), _episode("p1", "planning", False, init=1),
                _episode("d0o", "direct", False, "occlusion:3", 3, init=0), _episode("d1o", "direct", False, "occlusion:3", 3, init=1)]
    d0, p0, d1 = episodes[:3]
    decisions = [
        _decision(d0, 0, -1, True, 0.8, realised_value=0.9, future_psnr=20.0, baseline_psnr=18.0, future_ssim=0.6, baseline_ssim=0.5),
        _decision(d1, 0, -1, True, 0.6, realised_value=0.0, future_psnr=22.0, baseline_psnr=18.0, future_ssim=0.7, baseline_ssim=0.5),
        _decision(p0, 0, -1, True, 0.9, realised_value=0.0),
        # planning: candidate 1 (chosen, highest predicted value) truly fails; 0 and 2 succeed
        _decision(p0, 0, 0, False, 0.5, true_outcome=1.0, action_spread=2.0),
        _decision(p0, 0, 1, True, 0.9, true_outcome=0.0, action_spread=2.0),
        _decision(p0, 0, 2, False, 0.1, true_outcome=1.0, action_spread=2.0),
        _decision(p0, 16, 0, True, 0.4, action_spread=1.0),  # no rollout at this decision
        _decision(p0, 16, 1, False, 0.3, action_spread=1.0),
    ]
    tables = degradation(episodes, decisions)
    (paired_clean,) = [r for r in tables["direct_vs_planning"] if r["perturbation"] == "clean"]
    assert (paired_clean["n"], paired_clean["direct_only"], paired_clean["neither"]) == (2, 1, 1)
    assert paired_clean["p_planning_fails_given_direct_succeeds"] == 1.0
    failures = {(r["setting"], r["perturbation"]): r for r in tables["failures"]}
    assert failures["direct", "occlusion:3"]["failures"] == 2 and failures["direct", "occlusion:3"]["top_share"] == 1.0
    assert failures["best-of-3 average", "clean"]["counts"] == {"timeout": 2}
    assert tables["seeds"] == []  # one policy seed per scenario: no seed sensitivity to report
    seeded = [dict(e, seed=s, success=bool(s % 2) if e["init_index"] == 0 else e["success"]) for e in episodes[:2] for s in (0, 1)]
    (flips,) = [r for r in degradation(seeded, [])["seeds"] if r["setting"] == "direct"]
    assert (flips["scenarios"], flips["seeds"], flips["flip_rate"]) == (1, 2, 1.0)
    (robust,) = tables["robustness"]
    assert robust["relative_robustness"] == 0.0 and robust["breakage_rate"] == 1.0
    (world,) = tables["world_model"]
    assert world["decisions"] == 2 and world["future_psnr"] == 21.0 and world["baseline_psnr"] == 18.0 and world["future_ssim"] == pytest.approx(0.65)
    direct_value = next(r for r in tables["value"] if r["setting"] == "direct")
    assert direct_value["auroc"] == 1.0 and direct_value["overestimation"] == pytest.approx((-0.1 + 0.6) / 2)
    assert direct_value["overestimation_failed"] == pytest.approx(0.6)
    (sel,) = tables["selection"]
    assert (sel["decisions"], sel["measured"], sel["regret"], sel["rank"]) == (2, 1, 1.0, 3.0)
    assert sel["worse_than_direct"] == 1.0 and sel["better_than_direct"] == 0.0 and sel["action_spread"] == 1.5
    assert sel["spearman"] == pytest.approx(spearman([0.5, 0.9, 0.1], [1, 0, 1]))
    # the one measured decision: both successes (0.5, 0.1) score below the failure (0.9): 2 pairs, both lost
    assert (sel["ranking_auroc"], sel["ranking_pairs"], sel["ranking_auroc_low"], sel["ranking_auroc_high"]) == (0.0, 2, 0.0, 0.0)
    # the expert predicts nothing: its prediction tables are absent, not zero
    expert = [_episode("e0", "direct", True, policy="expert")]
    tables = degradation(expert, [])
    assert tables["world_model"] == tables["value"] == tables["selection"] == []
    # a run against itself: every scenario in common, no difference
    result = compare((episodes, decisions), (episodes, decisions))
    assert result["common_scenarios"] == 6 and all(r["difference"] == 0 for r in result["success"])
    assert any(r["regret_a"] == r["regret_b"] == 1.0 for r in result["figures"])
    assert math.isclose(next(r for r in result["figures"] if r["mode"] == "direct" and r["perturbation"] == "clean")["future_psnr_b"], 21.0)


def test_value_source_study_pairs_both_scorers_with_one_direct_run_per_checkpoint():
    import json

    from stress.core.spec import ScenarioSpec
    from stress.report.degradation import direct_vs_planning
    from scenarios.studies import study_specs

    base = [ScenarioSpec(suite="libero_spatial", task_id=0, init_index=i, policy="reference") for i in (0, 1)]
    specs = study_specs("value-source", base, 4, "average", checkpoints=("a/round1/reference.pt", "b/final/reference.pt"))
    assert len(specs) == 2 * 2 * 3  # inits x checkpoints x (direct, V(s'), Q(s, a))
    settings = {s.setting for s in specs}
    assert "direct model=round1/reference" in settings and "best-of-4 average model=final/reference value=action" in settings
    # direct solves init 0 only, under both checkpoints; V(s') planning solves both inits, Q(s, a) neither
    outcome = {"direct": lambda s: s.init_index == 0, "future": lambda s: True, "action": lambda s: False}
    episodes = [{"episode_key": s.key, **{k: getattr(s, k) for k in ("suite", "task_id", "init_index", "seed", "policy", "mode")},
                 "setting": s.setting, "perturbation": "clean", "severity": 0, "spec": s.to_json(),
                 "success": outcome[dict(s.policy_options).get("value_source", "direct") if s.mode == "planning" else "direct"](s)} for s in specs]
    rows = {r["setting"]: r for r in direct_vs_planning(episodes)}
    assert len(rows) == 4  # every planning setting found its direct partner with the same checkpoint
    for model in ("round1", "final"):
        future, action = rows[f"best-of-4 average model={model}/reference value=future"], rows[f"best-of-4 average model={model}/reference value=action"]
        assert (future["n"], future["planning_only"], future["direct_only"]) == (2, 1, 0)
        assert (action["n"], action["planning_only"], action["direct_only"]) == (2, 0, 1)
    assert json.loads(specs[0].to_json())["policy_options"]["checkpoint"] in ("a/round1/reference.pt", "b/final/reference.pt")


def test_temperature_study_pairs_each_temperature_with_its_own_direct_run():
    from stress.core.spec import ScenarioSpec
    from scenarios.studies import TEMPERATURES, study_specs

    base = [ScenarioSpec(suite="libero_spatial", task_id=0, init_index=0, policy="reference")]
    specs = study_specs("temperature", base, 4, "average")
    assert sorted((s.mode, dict(s.policy_options)["temperature"]) for s in specs) == sorted((m, t) for m in ("direct", "planning") for t in TEMPERATURES)
    assert {s.setting for s in specs} >= {"direct temperature=0.5", "best-of-4 average temperature=0.25"}
    assert len({s.seed for s in specs}) == 1  # identical scenarios: only the temperature and the mode vary
