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
