"""Pure metric functions (no simulator, no disk)."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate; (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # all-or-nothing rates have the bound exactly at 0 / 1; in floats it can land a rounding error inside the rate
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def _ranks(x):
    """1-based ranks, ties given their average rank."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _paired(x, y, dtype=float):
    """Two 1-D arrays paired by index; ValueError when their lengths differ (no silent broadcasting)."""
    import numpy as np

    x, y = np.asarray(x, dtype=dtype).ravel(), np.asarray(y, dtype=dtype).ravel()
    if len(x) != len(y):
        raise ValueError(f"paired samples differ in length: {len(x)} vs {len(y)}")
    return x, y


def auroc(scores, labels) -> float | None:
    """Area under the ROC curve of ``scores`` ranking positive ``labels`` above negatives (ties count half).
    None when only one class is present (the figure does not exist, it is not 0.5)."""
    import numpy as np

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ranking_counts(groups) -> tuple[float, int]:
    """(wins, pairs) pooled within groups: over every pair of one group (a best-of-N decision's candidates) with
    different outcomes, a win when the better outcome has the higher score, half a win on a tie."""
    import numpy as np

    wins, pairs = 0.0, 0
    for scores, outcomes in groups:
        scores, outcomes = np.asarray(scores, dtype=np.float64), np.asarray(outcomes, dtype=np.float64)
        if len(scores) != len(outcomes):
            raise ValueError(f"a group has {len(scores)} scores and {len(outcomes)} outcomes")
        better = outcomes[:, None] > outcomes[None, :]
        wins += float(((scores[:, None] > scores[None, :]) & better).sum() + 0.5 * ((scores[:, None] == scores[None, :]) & better).sum())
        pairs += int(better.sum())
    return wins, pairs


def ranking_auroc(groups) -> float | None:
    """Within-decision ranking AUROC: the chance that, of two candidates of the same decision with different true
    outcomes, the better one scores higher (ties half), pooled over the decisions' pairs. ``groups``: (scores,
    outcomes) per decision. None when no decision has two different outcomes. 0.5 is chance."""
    wins, pairs = ranking_counts(groups)
    return wins / pairs if pairs else None


def psnr(predicted, true) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 images; inf when identical."""
    import numpy as np

    mse = np.mean((np.asarray(predicted, np.float64) - np.asarray(true, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim(predicted, true) -> float:
    """Structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of two
    uint8 HxWx3 images, averaged over pixels and channels."""
    import cv2
    import numpy as np

    x, y = np.asarray(predicted, np.float64), np.asarray(true, np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda img: cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


# --- paired success ------------------------------------------------------------------------------------
def mcnemar(b: int, c: int) -> float | None:
    """Exact two-sided McNemar p-value from the discordant pair counts (b: only A succeeds, c: only B):
    binomial test, n = b + c, p = 1/2. None when there is no discordant pair."""
    n = b + c
    if n == 0:
        return None
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(a, b, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float] | None:
    """mean(b) - mean(a) over pairs, with the 95 % percentile interval of the pairs resampled ``n_boot``
    times (own seeded generator). None for no pairs."""
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    if len(a) == 0:
        return None
    diff = b - a
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def amplification(direct, planning) -> dict:
    """Direct vs planning outcomes of the same scenarios: the four paired counts, P(planning fails |
    direct succeeds), P(planning succeeds | direct fails) (None when the condition never holds), McNemar's p."""
    d, p = _paired(direct, planning, dtype=bool)
    both, direct_only, planning_only, neither = int((d & p).sum()), int((d & ~p).sum()), int((~d & p).sum()), int((~d & ~p).sum())
    return {"n": len(d), "both": both, "direct_only": direct_only, "planning_only": planning_only, "neither": neither,
            "p_planning_fails_given_direct_succeeds": direct_only / (both + direct_only) if both + direct_only else None,
            "p_planning_succeeds_given_direct_fails": planning_only / (planning_only + neither) if planning_only + neither else None,
            "mcnemar_p": mcnemar(direct_only, planning_only)}


def relative_robustness(perturbed, clean) -> float | None:
    """Perturbed success / clean success on the same init states; None when clean never succeeds (or no data)."""
    perturbed, clean = _paired(perturbed, clean)
    if len(clean) == 0 or clean.mean() == 0:
        return None
    return float(perturbed.mean() / clean.mean())


def breakage_rate(clean, perturbed) -> float | None:
    """Among the scenarios the clean policy solves, the share the perturbation makes fail (paired); None when
    the clean policy solves none."""
    clean, perturbed = _paired(clean, perturbed, dtype=bool)
    if not clean.any():
        return None
    return float((~perturbed[clean]).mean())


def flip_rate(outcomes_by_scenario: dict) -> float | None:
    """Seed sensitivity: share of scenarios (run with >= 2 policy seeds) whose outcome is not the same for
    every seed. None when no scenario has two seeds."""
    multi = [set(map(bool, v)) for v in outcomes_by_scenario.values() if len(v) >= 2]
    return sum(len(s) > 1 for s in multi) / len(multi) if multi else None


# --- values --------------------------------------------------------------------------------------------
def brier(pred, outcome) -> float | None:
    """Mean squared error of a predicted probability against the 0/1 outcome; None for no data."""
    import numpy as np

    pred, outcome = _paired(pred, outcome)
    return float(np.mean((pred - outcome) ** 2)) if len(pred) else None


def calibration(pred, outcome, bins: int = 10) -> dict:
    """Reliability diagram data on ``bins`` equal-width bins of [0, 1] (1.0 falls in the last) and the
    expected calibration error: sum over non-empty bins of n_b / N * |mean prediction - share positive|."""
    import numpy as np

    pred, outcome = _paired(pred, outcome)
    # against the reported edges i / bins, so a value on an edge lands in the bin it opens (pred * bins can round down)
    edges = np.array([i / bins for i in range(bins + 1)])
    which = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for i in range(bins):
        mask = which == i
        n = int(mask.sum())
        mean_pred = float(pred[mask].mean()) if n else None
        frac = float(outcome[mask].mean()) if n else None
        if n:
            ece += n / len(pred) * abs(mean_pred - frac)
        rows.append({"low": i / bins, "high": (i + 1) / bins, "n": n, "mean_pred": mean_pred, "frac_positive": frac})
    return {"ece": float(ece) if len(pred) else None, "bins": rows}


def overestimation(pred, realised) -> float | None:
    """mean(predicted - realised value): > 0 means the model promises more than happens."""
    import numpy as np

    pred, realised = _paired(pred, realised)
    return float(np.mean(pred - realised)) if len(pred) else None


# --- best-of-N selection -------------------------------------------------------------------------------
def spearman(x, y) -> float | None:
    """Spearman rank correlation (average ranks for ties); None with < 2 points or a constant side."""
    import numpy as np

    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths; got {len(x)} and {len(y)}")
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def selection(true_outcomes, chosen: int) -> dict:
    """One best-of-N decision judged by its candidates' true outcomes: regret = best true outcome - the
    chosen one's; rank = 1 + candidates truly better than the chosen one (1 = best, ties favour it)."""
    true = [float(t) for t in true_outcomes]
    if not true or not 0 <= chosen < len(true):
        raise ValueError(f"chosen candidate {chosen} not in 0-{len(true) - 1}")
    return {"regret": max(true) - true[chosen], "rank": 1 + sum(t > true[chosen] for t in true), "n": len(true)}


def action_spread(chunks) -> float | None:
    """Candidate diversity: mean pairwise Euclidean distance of the N action chunks (flattened); None if N < 2."""
    import numpy as np

    flat = np.asarray([np.asarray(c, dtype=float).ravel() for c in chunks])
    if len(flat) < 2:
        return None
    dist = np.sqrt(((flat[:, None] - flat[None]) ** 2).sum(-1))
    return float(dist[np.triu_indices(len(flat), 1)].mean())
