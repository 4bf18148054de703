"""Micro-benchmarks of the per-decision costs (pytest-benchmark; timings are reported, never asserted)."""

import numpy as np

from perturbations.base import PerturbationSpec


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
    """Ground truth of one predicted chunk: restore, 16 steps of physics, both cameras rendered, PSNR/SSIM, restore."""
    from stress.groundtruth import GroundTruth, Measurement

    policy, obs = _reference_policy_and_observation(spatial_env, "direct")
    decision = policy.act(obs)
    snap = spatial_env.snapshot()
    truth = GroundTruth(Measurement(), "bench", spatial_env.max_steps, continuation=None)
    benchmark.pedantic(truth, (spatial_env, snap, decision), rounds=5, iterations=1)
    assert truth.by_step[snap.step][-1]["future_psnr"] > 0
    assert np.array_equal(spatial_env.snapshot().physics, snap.physics)
