"""Statistics of evaluations: pure functions over counts, shared by the GRPO and POEM studies.

Accuracy intervals (Wilson), the exact McNemar test for two methods graded on the same items
(and its item-level form over several runs), a paired permutation test for fractional (expected)
correctness, Fisher's exact test for two rates of an event over
runs, Holm's correction over a family of tests, pass@k, mean ± std over seeds and pooled accuracy
over seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Iterable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): ``1 − C(n−c, k) / C(n, k)``.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 0, 2), pass_at_k(4, 4, 4)
    (0.25, 0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for the default ``z``).

    Used instead of the normal approximation because benchmark accuracies here are often near 0
    or 1 on ~100 problems, where ``p ± z·sqrt(p(1−p)/n)`` leaves [0, 1] or collapses to a point.

    >>> [round(x, 3) for x in wilson_interval(56, 100)]
    [0.462, 0.653]
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need n >= 1 and 0 <= successes <= n, got successes={successes}, n={n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0 or n successes an end is exactly 0 or 1; set it so rounding cannot leave it at 0.99999
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for two models graded on the same problems.

    ``only_a``: problems only model A solved; ``only_b``: only B. Problems both or neither solved
    carry no information about which is better. Under "equally good" each discordant problem is a
    fair coin, so p = P(a split at least this lopsided) = 2 · BinomCDF(min; a + b, 1/2), capped at 1.

    >>> mcnemar_exact_p(0, 6), mcnemar_exact_p(3, 3)
    (0.03125, 1.0)
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a}, {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def item_sign_test(trials: Iterable[tuple[Hashable, bool, bool]]) -> dict[str, Any]:
    """Two methods graded on the same items under several runs (seeds), the *item* as the unit.

    ``trials``: ``(item, a correct, b correct)`` per item and run. The runs score the same items,
    so pooling trials into :func:`mcnemar_exact_p` would count one item's repeats as independent
    evidence. Per item, ``d`` = runs only A got it right − runs only B did; ``better`` / ``worse``
    = items with ``d`` > 0 / < 0, and ``p`` = the exact two-sided sign test on them (McNemar's test
    when every item is scored once). The test conditions on the runs made: it says whether A beats
    B on these items under these runs, not how a new seed would go.

    >>> item_sign_test([("x", True, False), ("x", False, True), ("y", True, False)])["better"]
    1
    """
    per_item: dict[Hashable, int] = {}
    for item, a, b in trials:
        per_item[item] = per_item.get(item, 0) + int(bool(a)) - int(bool(b))
    better = sum(d > 0 for d in per_item.values())
    worse = sum(d < 0 for d in per_item.values())
    return {"items": len(per_item), "better": better, "worse": worse, "p": mcnemar_exact_p(better, worse)}


# the sign-flip distribution is computed exactly on a grid; past this many (items x grid steps) the
# differences are too finely spread for it (finer than 1/10,000 over hundreds of items)
MAX_SIGN_FLIP_WORK = 200_000_000


def paired_permutation_test(trials: Iterable[tuple[Hashable, float, float]], *,
                            max_denominator: int = 10_000) -> dict[str, Any]:
    """Paired permutation (sign-flip) test for two methods on the same items, correctness in [0, 1].

    ``trials``: ``(item, a, b)`` per item and run, with ``a`` / ``b`` each method's correctness on
    the item: 0 or 1, or a fraction — e.g. a random order's *expected* correctness, the fraction of
    the candidate orders that get the item right. Per item (summed over its runs, as
    :func:`item_sign_test`), ``d`` = a − b; ``better`` / ``worse`` = items with ``d`` > 0 / < 0.
    ``p`` is the exact two-sided p-value of ``sum(d)`` under the sign-flip null (each nonzero
    ``d`` equally likely to be ``+|d|`` or ``-|d|``): the share of the ``2^items`` sign patterns
    whose ``|sum|`` is at least the observed one, computed exactly by convolution after putting the
    differences on a common grid (each value read as a fraction with denominator at most
    ``max_denominator``: ``k / P`` for ``P`` candidate orders is exact). With 0/1 correctness every
    ``|d|`` is 1 and this is :func:`item_sign_test`'s sign test (McNemar's with one run). With a
    fractional ``b``, ``d`` is not symmetric under "a is no better than b", but its mean is 0 and
    the flip distribution's variance, ``sum(d^2)``, is the null's expected variance: the test is a
    randomisation form of the paired t-test, valid as the items grow.

    >>> r = paired_permutation_test([("x", 1, 0.25), ("y", 1, 0.75), ("z", 1, 1.0)])
    >>> r["better"], r["worse"], r["p"]   # d = 3/4 and 1/4: |sum| >= 1 under 2 of the 4 flips
    (2, 0, 0.5)
    """
    per_item: dict[Hashable, Fraction] = {}
    for item, a, b in trials:
        for v in (a, b):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"correctness must lie in [0, 1], got {v!r} for item {item!r}")
        d = Fraction(float(a)).limit_denominator(max_denominator) - Fraction(float(b)).limit_denominator(max_denominator)
        per_item[item] = per_item.get(item, Fraction(0)) + d
    diffs = [d for d in per_item.values() if d != 0]
    out = {"items": len(per_item), "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs),
           "mean_diff": float(sum(per_item.values(), Fraction(0)) / len(per_item)) if per_item else 0.0}
    if not diffs:
        return {**out, "p": 1.0}
    scale = math.lcm(*(d.denominator for d in diffs))
    steps = [int(abs(d) * scale) for d in diffs]  # exact integers on the common grid
    total = sum(steps)
    if len(steps) * total > MAX_SIGN_FLIP_WORK:
        raise ValueError(f"paired_permutation_test: {len(steps)} items on a grid of 1/{scale} is too fine to "
                         "enumerate exactly; lower max_denominator")
    dist = np.zeros(2 * total + 1)  # P(sum = x - total)
    dist[total] = 1.0
    for s in steps:
        flipped = np.zeros_like(dist)
        flipped[s:] += 0.5 * dist[:-s]
        flipped[:-s] += 0.5 * dist[s:]
        dist = flipped
    observed = abs(int(sum(d * scale for d in diffs)))
    values = np.abs(np.arange(-total, total + 1))
    return {**out, "p": min(1.0, float(dist[values >= observed].sum()))}


def fisher_exact_p(a_events: int, a_n: int, b_events: int, b_n: int) -> float:
    """Two-sided Fisher exact p-value: is an event (a stalled run, say) more frequent in group A
    (``a_events`` of ``a_n``) than in group B, or less?

    Conditions on the margins (``a_n``, ``b_n`` and the total events) and sums the hypergeometric
    probabilities of every table no more likely than the observed one (the usual two-sided rule;
    a relative tolerance absorbs float ties).

    >>> round(fisher_exact_p(1, 3, 0, 6), 4)
    0.3333
    """
    if not (0 <= a_events <= a_n and 0 <= b_events <= b_n):
        raise ValueError(f"need 0 <= events <= n in both groups, got {a_events}/{a_n}, {b_events}/{b_n}")
    events, total = a_events + b_events, a_n + b_n
    if total == 0:
        return 1.0

    def prob(x: int) -> float:  # P(A holds x of the events) under no difference
        return math.comb(a_n, x) * math.comb(b_n, events - x) / math.comb(total, events)

    observed = prob(a_events)
    support = range(max(0, events - b_n), min(a_n, events) + 1)
    return min(1.0, sum(p for p in map(prob, support) if p <= observed * (1 + 1e-9)))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (family-wise error control).

    The i-th smallest p is multiplied by (m − i + 1), adjusted values are made non-decreasing in
    that order and capped at 1; reject where the adjusted p is below the level.

    >>> holm_adjust([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        if not 0.0 <= p_values[i] <= 1.0:
            raise ValueError(f"p-values must lie in [0, 1], got {p_values[i]} at position {i}")
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def pooled_accuracy(correct_and_n: Sequence[tuple[int, int]]) -> dict[str, Any] | None:
    """Correct answers over several runs' problems, with a 95% Wilson interval.

    Seeds of one method share the same evaluation problems, so the pooled n over-states
    independence a little; it still shows the binomial noise of ~100 problems that a mean ± std of
    two seeds hides. None when there is nothing to pool.
    """
    pairs = [(int(c), int(n)) for c, n in correct_and_n if n]
    if not pairs:
        return None
    correct, n = sum(c for c, _ in pairs), sum(n for _, n in pairs)
    lo, hi = wilson_interval(correct, n)
    return {"correct": correct, "n": n, "accuracy": correct / n, "ci95": [lo, hi]}
