"""Statistics of evaluations and runs: checked against their definitions, by enumeration."""

from __future__ import annotations

import math

import pytest

from memrl.grpo.stats import first_last_means, step_timing
from memrl.stats import (
    fisher_exact_p,
    holm_adjust,
    item_sign_test,
    mcnemar_exact_p,
    mean_std,
    paired_permutation_test,
    pass_at_k,
    pooled_accuracy,
    wilson_interval,
)


def test_pass_at_k_matches_brute_force():
    from itertools import combinations

    n, c = 5, 2
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


@pytest.mark.parametrize("successes,n", [(56, 100), (0, 100), (100, 100), (1, 3), (7, 8)])
def test_wilson_interval_endpoints_are_where_the_score_test_turns(successes, n):
    # The Wilson interval is {p : |p_hat - p| <= z sqrt(p (1 - p) / n)}; check that definition at the ends.
    z, p_hat = 1.96, successes / n
    lo, hi = wilson_interval(successes, n)
    assert 0.0 <= lo <= p_hat <= hi <= 1.0 and hi - lo > 0
    for end in (lo, hi):
        if 0.0 < end < 1.0:
            assert abs(p_hat - end) == pytest.approx(z * math.sqrt(end * (1 - end) / n), rel=1e-9)
    assert (lo == 0.0) == (successes == 0) and (hi == 1.0) == (successes == n)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)


def test_mcnemar_exact_p_by_enumeration():
    from itertools import product

    # Enumerate every way 7 discordant problems can split under a fair coin; the p-value is the
    # probability of a split at least as lopsided as the observed one.
    n = 7
    splits = [sum(bits) for bits in product((0, 1), repeat=n)]
    for a in range(n + 1):
        extremity = abs(a - n / 2)
        expected = sum(abs(k - n / 2) >= extremity for k in splits) / len(splits)
        assert mcnemar_exact_p(a, n - a) == pytest.approx(expected)
        assert mcnemar_exact_p(a, n - a) == mcnemar_exact_p(n - a, a)
    assert mcnemar_exact_p(0, 0) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


def test_item_sign_test_counts_each_item_once_over_runs():
    # one run per item: the same as McNemar's test on the discordant trials
    once = [(i, i < 7, i >= 7) for i in range(9)] + [(9, True, True), (10, False, False)]
    assert item_sign_test(once) == {"items": 11, "better": 7, "worse": 2, "p": mcnemar_exact_p(7, 2)}
    # three runs grade the same items: item 0 counted once, however many runs favour A on it
    repeated = [(0, True, False)] * 3 + [(1, False, True), (1, True, False), (2, False, True), (2, False, True)]
    r = item_sign_test(repeated)
    assert (r["items"], r["better"], r["worse"]) == (3, 1, 1) and r["p"] == pytest.approx(1.0, abs=1e-12)


def test_paired_permutation_test_by_enumerating_every_sign_pattern():
    from itertools import product

    # a random order's expected correctness (k of 24 orders right) against 0/1 correctness
    a = [1, 0, 1, 1, 0, 1, 1, 0, 1]
    b = [5 / 24, 13 / 24, 1 / 24, 23 / 24, 0.0, 12 / 24, 1.0, 7 / 24, 18 / 24]
    d = [x - y for x, y in zip(a, b)]
    nonzero = [x for x in d if abs(x) > 1e-12]  # items 4 and 6 tie (both never / always right)
    observed = abs(sum(nonzero))
    sums = [abs(sum(s * x for s, x in zip(signs, nonzero))) for signs in product((1, -1), repeat=len(nonzero))]
    expected = sum(v >= observed - 1e-12 for v in sums) / len(sums)
    r = paired_permutation_test(list(zip(range(9), a, b)))
    assert r["p"] == pytest.approx(expected, abs=1e-12)
    assert (r["items"], r["better"], r["worse"]) == (9, 5, 2)
    assert r["mean_diff"] == pytest.approx(sum(d) / 9, abs=1e-12)


def test_paired_permutation_test_is_the_sign_test_for_0_1_correctness_and_pools_items():
    once = [(i, float(i < 7), float(i >= 7)) for i in range(9)] + [(9, 1.0, 1.0), (10, 0.0, 0.0)]
    r = paired_permutation_test(once)
    assert (r["items"], r["better"], r["worse"]) == (11, 7, 2)
    assert r["p"] == pytest.approx(mcnemar_exact_p(7, 2), abs=1e-12)
    # several runs of one item add up before the test, as item_sign_test does
    repeated = [(0, 1, 0)] * 3 + [(1, 0, 1), (1, 1, 0), (2, 0, 1), (2, 0, 1)]
    r = paired_permutation_test(repeated)
    assert (r["items"], r["better"], r["worse"]) == (3, 1, 1) and r["p"] == pytest.approx(1.0, abs=1e-12)
    assert paired_permutation_test([(0, 0.5, 0.5)])["p"] == pytest.approx(1.0, abs=1e-12)  # no difference
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        paired_permutation_test([(0, 1.5, 0.0)])


def test_pooled_accuracy_sums_counts_before_the_interval():
    pooled = pooled_accuracy([(56, 100), (65, 100), (0, 0)])  # a run without problems adds nothing
    assert pooled["correct"] == 121 and pooled["n"] == 200 and pooled["accuracy"] == pytest.approx(0.605, abs=1e-12)
    assert pooled["ci95"] == list(wilson_interval(121, 200))
    assert pooled_accuracy([]) is None and pooled_accuracy([(0, 0)]) is None


def test_step_timing_covers_every_logged_step_of_a_resumed_run():
    # two segments of one run, as metrics.jsonl holds them after a resume; rows without timing
    # (evaluation logs, the final summary line) do not count
    rows = [{"step": 1, "time/step_s": 10.0, "time/generation_share": 0.5, "time/reward_share": 0.1},
            {"step": 2, "time/step_s": 20.0, "time/generation_share": 0.3, "time/reward_share": 0.3},
            {"step": 2, "train_runtime": 99.0},
            {"step": 3, "time/step_s": 30.0, "time/generation_share": 0.4, "time/reward_share": 0.2}]
    timing = step_timing(rows)
    assert timing == {"seconds_per_step": 20.0, "generation_share": pytest.approx(0.4),
                      "reward_share": pytest.approx(0.2), "steps_timed": 3, "logged_train_seconds": 60.0}
    assert step_timing([{"step": 1, "loss": 0.1}]) == {}


def test_mean_std_and_first_last_means():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([5.0]) == pytest.approx((5.0, 0.0), abs=1e-12)
    values = list(range(20))
    assert first_last_means(values) == pytest.approx((4.5, 14.5), abs=1e-12)
    assert first_last_means(values[:19]) is None


@pytest.mark.parametrize("table", [(1, 3, 0, 6), (0, 5, 4, 5), (2, 5, 2, 5), (5, 5, 0, 5), (3, 8, 1, 9), (0, 3, 0, 4)])
def test_fisher_exact_p_matches_scipy(table):
    from scipy.stats import fisher_exact

    a, an, b, bn = table
    expected = fisher_exact([[a, an - a], [b, bn - b]], alternative="two-sided").pvalue
    assert fisher_exact_p(*table) == pytest.approx(expected, rel=1e-9)


def test_fisher_exact_p_is_symmetric_and_refuses_impossible_counts():
    assert fisher_exact_p(1, 3, 0, 6) == pytest.approx(fisher_exact_p(0, 6, 1, 3), rel=1e-12)
    assert fisher_exact_p(1, 3, 0, 6) == pytest.approx(1 / 3, rel=1e-9)  # the second study's 1 of 3 vs 0 of 6
    with pytest.raises(ValueError, match="events <= n"):
        fisher_exact_p(4, 3, 0, 6)


def test_holm_adjust_steps_down_and_keeps_the_input_order():
    # sorted 0.01, 0.02, 0.04, 0.30 -> x4, x3, x2, x1 = 0.04, 0.06, 0.08, 0.30 (already monotone)
    assert holm_adjust([0.30, 0.01, 0.04, 0.02]) == pytest.approx([0.30, 0.04, 0.08, 0.06], abs=1e-12)
    # monotonicity: a later raw product below an earlier adjusted value is lifted to it
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06], abs=1e-12)
    assert holm_adjust([0.9, 0.8]) == pytest.approx([1.0, 1.0], abs=1e-12)  # capped at 1
    assert holm_adjust([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([0.5, 1.5])
