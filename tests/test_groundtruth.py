"""Counterfactual ground truth (stress.measurement.groundtruth) on a real LIBERO scene: true futures, true outcomes,
and an episode that is bit-identical with and without the measurements."""

import numpy as np
import pytest

from stress.core.spec import ScenarioSpec
from stress.measurement.groundtruth import GroundTruth, Measurement, execute
from stress.core.metrics import selection
from stress.core.policy import Candidate, Decision
from stress.policies.expert import ExpertPolicy
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.runners.episode import run_episode

PLANNING = ScenarioSpec(suite="libero_spatial", task_id=0, init_index=1, policy="reference", mode="planning", seed=3,
                        max_steps=40, n_candidates=3, aggregation="average")  # 40: the last chunk is cut short


@pytest.fixture(scope="module")
def runner():
    envs, policies = EnvCache(), PolicyCache()
    yield envs, policies
    envs.close()


def test_episode_is_bit_identical_with_and_without_ground_truth(runner):
    envs, policies = runner
    plain = run_episode(PLANNING, envs, policies)
    measured = run_episode(PLANNING, envs, policies, measurement=Measurement(true_futures="all", rollouts=1))
    assert plain.error is None and measured.error is None
    assert np.array_equal(plain.actions, measured.actions) and plain.success == measured.success and plain.steps == measured.steps
    assert [r["pred_value"] for r in plain.decisions] == [r["pred_value"] for r in measured.decisions]
    assert measured.measure_s > 0 and plain.measure_s == 0
    rows = measured.decisions
    assert len(rows) == 3 * 4  # 3 decisions x (executed + 3 candidates)
    executed_only = run_episode(PLANNING, envs, policies, measurement=Measurement())  # the default: the executed chunk's future
    assert np.array_equal(executed_only.actions, plain.actions)
    assert all((r.get("future_psnr") is not None) == r["chosen"] for r in executed_only.decisions)
    # measured at the episode's own chunk end (no second execution), the executed chunk's figures and frames are
    # exactly those measured from the restored snapshot
    figures = ("future_psnr", "future_ssim", "baseline_psnr", "baseline_psnr_occluded", "realised_value")
    same = lambda result: [(r["step"], r["candidate"], *(r.get(k) for k in figures)) for r in result.decisions if r["chosen"]]
    assert same(executed_only) == same(measured)
    assert sorted(executed_only.frames) == sorted(measured.frames)
    assert all(np.array_equal(executed_only.frames[s][k], measured.frames[s][k]) for s in measured.frames for k in ("observed", "predicted", "true"))
    for r in rows:
        assert 5 < r["future_psnr"] < 60 and -1 <= r["future_ssim"] <= 1 and 5 < r["baseline_psnr"] < 60
        assert r["action_spread"] > 0
    first = [r for r in rows if r["step"] == 0]
    assert all(r["true_outcome"] in (0.0, 1.0) for r in first)  # the rollout decision: every candidate continued
    assert all(r.get("true_outcome") is None for r in rows if r["step"] > 0)
    executed = next(r for r in first if r["candidate"] == -1)
    chosen = next(r for r in first if r["candidate"] >= 0 and r["chosen"])
    assert {k: executed[k] for k in ("future_psnr", "true_outcome")} == {k: chosen[k] for k in ("future_psnr", "true_outcome")}
    assert all(r["realised_value"] == 0.0 for r in rows if r["chosen"])  # 40 steps are too few to succeed
    # the candidates' futures differ: each was measured from its own chunk
    assert len({round(r["future_psnr"], 6) for r in first if r["candidate"] >= 0}) > 1


def test_expert_has_no_prediction_rows(runner):
    envs, policies = runner
    spec = ScenarioSpec(suite="libero_spatial", task_id=0, init_index=0, policy="expert", max_steps=32)
    result = run_episode(spec, envs, policies, measurement=Measurement(rollouts=2))
    assert result.error is None and result.decisions == []  # absent, not zero


def test_known_best_candidate_gives_expected_regret_and_rank(spatial_env):
    """Holding the bowl, a candidate that opens the gripper drops it; with a budget too short to re-grasp,
    its true outcome is 0 while the expert's own chunk succeeds: choosing the drop costs regret 1, rank 2."""
    env = spatial_env
    env.reset(0)
    expert = ExpertPolicy()
    expert.reset(env.instruction, 0)
    while not (expert._phase == "lift" and env.step_count > 0):  # run the expert until it lifts the bowl
        for action in expert.act(env.observe(render=False)).actions:
            env.step(action)
        assert env.step_count < 300
    snapshot = env.snapshot()
    keep = expert.act(env.observe(render=False)).actions
    drop = np.tile([0.0, 0.0, 0.6, 0.0, 0.0, 0.0, -1.0], (16, 1))  # up, gripper open
    image = env.render("agentview")
    future = {"agentview": image, "wrist": env.render("wrist")}

    def decision(chosen):
        return Decision(actions=[keep, drop][chosen], predicted_value=0.5, candidates=[
            Candidate(keep, 0.2, future), Candidate(drop, 0.9, future)], chosen=chosen, aggregation="average")

    # the budget: what the expert needs from here, plus a little (not enough to re-grasp after a drop)
    env.restore(snapshot)
    assert execute(env, keep, 10_000) or any(execute(env, expert.act(env.observe(render=False)).actions, 10_000) for _ in range(30))
    budget = env.step_count + 8
    env.restore(snapshot)
    truth = GroundTruth(Measurement(rollouts=1), "case", budget, lambda: ExpertPolicy())
    truth(env, snapshot, decision(1))
    outcomes = [truth.by_step[snapshot.step][i]["true_outcome"] for i in (0, 1)]
    assert outcomes == [1.0, 0.0]
    assert selection(outcomes, chosen=1) == {"regret": 1.0, "rank": 2, "n": 2}
    assert selection(outcomes, chosen=0) == {"regret": 0.0, "rank": 1, "n": 2}
    # the snapshot was restored exactly
    assert np.array_equal(env.snapshot().physics, snapshot.physics) and env.step_count == snapshot.step


def test_the_current_frame_is_reused_only_while_the_simulator_has_not_moved(spatial_env):
    from stress.core.spec import PerturbationSpec

    env = spatial_env
    env.reset(0, (PerturbationSpec("occlusion", 3),))
    obs = env.observe(render=True)
    assert env.observed_images() is obs.images  # what the policy saw: the measurement's current frame
    snapshot = env.snapshot()
    env.step(np.zeros(7))
    assert env.observed_images() is None
    env.observe(render=True)
    env.restore(snapshot)
    assert env.observed_images() is None
    env.observe(render=True)
    env.reset(0)  # same state, other perturbations: the occluded frame must not be reused
    assert env.observed_images() is None
