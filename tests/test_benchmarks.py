"""Micro-benchmarks of the per-decision costs (pytest-benchmark; timings are reported, never asserted)."""

import numpy as np

from stress.core.spec import PerturbationSpec


def test_bench_snapshot_restore(benchmark, spatial_env):
    spatial_env.reset(0)
    snap = spatial_env.snapshot()

    def snapshot_restore():
        spatial_env.restore(spatial_env.snapshot())

    benchmark(snapshot_restore)
    spatial_env.restore(snap)
    assert np.array_equal(spatial_env.snapshot().physics, snap.physics)


def test_bench_pixel_occlusion_per_frame(benchmark, spatial_env):
    spatial_env.reset(0, (PerturbationSpec("occlusion", 5, seed=1),))
    image = spatial_env.render("agentview")
    out = benchmark(spatial_env.perturb_pixels, image, "agentview")
    assert not np.array_equal(out, image)


def _reference_policy_and_observation(spatial_env, mode, n_candidates=1):
    from stress.policies import policy_class

    spatial_env.reset(0)
    obs = spatial_env.observe(render=True)
    policy = policy_class("reference")()
    policy.reset(obs.instruction, 0, mode=mode, n_candidates=n_candidates, aggregation="average")
    return policy, obs


def test_bench_reference_policy_decision(benchmark, spatial_env):
    """One policy-mode decision, 5 denoising steps (target <= 30 ms on a CPU)."""
    policy, obs = _reference_policy_and_observation(spatial_env, "direct")
    decision = benchmark(policy.act, obs)
    assert decision.actions.shape == (16, 7)


def test_bench_reference_best_of_8_decision(benchmark, spatial_env):
    """One best-of-8 planning decision with 3 futures x 5 values per candidate (target <= 400 ms)."""
    policy, obs = _reference_policy_and_observation(spatial_env, "planning", 8)
    decision = benchmark.pedantic(policy.act, (obs,), rounds=5, iterations=1)
    assert len(decision.candidates) == 8


def test_bench_true_future_of_one_chunk(benchmark, spatial_env):
    """Ground truth of one predicted chunk off the episode's path (a candidate's, `--true-futures all`): restore, 16
    steps of physics, both cameras rendered, PSNR/SSIM, restore. (The executed chunk is measured at its end by the
    episode itself, at the cost of the comparison only.)"""
    from stress.measurement.groundtruth import GroundTruth, Measurement

    policy, obs = _reference_policy_and_observation(spatial_env, "direct")
    decision = policy.act(obs)
    snap = spatial_env.snapshot()
    truth = GroundTruth(Measurement("all"), "bench", spatial_env.max_steps, continuation=None)
    benchmark.pedantic(truth, (spatial_env, snap, decision), rounds=5, iterations=1)
    assert truth.by_step[snap.step][-1]["future_psnr"] > 0
    assert np.array_equal(spatial_env.snapshot().physics, snap.physics)


def test_aloha_bench_measures_render_on_demand_against_the_stock_loop():
    """`stress bench --aloha`'s figures on a tiny budget: the stock loop (three 640x480 cameras every step) is
    slower per step than rendering three 224 px cameras once per 50-step chunk; the expert solves init 0."""
    from stress.bench.aloha import measure

    figures = measure(stock_steps=5, repeats=1, n_init=1)
    steps = figures["steps_per_s"]
    assert steps["render_on_demand_3cams_224_per_chunk"] > steps["stock_3cams_640x480_every_step"]
    assert steps["no_render"] > steps["render_on_demand_3cams_224_per_chunk"]
    assert figures["snapshot_restore_ms"] > 0
    assert figures["expert"]["transfer_cube"]["successes"] == 1 and figures["expert"]["insertion"]["successes"] == 1


def test_aloha_bench_bad_episode_count_exits_2():
    import subprocess
    import sys

    bad = subprocess.run([sys.executable, "-m", "stress.cli", "bench", "--aloha", "--episodes", "51"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--episodes 51 invalid for --aloha; valid: 0-50" in bad.stderr and "Traceback" not in bad.stderr
