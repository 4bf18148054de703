import numpy as np
import pytest

from stress.core.metrics import wilson_interval


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
    # exactly 0 / 1 for every n: a bound a rounding error inside the rate made the error bars negative
    assert all(wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0 for n in range(1, 200))


def test_auroc_closed_form():
    from stress.core.metrics import auroc

    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    # one positive (0.5) above 1 of 2 negatives, tied with none: 0.5; ties count half
    assert auroc([0.3, 0.5, 0.7], [0, 1, 0]) == 0.5
    assert auroc([0.5, 0.5], [0, 1]) == 0.5
    assert auroc([0.1, 0.9], [1, 1]) is None  # one class only: no figure, not 0.5


def test_ranking_auroc_pools_pairs_within_decisions_only():
    from stress.core.metrics import ranking_auroc
    from stress.core.stats import ranking_auroc_interval

    # decision 1: the success outscores both failures (2 of 2 pairs); decision 2: its success ties its failure (half of 1)
    groups = [([0.9, 0.1, 0.5], [1, 0, 0]), ([0.3, 0.3], [1, 0]), ([0.2, 0.9], [1, 1])]
    assert ranking_auroc(groups) == pytest.approx(2.5 / 3)
    # across decisions a failure of one (0.5) may outscore a success of another (0.3): never compared
    assert ranking_auroc([([0.5], [0]), ([0.3], [1])]) is None
    assert ranking_auroc([([0.2, 0.9], [1, 1])]) is None  # one outcome only: no figure, not 0.5
    interval = ranking_auroc_interval(groups, seed=1)
    assert (interval["decisions"], interval["decisions_with_pairs"], interval["pairs"]) == (3, 2, 3)
    assert interval["low"] == 0.5 and interval["high"] == 1.0  # a resample holds decision 2 only, or decision 1 only
    assert ranking_auroc_interval(groups, seed=1) == interval  # seeded
    assert ranking_auroc_interval([([0.2, 0.9], [1, 1])])["low"] is None


def test_psnr_and_ssim_on_known_images():
    import numpy as np

    from stress.core.metrics import psnr, ssim

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
    # Cosmos: the unbiased std, clamped at 0
    np.testing.assert_allclose(aggregate(values, "lcb"), np.clip(values.mean(1) - values.std(1, ddof=1), 0, 1))
    np.testing.assert_allclose(aggregate(values, "success_vote"), [0.5, 1.0, 0.25])
    # at least half above 0.05 -> mean of those above (0.9, 0.5); a failing majority -> 0 (Cosmos), not its mean
    np.testing.assert_allclose(aggregate(values, "majority_mean"), [0.9, 0.5, 0.0])
    assert best_candidate(values, "average")[0] == 1 and best_candidate(values, "majority_mean")[0] == 0
    with pytest.raises(ValueError, match="valid: average, lcb, success_vote, majority_mean"):
        aggregate(values, "max")


@pytest.mark.parametrize("values, how, expected", [
    # Cosmos Policy's own aggregate_value_predictions (cosmos_utils, NVlabs/cosmos-policy 18a2acc) on these ensembles
    ([0, .02, .3, .6, .9], "average", 0.364),
    ([0, .02, .3, .6, .9], "lcb", 0.0),
    ([0, .02, .3, .6, .9], "success_vote", 0.6),
    ([0, .02, .3, .6, .9], "majority_mean", 0.6),
    ([0, .01, .02, .6, .9], "majority_mean", 0.0),
    ([0, 0, .3], "lcb", 0.0),
    # and what the suite computed before matching Cosmos: these differ
    ([.5, .6, .7, .8], "lcb", 0.65 - np.std([.5, .6, .7, .8], ddof=1)),
    ([.9, .95, 1.0], "lcb", 0.95 - 0.05),
])
def test_planning_aggregation_matches_cosmos_golden_values(values, how, expected):
    from stress.policies.planning import aggregate

    np.testing.assert_allclose(aggregate(np.array([values]), how), [expected], atol=1e-12)


def test_planning_aggregation_clamps_and_single_member():
    from stress.policies.planning import aggregate, best_candidate

    # two lcb scores clamped to 0 tie: the first candidate wins, as in Cosmos's max()
    values = np.array([[0.0, 0.4], [0.0, 0.3], [0.2, 0.25]])
    assert aggregate(values, "lcb")[:2].tolist() == [0.0, 0.0]
    assert best_candidate(values[:2], "lcb")[0] == 0
    # one member: Cosmos's unbiased std would be NaN; the suite uses 0 (lcb = the value)
    np.testing.assert_allclose(aggregate(np.array([[0.7], [0.2]]), "lcb"), [0.7, 0.2])


def test_mcnemar_exact_binomial():
    from stress.core.metrics import mcnemar

    assert mcnemar(0, 5) == pytest.approx(2 * 0.5**5) and mcnemar(5, 0) == mcnemar(0, 5)
    assert mcnemar(1, 9) == pytest.approx(2 * (1 + 10) / 2**10)  # 2 * P(X <= 1), X ~ Bin(10, 1/2)
    assert mcnemar(3, 3) == 1.0  # capped at 1
    assert mcnemar(0, 0) is None


def test_paired_bootstrap_resamples_pairs():
    import numpy as np

    from stress.core.metrics import paired_bootstrap

    a, b = np.zeros(40), np.r_[np.ones(10), np.zeros(30)]
    diff, low, high = paired_bootstrap(a, b, seed=3)
    assert diff == 0.25 and 0.1 <= low < 0.2 and 0.3 < high <= 0.4  # SE of the mean difference ~0.068
    assert paired_bootstrap(a, b, seed=3) == (diff, low, high)
    x = np.r_[np.ones(20), np.zeros(20)]
    assert paired_bootstrap(x, x) == (0.0, 0.0, 0.0)  # identical pairs: no width unless pairs are broken up
    assert paired_bootstrap([], []) is None
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1])


def test_brier_and_overestimation():
    from stress.core.metrics import brier, overestimation

    assert brier([1, 0, 1], [1, 0, 1]) == 0.0 and brier([0.5] * 4, [1, 0, 1, 0]) == 0.25
    assert brier([0.8, 0.3], [1, 0]) == pytest.approx((0.2**2 + 0.3**2) / 2)
    assert overestimation([0.9, 0.5], [0.4, 0.5]) == pytest.approx(0.25) and overestimation([0.2], [1]) == pytest.approx(-0.8)
    assert brier([], []) is None and overestimation([], []) is None
    with pytest.raises(ValueError):
        brier([0.5], [0, 1, 1])  # no silent broadcasting


def test_calibration_ece_and_bins():
    from stress.core.metrics import calibration

    calibrated = calibration([0.25] * 4 + [0.75] * 4, [1, 0, 0, 0] + [1, 1, 1, 0])
    assert calibrated["ece"] == pytest.approx(0.0) and len(calibrated["bins"]) == 10
    # bin 0: mean 0.05 vs 2/4 positive; bin 9: mean 0.95 vs 1/4 -> 0.5 * 0.45 + 0.5 * 0.7
    cal = calibration([0.05] * 4 + [0.95] * 4, [1, 1, 0, 0] + [1, 0, 0, 0])
    assert cal["ece"] == pytest.approx(0.575)
    assert cal["bins"][0] == {"low": 0.0, "high": 0.1, "n": 4, "mean_pred": pytest.approx(0.05), "frac_positive": 0.5}
    assert cal["bins"][5] == {"low": 0.5, "high": 0.6, "n": 0, "mean_pred": None, "frac_positive": None}
    assert calibration([1.0], [1])["bins"][-1]["n"] == 1 and calibration([0.0], [0])["bins"][0]["n"] == 1
    assert calibration([15 / 22], [1], bins=22)["bins"][15]["n"] == 1  # on an edge: the bin it opens (15/22*22 < 15)
    assert calibration([], [])["ece"] is None


def test_spearman_ranks_and_ties():
    import math

    from stress.core.metrics import spearman

    x = [1, 2, 3, 4, 5]
    assert spearman(x, [math.exp(v) for v in x]) == pytest.approx(1.0) and spearman(x, x[::-1]) == pytest.approx(-1.0)
    # y ranks [1.5, 1.5, 3, 4]: cov 4.5, var 5 and 4.5 -> sqrt(0.9)
    assert spearman([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(math.sqrt(0.9))
    assert spearman([1], [1]) is None and spearman([1, 2, 3], [7, 7, 7]) is None


def test_selection_regret_and_rank():
    from stress.core.metrics import selection

    # candidate 1 drops the object: two candidates truly better -> rank 3, regret 1
    assert selection([1, 0, 1, 0], chosen=1) == {"regret": 1.0, "rank": 3, "n": 4}
    assert selection([1, 0, 1, 0], chosen=2) == {"regret": 0.0, "rank": 1, "n": 4}  # ties favour the chosen
    assert selection([0.2, 0.9, 0.5], chosen=2) == {"regret": pytest.approx(0.4), "rank": 2, "n": 3}
    for outcomes, chosen in (([1, 0], 2), ([1, 0], -1), ([], 0)):
        with pytest.raises(ValueError):
            selection(outcomes, chosen)


def test_amplification_counts():
    from stress.core.metrics import amplification

    amp = amplification([1, 1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 1, 0])
    assert (amp["n"], amp["both"], amp["direct_only"], amp["planning_only"], amp["neither"]) == (7, 1, 4, 1, 1)
    assert amp["p_planning_fails_given_direct_succeeds"] == pytest.approx(4 / 5)
    assert amp["p_planning_succeeds_given_direct_fails"] == pytest.approx(1 / 2)
    assert amp["mcnemar_p"] == pytest.approx(2 * (1 + 5) / 2**5)
    none = amplification([0, 0], [1, 0])
    assert none["p_planning_fails_given_direct_succeeds"] is None and none["p_planning_succeeds_given_direct_fails"] == 0.5
    assert amplification([1], [1])["p_planning_succeeds_given_direct_fails"] is None


def test_action_spread_known_distances():
    import numpy as np

    from stress.core.metrics import action_spread

    a = np.zeros((4, 7))
    b = a.copy()
    b[0, 0], b[3, 6] = 3.0, 4.0  # |a - b| = 5 over the flattened chunk
    assert action_spread(np.stack([a, b])) == pytest.approx(5.0)
    assert action_spread([a, b, 2 * b]) == pytest.approx((5 + 10 + 5) / 3)
    assert action_spread([a]) is None and action_spread([]) is None


def test_flip_rate():
    from stress.core.metrics import flip_rate

    outcomes = {"a": [True, True, True], "b": [True, False], "c": [False, False], "single": [True]}
    assert flip_rate(outcomes) == pytest.approx(1 / 3)  # "single" has one seed: not counted
    assert flip_rate({"single": [False]}) is None and flip_rate({}) is None


def test_relative_robustness_and_breakage():
    from stress.core.metrics import breakage_rate, relative_robustness

    assert relative_robustness([1, 0, 1, 0], [1, 1, 1, 0]) == pytest.approx((2 / 4) / (3 / 4))
    assert relative_robustness([1, 1], [0, 0]) is None and relative_robustness([], []) is None
    # clean solves 0, 1, 2; perturbed breaks 1 and 2 (and fixes 3, which does not count)
    assert breakage_rate([1, 1, 1, 0], [1, 0, 0, 1]) == pytest.approx(2 / 3)
    assert breakage_rate([0, 0], [1, 1]) is None and breakage_rate([], []) is None
    with pytest.raises(ValueError):
        relative_robustness([1, 0], [1, 0, 1])
    with pytest.raises(ValueError):
        breakage_rate([1, 0], [1])
