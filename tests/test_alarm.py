"""The runtime failure alarm (docs/alarm.md): the conformal calibration against closed forms and a simulation of its
guarantee; the command on one tiny real run of the reference model: its signals, alarm.json / alarm.png and bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stress.core.conformal import calibrate, conformal_quantile, conformal_rank, first_alarm, matched_auroc, needed_calibration

ROOT = Path(__file__).resolve().parents[1]


def test_conformal_rank_and_needed():
    assert conformal_rank(0.05, 19) == 19 and conformal_rank(0.05, 18) == 19
    assert needed_calibration(0.05) == 19 and needed_calibration(0.1) == 9 and needed_calibration(0.5) == 1
    assert conformal_quantile(list(range(1, 20)), 0.05) == 19
    assert conformal_quantile(list(range(1, 40)), 0.05) == math.ceil(0.95 * 40)
    with pytest.raises(ValueError, match="needs at least 19"):
        conformal_quantile(list(range(18)), 0.05)


def test_calibration_guarantee_holds_for_exchangeable_episodes():
    """Traces drawn alike with a drift over time: the share of fresh episodes the calibrated alarm fires on is
    about alpha (split conformal: exactly 1 - 19/20 = 0.05 in expectation with 19 conformal episodes)."""
    rng = np.random.default_rng(0)
    draw = lambda: {s: float(rng.normal(s / 16, 1 + s / 64)) for s in range(0, 160, 16) if rng.random() > 0.1}
    fired = []
    for _ in range(400):
        th = calibrate([draw() for _ in range(19)], [draw() for _ in range(19)], 0.05)
        fired += [first_alarm(draw(), th) is not None for _ in range(5)]
    assert 0.03 < np.mean(fired) < 0.07


def test_thresholds_vary_with_time_and_first_alarm():
    fit = [{0: 0.0 + e, 16: 10.0 + e} for e in (-1, 0, 1)]
    th = calibrate(fit, [{0: 0.5, 16: 10.5}], 0.5)
    assert th.at(0) < th.at(16) and th.at(20) == th.at(16) and th.at(-5) == th.at(0)
    assert first_alarm({0: 5.0, 16: 5.0}, th) == 0 and first_alarm({0: -5.0, 16: 20.0}, th) == 16 and first_alarm({0: -5.0}, th) is None


def test_matched_auroc_compares_at_the_same_step():
    # failed episodes score high only because scores grow with time and they last longer: matched at a step, no signal
    failed = [{0: 1.0, 16: 2.0, 32: 3.0}, {0: 0.0, 16: 1.0, 32: 2.0}]
    succeeded = [{0: 1.0, 16: 1.0}, {0: 0.0, 16: 2.0}]
    out = matched_auroc(failed, succeeded)
    assert out["auroc"] == 0.5 and out["pairs"] == 8 and out["per_step"][2]["auroc"] is None
    assert matched_auroc([{0: 2.0}], [{0: 1.0}])["auroc"] == 1.0 and matched_auroc([{0: 1.0}], [])["auroc"] is None
