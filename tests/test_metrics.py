import pytest

from stress.metrics import wilson_interval


def test_wilson_interval_closed_form():
    # 8/10: Wilson 95 % interval is (0.490, 0.943)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.15 < high < 0.17
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and 0.83 < low < 0.85


def test_auroc_closed_form():
    from stress.metrics import auroc

    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    # one positive (0.5) above 1 of 2 negatives, tied with none: 0.5; ties count half
    assert auroc([0.3, 0.5, 0.7], [0, 1, 0]) == 0.5
    assert auroc([0.5, 0.5], [0, 1]) == 0.5
    assert auroc([0.1, 0.9], [1, 1]) is None  # one class only: no figure, not 0.5


def test_psnr_and_ssim_on_known_images():
    import numpy as np

    from stress.metrics import psnr, ssim

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    assert psnr(image, image) == float("inf") and ssim(image, image) == pytest.approx(1.0)
    shifted = np.clip(image.astype(int) + 10, 0, 255).astype(np.uint8)
    mse = np.mean((shifted.astype(float) - image) ** 2)
    assert psnr(shifted, image) == pytest.approx(10 * np.log10(255**2 / mse))
    assert ssim(255 - image, image) < 0  # an inverted image is anti-correlated
    assert 0.9 < ssim(shifted, image) < 1.0


def test_planning_aggregations_closed_form():
    import numpy as np

    from stress.policies.planning import aggregate, best_candidate

    values = np.array([[0.0, 0.0, 0.9, 0.9], [0.5, 0.5, 0.5, 0.5], [0.0, 0.01, 0.02, 0.8]])
    np.testing.assert_allclose(aggregate(values, "average"), [0.45, 0.5, 0.2075])
    np.testing.assert_allclose(aggregate(values, "lcb"), values.mean(1) - values.std(1))
    np.testing.assert_allclose(aggregate(values, "success_vote"), [0.5, 1.0, 0.25])
    # majority side of 0.05: tie -> success side (0.9), all above (0.5), failure side (0, 0.01, 0.02)
    np.testing.assert_allclose(aggregate(values, "majority_mean"), [0.9, 0.5, 0.01])
    assert best_candidate(values, "average")[0] == 1 and best_candidate(values, "majority_mean")[0] == 0
    with pytest.raises(ValueError, match="valid: average, lcb, success_vote, majority_mean"):
        aggregate(values, "max")
