"""Outer samplers of a search: they propose points of the unit cube (``SearchSpace.decode`` turns each into
a scenario) and learn from the graded score of what they proposed.

``random`` (uniform, the baseline), ``halton`` / ``sobol`` (scrambled low-discrepancy sequences from
``scipy.stats.qmc``), ``ce`` (cross-entropy: per-dimension bucket distributions refitted to the lowest
scores, after VerifAI's sampler), ``bandit`` (UCB over families: which family to perturb is the arm, its
parameters uniform), ``novelty`` (exploration by novelty on each family's axes with a near-miss pull,
exploitation spread over the failure signatures: built for distinct modes), ``guided`` (the default:
exploration where the scores have not yet ruled a failure region out, :class:`Guided`), ``blind-ce`` /
``blind-novelty`` / ``blind-guided`` (fed noise instead of verdicts: the score-blind baselines with their
priors, :func:`blind`). Every sampler draws only from its own seeded generator, so the same seed and the same
verdicts give the same proposals (a resumed search replays its history from the store).
"""

from __future__ import annotations

import math

import numpy as np

from scenarios.searchspace import CONTEXT, SearchSpace, axis_rest, point_key
from stress.core.registry import Registry


class Sampler:
    name = "random"

    def __init__(self, space: SearchSpace, seed: int):
        self.space, self.dims = space, space.dims
        self.rng = np.random.default_rng([seed, 0x5EA])
        self.history: list[tuple[np.ndarray, float, bool, str | None]] = []  # (u, score, violated, mode)

    def propose(self) -> np.ndarray:
        return self.rng.random(self.dims)

    def update(self, u: np.ndarray, score: float | None, violated: bool, mode: str | None) -> None:
        """``score`` None: the scenario was invalid (no verdict); it still counts as explored."""
        self.history.append((np.asarray(u), score, violated, mode))

    def explained(self, families: set[str]) -> None:
        """A finding shrank to these families: the failure they cause is known (active samplers look elsewhere)."""


class LowDiscrepancy(Sampler):
    """A scrambled low-discrepancy sequence of ``engine`` (a class of scipy.stats.qmc, by name)."""

    engine: str

    def __init__(self, space, seed):
        super().__init__(space, seed)
        from scipy.stats import qmc  # lazy: scipy.stats costs 0.7 s at import, which only these two samplers need

        self.sequence = getattr(qmc, self.engine)(d=self.dims, scramble=True, seed=self.rng)

    def propose(self):
        return self.sequence.random(1)[0]


class Halton(LowDiscrepancy):
    name, engine = "halton", "Halton"


class Sobol(LowDiscrepancy):
    name, engine = "sobol", "Sobol"


class CrossEntropy(Sampler):
    """Per dimension, a categorical over ``BUCKETS`` equal bins of [0, 1), refitted after every verdict to
    the elite (the lowest scores so far), mixed with the uniform so no bin dies. The first ``WARMUP``
    proposals come from the severe half of every axis (``SearchSpace.severe_draw``). Two fits alternate:
    one on every scored scenario (exploit: more violations where they are) and one leaving out scenarios
    that perturb the families a finding already shrank to (explore: new modes instead of piling onto a
    known one). ``EXPLORE`` of the proposals stay uniform."""

    name = "ce"
    BUCKETS, WARMUP, ELITE, SMOOTHING, EXPLORE, NEW = 8, 6, 0.2, 0.15, 0.25, 0.5

    def __init__(self, space, seed):
        super().__init__(space, seed)
        uniform = np.full((self.dims, self.BUCKETS), 1.0 / self.BUCKETS)
        self.fits = {"all": uniform, "new": uniform}
        self.known: list[set[str]] = []

    def explained(self, families):
        self.known.append(set(families))
        self._refit()

    def propose(self):
        if len(self.history) < self.WARMUP:
            return self.space.severe_draw(self.rng)
        if self.rng.random() < self.EXPLORE:
            return self.rng.random(self.dims)
        probs = self.fits["new" if self.known and self.rng.random() < self.NEW else "all"]
        cumulative = probs.cumsum(axis=1)
        bins = (cumulative < self.rng.random((self.dims, 1))).sum(axis=1).clip(0, self.BUCKETS - 1)
        return (bins + self.rng.random(self.dims)) / self.BUCKETS

    def update(self, u, score, violated, mode):
        super().update(u, score, violated, mode)
        self._refit()

    def _refit(self):
        scored = [(s, x) for x, s, _, _ in self.history if s is not None]
        new = [(s, x) for s, x in scored if not any(k and k <= set(self.space.decode(x)["families"]) for k in self.known)]
        for name, ranked in (("all", scored), ("new", new)):
            if len(ranked) >= self.WARMUP:
                self.fits[name] = self._fit(sorted(ranked, key=lambda t: t[0]))

    def _fit(self, ranked) -> np.ndarray:
        elite = np.array([x for _, x in ranked[: max(2, int(self.ELITE * len(ranked)))]])
        bins = np.clip((elite * self.BUCKETS).astype(int), 0, self.BUCKETS - 1)
        counts = np.stack([np.bincount(bins[:, d], minlength=self.BUCKETS) for d in range(self.dims)])
        return self.SMOOTHING / self.BUCKETS + (1 - self.SMOOTHING) * counts / len(elite)


class Bandit(Sampler):
    """UCB1 over families: each proposal perturbs 1..max_families families chosen one by one by
    ``mean reward + sqrt(2 ln t / n)``, the reward of a scenario shared by its families; reward 1 for a
    violation, else (1 - score) / 2 (a near miss pays more). Context and parameters are uniform."""

    name = "bandit"

    def __init__(self, space, seed):
        super().__init__(space, seed)
        self.pulls = {n: 0 for n in space.names}
        self.rewards = {n: 0.0 for n in space.names}

    def propose(self):
        u = self.rng.random(self.dims)
        names, at = self.space.names, len(CONTEXT)
        count = 1 + int(u[at] * self.space.max_families)
        t = 1 + sum(self.pulls.values())
        remaining = list(names)
        for i in range(count):
            def ucb(n):
                if self.pulls[n] == 0:
                    return math.inf
                return self.rewards[n] / self.pulls[n] + math.sqrt(2 * math.log(t) / self.pulls[n])

            best = max(ucb(n) for n in remaining)
            ties = [n for n in remaining if ucb(n) == best]
            choice = ties[int(self.rng.integers(len(ties)))]
            index = remaining.index(choice)
            u[at + 1 + i] = (index + self.rng.random()) / len(remaining)  # decodes to this family
            remaining.pop(index)
        return u

    def update(self, u, score, violated, mode):
        super().update(u, score, violated, mode)
        if score is None:
            return
        reward = 1.0 if violated else float(np.clip((1.0 - score) / 2.0, 0.0, 1.0))
        for name in self.space.decode(u)["families"]:
            self.pulls[name] += 1
            self.rewards[name] += reward


class Novelty(Sampler):
    """Space-filling exploration that reads what it found, and exploitation that spreads over the modes.

    - The first ``WARMUP`` proposals are uniform, from the same stream as ``random`` on the same seed (so
      its first violation is random's whenever random's comes that early).
    - Then ``EXPLOIT`` of the proposals (once a violation is known) are near copies of a violating
      scenario (each axis moved by a Gaussian of ``STEP`` on the unit cube, the context drawn afresh), the
      violation drawn from the mode seen least so far (violations per failure signature), so the rate
      grows on every mode found, not on the first.
    - The rest explore: of ``CANDIDATES`` uniform draws with every family slot filled (``max_families``
      families: a scenario that perturbs two families tests both at once, shrinking removes the one that
      does not matter), the one furthest from everything evaluated, measured per family on that family's
      own axes and per composition on its axes together (failure regions live on one or two axes of one
      or two families, so that is where coverage counts). Evaluated scenarios near known violations
      (the exploit proposals) push exploration away from known modes. To that novelty each family adds
      a near-miss bonus, ``NEAR_MISS`` x (1 - score) of the nearest scored scenario that held, on that
      family's axes, decaying as exp(-distance / ``NEAR_RADIUS``): a low score that is not yet a
      violation pulls exploration toward it.

    Constants tuned on the planted landscapes 0-19 only (docs/search.md). ``blind(Novelty)`` gets noise
    for scores and no violation: it explores by novelty alone and never exploits."""

    name = "novelty"
    WARMUP, EXPLOIT, STEP, CANDIDATES, COMPOSITION_WEIGHT, UNSEEN, NEAR_MISS, NEAR_RADIUS = 10, 0.18, 0.01, 12, 2.0, 2.0, 3.0, 1.0

    def __init__(self, space, seed):
        super().__init__(space, seed)
        self.local = np.random.default_rng([seed, 0x10CA1])
        self.first_axis = len(CONTEXT) + 1 + space.max_families
        self.held: dict[str, list[tuple[np.ndarray, float]]] = {}  # family -> (its axes, score) of every scored scenario that held
        self.violations: dict[str, list[np.ndarray]] = {}  # failure signature -> violating points
        self.seen: dict[tuple[str, ...], list[np.ndarray]] = {}  # family or composition -> its axes on [-1, 1] in every proposal

    def update(self, u, score, violated, mode):
        super().update(u, score, violated, mode)
        axes = self._axes(u)
        if score is not None and not violated:
            for name, values in axes.items():
                self.held.setdefault(name, []).append((values, score))
        for name, values in axes.items():
            self.seen.setdefault((name,), []).append(values)
        if len(axes) > 1:
            self.seen.setdefault(tuple(sorted(axes)), []).append(np.concatenate([axes[n] for n in sorted(axes)]))
        if violated:
            self.violations.setdefault((mode or "").split(" x ")[0], []).append(np.asarray(u))

    def propose(self):
        if len(self.history) < self.WARMUP:
            return self.rng.random(self.dims)
        if self.violations and self.local.random() < self.EXPLOIT:
            return near_copy(self.violations, self.local, self.first_axis, self.STEP)
        candidates = [self.rng.random(self.dims) for _ in range(self.CANDIDATES)]
        for c in candidates:
            c[len(CONTEXT)] = 1.0 - 1e-9  # every family slot filled
        return max(candidates, key=self._novelty)

    def _axes(self, u) -> dict[str, np.ndarray]:
        def unit(axis, i):
            return i / (axis.high if i > 0 else -axis.low if i < 0 else 1)

        return {n: np.array([unit(a, idx[a.name]) for a in self.space.families[n]]) for n, idx in self.space.decode(u)["families"].items()}

    def _novelty(self, u) -> float:
        """Distance to the nearest evaluated scenario perturbing the same family, summed over the families,
        plus ``COMPOSITION_WEIGHT`` x the same for the whole composition (``UNSEEN`` where there is none),
        plus each family's near-miss bonus."""
        mine = self._axes(u)
        parts = [((name,), axes, 1.0) for name, axes in mine.items()]
        if len(mine) > 1:
            parts.append((tuple(sorted(mine)), np.concatenate([mine[n] for n in sorted(mine)]), self.COMPOSITION_WEIGHT))
        total = 0.0
        for name, axes in mine.items():
            held = self.held.get(name)
            if held:
                distances = np.linalg.norm(np.asarray([x for x, _ in held]) - axes, axis=1)
                nearest = int(np.argmin(distances))
                total += self.NEAR_MISS * max(0.0, 1.0 - held[nearest][1]) * float(np.exp(-distances[nearest] / self.NEAR_RADIUS))
        for key, axes, weight in parts:
            seen = self.seen.get(key)
            total += weight * (float(np.min(np.linalg.norm(np.asarray(seen) - axes, axis=1))) if seen else self.UNSEEN)
        return total


def near_copy(violations: dict[str, list[np.ndarray]], rng: np.random.Generator, first_axis: int, step: float) -> np.ndarray:
    """Exploitation spread over the modes: a violating point of the failure signature seen least so far,
    its context drawn afresh and each axis (from ``first_axis`` on) moved by a Gaussian of ``step``."""
    least = min(len(v) for v in violations.values())
    rare = sorted(k for k, v in violations.items() if len(v) == least)
    pool = violations[rare[int(rng.integers(len(rare)))]]
    child = pool[int(rng.integers(len(pool)))].copy()
    child[: len(CONTEXT)] = rng.random(len(CONTEXT))
    child[first_axis:] += rng.normal(0.0, step, len(child) - first_axis)
    return np.mod(child, 1.0)


class Guided(Sampler):
    """Exploration that rules out, from the graded scores, where an unknown failure region cannot be.

    A score is read as a distance to the nearest failure region, plus noise: a scenario that holds with
    score ``s`` says no region lies within ``s - MARGIN`` of it (on the unit-cube scale of each axis, the
    largest axis gap counting) for each family it perturbs, and for each pair of them together (a region
    that needs both). So each candidate's *lower bound* on its distance to a region, per family and per
    pair, is ``max over evaluated scenarios (s - distance) - MARGIN``; where it is below 0 a region may
    still hide. Of ``CANDIDATES`` uniform draws with every family slot filled, the proposal is the one
    whose bounds lie furthest below 0, summed over its families and its pair (1 where nothing perturbing
    them was evaluated yet): far from what held with high scores, near what nearly failed. Violations
    bound nothing (the region they are in is found); a candidate within ``KNOWN_RADIUS`` of a violation on
    the axes of families a finding shrank to loses 1 per such violation, so exploration leaves known
    modes to the exploitation. An invalid scenario (no verdict: on a real scene, e.g. an object pose
    that does not rest) bounds as if it held with score ``INVALID``: nothing is learnt about failures
    there, but without it the bounds near it never rise and the sampler keeps proposing invalid scenes
    (on ALOHA it spent 39 of 100 proposals so before this rule; planted scenarios are never invalid).

    - The first ``WARMUP`` proposals are ``random``'s own stream on the same seed with every family slot
      filled (a scenario random proposes that violates usually still violates with a second family added,
      so the first violation comes no later than random's whenever it comes that early; on a real scene
      the added family can change the outcome or make the scene invalid).
    - ``EXPLOIT`` of the proposals, once a violation is known, are near copies of a violating scenario
      (:func:`near_copy`), from the mode seen least so far.
    - Attribution: filling every slot records a failure that one family causes alone under the pair
      (a mode is signature x families). So after the first violation of each new mode of a composition,
      the next proposals are its one-family projections (each family alone, at the same axis values and
      context), unless that scenario was already proposed or that family alone already showed that
      signature: the cause gets its own mode, and a projection that holds says the pair was needed.

    Constants tuned on the planted landscapes 0-49 and 1000-1059 only (docs/search.md), except ``INVALID``,
    which was set, not tuned (it rules out 0.2 around an invalid scenario; planted scenarios are never
    invalid, so it cannot be tuned there). ``blind(Guided)``
    gets noise for scores and no violation: the same candidates and bounds read from noise, no exploitation
    and no attribution (both need a verdict)."""

    name = "guided"
    WARMUP, CANDIDATES, MARGIN, KNOWN_RADIUS, EXPLOIT, STEP, INVALID = 10, 24, 0.2, 0.08, 0.05, 0.01, 0.4

    def __init__(self, space, seed):
        super().__init__(space, seed)
        self.local = np.random.default_rng([seed, 0x10CA1])
        self.first_axis = len(CONTEXT) + 1 + space.max_families
        sizes = [len(space.families[n]) for n in space.names]
        starts = np.cumsum([0, *sizes])
        self.columns = {n: np.arange(starts[j], starts[j + 1]) for j, n in enumerate(space.names)}  # family -> its axes in z
        axes = [a for n in space.names for a in space.families[n]]
        self.rest = np.array([axis_rest(a) for a in axes], float)
        self.scale = np.array([max(1, a.high - a.low) for a in axes], float)
        self.held: list[tuple[np.ndarray, frozenset, float]] = []  # (z, families, score) of every scenario that held or was invalid
        self.violating: list[tuple[np.ndarray, frozenset]] = []  # (z, families) of every violation
        self.violations: dict[str, list[np.ndarray]] = {}  # failure signature -> violating points (unit cube)
        self.known: list[frozenset] = []  # the families findings shrank to
        self.tried: set[str] = set()  # every scenario proposed so far
        self.modes: set[str] = set()  # every mode (signature x families) seen
        self.attributions: list[np.ndarray] = []  # one-family projections of violations, waiting to be proposed

    def _z(self, u) -> tuple[np.ndarray, frozenset]:
        """The point's axes as (index - rest) / (high - low), rest for a family it does not perturb."""
        families = self.space.decode(u)["families"]
        z = np.zeros(len(self.rest))
        for name, indices in families.items():
            at = self.columns[name]
            z[at] = (np.array([indices[a.name] for a in self.space.families[name]]) - self.rest[at]) / self.scale[at]
        return z, frozenset(families)

    def explained(self, families):
        self.known.append(frozenset(families))

    def update(self, u, score, violated, mode):
        super().update(u, score, violated, mode)
        z, families = self._z(u)
        self.tried.add(point_key(self.space.decode(u)))
        if violated:
            self.violating.append((z, families))
            signature = (mode or "").split(" x ")[0]
            self.violations.setdefault(signature, []).append(np.asarray(u))
            if len(families) > 1 and mode not in self.modes:  # a new mode of a composition: which family alone causes it?
                for name in sorted(families):
                    alone = self._alone(u, name)
                    if f"{signature} x {name}" not in self.modes and point_key(self.space.decode(alone)) not in self.tried:
                        self.attributions.append(alone)
            self.modes.add(mode)
        else:  # an invalid scene has no verdict, but proposing near it again would waste the budget the same way
            self.held.append((z, families, self.INVALID if score is None else score))

    def _alone(self, u, name: str) -> np.ndarray:
        """``u`` with ``name`` as its only family, at the same axis values and context."""
        alone = np.array(u, float)
        at = len(CONTEXT)
        alone[at] = 0.0  # one family
        alone[at + 1] = (self.space.names.index(name) + 0.5) / len(self.space.names)
        return alone

    def propose(self):
        while self.attributions:
            alone = self.attributions.pop(0)
            key = point_key(self.space.decode(alone))
            if key not in self.tried:
                self.tried.add(key)
                return alone
        if len(self.history) >= self.WARMUP and self.violations and self.local.random() < self.EXPLOIT:
            return near_copy(self.violations, self.local, self.first_axis, self.STEP)
        draws = self.CANDIDATES if len(self.history) >= self.WARMUP else 1
        candidates = [self.rng.random(self.dims) for _ in range(draws)]
        for c in candidates:
            c[len(CONTEXT)] = 1.0 - 1e-9  # every family slot filled
        return candidates[0] if draws == 1 else max(candidates, key=self._room)

    def _room(self, u) -> float:
        """How far below 0 the candidate's distance bounds lie, per family and for its pair, less the known violations near it."""
        z, families = self._z(u)
        keys = [frozenset([n]) for n in sorted(families)] + ([families] if len(families) > 1 else [])
        total = 0.0
        for key in keys:
            rows = [(x, s) for x, f, s in self.held if f & key]
            if not rows:
                total += 1.0
                continue
            at = np.concatenate([self.columns[n] for n in sorted(key)])
            x = np.array([r[0][at] for r in rows])
            bound = float(np.max(np.array([r[1] for r in rows]) - np.abs(x - z[at]).max(axis=1))) - self.MARGIN
            total += min(1.0, max(0.0, -bound))
        for known in self.known:
            if known <= families:
                at = np.concatenate([self.columns[n] for n in sorted(known)])
                total -= sum(1 for x, f in self.violating if known <= f and np.abs(x[at] - z[at]).max() < self.KNOWN_RADIUS)
        return total


def blind(cls: type[Sampler]) -> type[Sampler]:
    """``cls`` made score-blind: the same proposals machinery and prior, but every verdict it learns from is
    replaced by a uniform score from its own generator, never a violation and never a finding. A guided
    sampler must beat its blind twin, or its advantage is its prior, not learning."""

    class Blind(cls):
        name = f"blind-{cls.name}"
        __doc__ = f"``{cls.name}`` fed uniform noise instead of verdicts (the score-blind baseline with its prior)."

        def __init__(self, space, seed):
            super().__init__(space, seed)
            self.noise = np.random.default_rng([seed, 0xB11D])

        def update(self, u, score, violated, mode):
            super().update(u, None if score is None else float(self.noise.random()), False, None)

        def explained(self, families):
            pass

    Blind.__name__ = Blind.__qualname__ = f"Blind{cls.__name__}"
    return Blind


# the samplers: a class (space, seed) -> Sampler each, listed in this order; plug-ins add theirs through the
# "stress.samplers" entry points
SAMPLERS = Registry("sampler", "stress.samplers")
for _sampler in (Sampler, Halton, Sobol, CrossEntropy, Bandit, Novelty, Guided, blind(CrossEntropy), blind(Novelty), blind(Guided)):
    SAMPLERS.register(_sampler.name, _sampler)


def make_sampler(name: str, space: SearchSpace, seed: int) -> Sampler:
    return SAMPLERS.get(name)(space, seed)
