"""stress.core.stats against known values: closed forms, published sample-size formulas, scipy where it has the
same statistic, and the coverage of Newcombe's paired interval by simulation."""

import math

import numpy as np
import pytest

from stress.core.stats import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, bootstrap_difference, logistic_fit, mcnemar_sample_size, mean_sample_size,
                               newcombe_paired, paired_counts, proportions_sample_size, verdict)


def test_newcombe_paired_point_bounds_and_symmetry():
    r = newcombe_paired(36, 12, 2, 0)
    assert r["n"] == 50 and r["difference"] == pytest.approx(0.2)
    assert 0 < r["low"] < 0.2 < r["high"] < 1
    swapped = newcombe_paired(36, 2, 12, 0)  # first and second exchanged: the interval mirrors
    assert (swapped["low"], swapped["high"]) == pytest.approx((-r["high"], -r["low"]))
    assert newcombe_paired(0, 0, 0, 0)["difference"] is None
    same = newcombe_paired(5, 0, 0, 5)  # no discordant pair: the interval still has width (n is small)
    assert same["difference"] == 0 and same["low"] < 0 < same["high"]


def test_newcombe_paired_is_narrower_than_two_independent_wilson_intervals_for_correlated_pairs():
    from stress.core.metrics import wilson_interval

    r = newcombe_paired(40, 3, 1, 16)  # strongly concordant pairs
    l1, _ = wilson_interval(43, 60)
    _, u2 = wilson_interval(41, 60)
    independent = math.hypot(43 / 60 - l1, u2 - 41 / 60)
    assert r["difference"] - r["low"] < independent


def test_newcombe_paired_covers_the_true_difference_about_95_percent():
    rng = np.random.default_rng(7)
    probs = np.array([0.5, 0.15, 0.05, 0.3])  # both, first only, second only, neither: true difference 0.10
    hits = 0
    trials = 2000
    for counts in rng.multinomial(40, probs, size=trials):
        r = newcombe_paired(*map(int, counts))
        hits += r["low"] <= 0.10 <= r["high"]
    assert 0.93 <= hits / trials <= 0.975


def test_paired_counts():
    assert paired_counts([1, 1, 0, 0, 1], [1, 0, 1, 0, 0]) == (1, 2, 1, 1)
    with pytest.raises(ValueError):
        paired_counts([1], [1, 0])


def test_sample_sizes_against_published_formulas():
    # Connor (1987): discordant 0.2 / 0.1 -> 234 pairs; Fleiss without continuity correction: 0.5 vs 0.3 -> 93 per group
    assert mcnemar_sample_size(0.2, 0.1) == 234
    assert mcnemar_sample_size(0.1, 0.1) is None
    assert proportions_sample_size(0.5, 0.3) == 93
    assert mean_sample_size(1.0, 0.5) == math.ceil(((1.959963984540054 + 0.8416212335729143) * 2) ** 2)
    assert mean_sample_size(1.0, 0.0) is None


def test_logistic_fit_matches_the_closed_form_of_a_binary_covariate():
    # x in {0, 1}: slope = logit(3/4) - logit(2/4), se = sqrt(sum of 1/(n p (1 - p)) over the two groups)
    fit = logistic_fit([0] * 4 + [1] * 4, [1, 1, 0, 0, 1, 1, 1, 0])
    assert fit["slope"] == pytest.approx(math.log(3))
    assert fit["se"] == pytest.approx(math.sqrt(1 / (4 * 0.25) + 1 / (4 * 0.1875)))
    assert fit["low"] < fit["slope"] < fit["high"]
    assert logistic_fit([0, 0, 1, 1], [0, 0, 1, 1]) is None  # separated: no finite slope
    assert logistic_fit([1, 1, 1], [0, 1, 0]) is None


def test_bootstrap_difference_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.3, 1.0, 80), rng.normal(0.0, 1.0, 60)
    ours = bootstrap_difference(x, y, n_boot=3000, seed=1)
    theirs = stats.bootstrap((x, y), lambda a, b, axis=-1: a.mean(axis) - b.mean(axis), n_resamples=3000, method="percentile",
                             random_state=np.random.default_rng(2)).confidence_interval
    assert ours["difference"] == pytest.approx(x.mean() - y.mean())
    assert ours["low"] == pytest.approx(theirs.low, abs=0.05) and ours["high"] == pytest.approx(theirs.high, abs=0.05)
    assert bootstrap_difference([], [1.0])["difference"] is None


def test_verdict_three_ways():
    assert verdict(0.02, 0.3, +1, 0.1) == SUPPORTED
    assert verdict(-0.3, -0.02, -1, 0.1) == SUPPORTED
    assert verdict(-0.05, 0.08, +1, 0.1) == NOT_SUPPORTED  # rules out an effect of 0.1 or more
    assert verdict(-0.3, -0.1, +1, 0.1) == NOT_SUPPORTED  # wholly the other way
    assert verdict(-0.2, 0.4, +1, 0.1) == INCONCLUSIVE
    assert verdict(None, None, +1, 0.1) == INCONCLUSIVE
