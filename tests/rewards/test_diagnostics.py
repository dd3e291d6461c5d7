"""Reward diagnostics on hand-built batches with hand-computed answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from memrl.rewards.diagnostics import (
    GroupStat,
    advantage_variance_share,
    batch_diagnostics,
    length_correlation,
    within_group_auc,
)


# --------------------------------------------------------------------------- AUC
def test_auc_by_hand_with_ties_and_a_group_without_variance():
    # group a: right {3, 2} vs wrong {2, 1}: 3>2, 3>1, 2=2 (1/2), 2>1  -> 3.5 / 4
    # group b: all right -> skipped
    # group c: right {1} vs wrong {1, 2}: 1=1 (1/2), 1<2 (0)            -> 0.5 / 2
    term = [3, 2, 2, 1, 5, 6, 1, 1, 2]
    correct = [1, 1, 0, 0, 1, 1, 1, 0, 0]
    groups = ["a"] * 4 + ["b"] * 2 + ["c"] * 3
    assert within_group_auc(term, correct, groups) == GroupStat((0.875 + 0.25) / 2, 2)


def test_auc_of_correctness_itself_is_one_and_of_its_negation_zero():
    correct = np.array([1, 0, 0, 1, 0, 1, 1, 1])
    groups = [0, 0, 0, 1, 1, 1, 2, 2]  # group 2 does not vary
    assert within_group_auc(correct, correct, groups) == pytest.approx((1.0, 2), abs=1e-12)
    assert within_group_auc(-correct, correct, groups) == pytest.approx((0.0, 2), abs=1e-12)
    assert within_group_auc(np.zeros(8), correct, groups) == pytest.approx((0.5, 2), abs=1e-12)  # a constant term: all ties


def test_auc_threshold_nan_values_and_no_varying_group():
    # float scores: > 0.5 is correct, so 0.5 itself is wrong
    assert within_group_auc([2, 1], [0.9, 0.5], [0, 0]) == pytest.approx((1.0, 1), abs=1e-12)
    # the NaN term value is left out: group 0 becomes right {2} vs wrong {1}
    assert within_group_auc([2, np.nan, 1], [1, 1, 0], [0, 0, 0]) == pytest.approx((1.0, 1), abs=1e-12)
    value, groups = within_group_auc([1, 2, 3, 4], [1, 1, 0, 0], [0, 0, 1, 1])
    assert math.isnan(value) and groups == 0


def test_auc_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="3 values for 2 completions"):
        within_group_auc([1, 2], [1, 0, 1], [0, 0])
    with pytest.raises(ValueError, match="groups has 3 ids for 2"):
        within_group_auc([1, 2], [1, 0], [0, 0, 1])
    with pytest.raises(ValueError, match="1-D"):
        within_group_auc([[1, 2]], [[1, 0]], [0])


# --------------------------------------------------------------------------- length correlation
def test_minus_length_has_correlation_minus_one():
    lengths = np.array([10, 30, 20, 5, 50, 7, 9])
    correct = [1, 1, 1, 0, 0, 1, 0]  # groups 0 and 1 constant, group 2 varies
    groups = [0, 0, 0, 1, 1, 2, 2]
    term = -lengths.astype(float)
    term[5:] = lengths[5:]  # in the varying group the term follows +length: it must be ignored
    assert length_correlation(term, lengths, groups, correct) == pytest.approx((-1.0, 2), abs=1e-12)


def test_length_correlation_by_hand_pooled_over_groups():
    # group 0: t - mean = (-1, 0, 1), l - mean = (-1, 1, 0): cross 1, squares 2 and 2
    # group 1: t - mean = (-1, 1),    l - mean = (-1, 1):    cross 2, squares 2 and 2
    # pooled: 3 / sqrt(4 * 4) = 0.75; group 2, whose correctness varies, is left out
    term = [1, 2, 3, 0, 2, 100, -100]
    lengths = [1, 3, 2, 0, 2, 1, 2]
    correct = [0, 0, 0, 1, 1, 1, 0]
    groups = [0, 0, 0, 1, 1, 2, 2]
    assert length_correlation(term, lengths, groups, correct) == (pytest.approx(0.75), 2)
    # without correctness every group counts: group 2 adds cross -100, squares 20000 and 0.5
    value, used = length_correlation(term, lengths, groups)
    assert used == 3 and value == pytest.approx((3 - 100) / math.sqrt(20004 * 4.5))


def test_length_correlation_undefined_cases_are_nan():
    # term constant within its group: zero variance
    value, used = length_correlation([1, 1, 2, 2], [3, 4, 5, 9], [0, 0, 1, 1], [1, 1, 0, 0])
    assert math.isnan(value) and used == 2
    # every group's correctness varies: no group qualifies
    value, used = length_correlation([1, 2], [3, 4], [0, 0], [1, 0])
    assert math.isnan(value) and used == 0
    # singleton groups cannot be centred
    value, used = length_correlation([1, 2], [3, 4], [0, 1], [1, 1])
    assert math.isnan(value) and used == 0


# --------------------------------------------------------------------------- advantage shares
def test_shares_by_hand_including_a_negative_one():
    # one group: a centred = (.5, -.5), b centred = (-.25, .25), advantage A = (.25, -.25)
    # share_a = (.5*.25 + .5*.25) / (2 * .0625) = 2, share_b = -1: b cancels half of a's signal
    shares = advantage_variance_share({"a": [1, 0], "b": [0, 0.5]}, [0, 0])
    assert shares == pytest.approx({"a": 2.0, "b": -1.0})
    assert sum(shares.values()) == pytest.approx(1.0)


def test_a_term_equal_to_the_whole_reward_has_share_one():
    correct = [1, 0, 0, 1, 1, 1]
    constant_in_group = [0.3, 0.3, 0.3, 0.7, 0.7, 0.7]  # per-question offsets: no advantage
    shares = advantage_variance_share({"correct": correct, "offset": constant_in_group}, [0, 0, 0, 1, 1, 1])
    assert shares == pytest.approx({"correct": 1.0, "offset": 0.0}, abs=1e-12)


def test_group_scaling_reweights_groups_and_batch_scaling_does_not():
    # group 0: a = (1, 0), b constant; group 1: a constant, b = (0, 2)
    terms = {"a": [1, 0, 0, 0], "b": [0, 0, 0, 2]}
    groups = [0, 0, 1, 1]
    # unscaled: A = (.5, -.5, -1, 1), var 2.5 -> a 0.5/2.5, b 2/2.5
    assert advantage_variance_share(terms, groups) == pytest.approx({"a": 0.2, "b": 0.8})
    assert advantage_variance_share(terms, groups, scale_rewards="batch") == pytest.approx({"a": 0.2, "b": 0.8})
    # per-group std (Bessel): s0 = 1/sqrt(2), s1 = sqrt(2): both groups' advantages become ±1/sqrt(2)
    scaled = advantage_variance_share(terms, groups, scale_rewards="group")
    assert scaled == pytest.approx({"a": 0.5, "b": 0.5}, abs=1e-3)
    assert sum(scaled.values()) == pytest.approx(1.0)


def test_shares_sum_to_one_on_random_batches_with_weights_and_nan():
    rng = np.random.default_rng(1)
    terms = {k: rng.normal(size=32) for k in ("correct", "format", "explore")}
    terms["format"][[3, 9]] = np.nan  # a reward function that returned None: counts as 0
    groups = np.repeat(np.arange(4), 8)
    for scale in ("none", "group", "batch"):
        shares = advantage_variance_share(terms, groups, {"explore": 0.5}, scale)
        assert sum(shares.values()) == pytest.approx(1.0)
    # weights act as in TRL: doubling a term is the same as passing it doubled
    doubled = advantage_variance_share({**terms, "explore": 2 * terms["explore"]}, groups)
    assert advantage_variance_share(terms, groups, {"explore": 2.0}) == pytest.approx(doubled)


def test_shares_are_nan_without_advantage_and_inputs_checked():
    # terms that cancel exactly within every group (a = 0.3 - b) leave no advantage
    shares = advantage_variance_share({"a": [0.1, 0.2], "b": [0.2, 0.1]}, [0, 0])
    assert all(math.isnan(v) for v in shares.values())
    with pytest.raises(ValueError, match="unknown term"):
        advantage_variance_share({"a": [1, 0]}, [0, 0], weights={"b": 1.0})
    with pytest.raises(ValueError, match="scale_rewards"):
        advantage_variance_share({"a": [1, 0]}, [0, 0], scale_rewards="std")
    with pytest.raises(ValueError, match="at least one"):
        advantage_variance_share({}, [])


def test_rows_where_every_term_is_nan_are_dropped():
    # the third completion is unscorable, so group 0 is just (1, 0) for a and (0, 0) for b
    shares = advantage_variance_share({"a": [1, 0, np.nan], "b": [0, 0, np.nan]}, [0, 0, 0])
    assert shares == {"a": 1.0, "b": 0.0}


# --------------------------------------------------------------------------- batch_diagnostics
def test_batch_diagnostics_keys_values_and_json():
    lengths = np.array([10, 20, 30, 12, 8, 4, 6])
    correct = np.array([1, 0, 0, 1, 1, 0, 0])
    groups = [0, 0, 0, 1, 1, 2, 2]  # group 0 varies; groups 1 and 2 are constant
    terms = {"correct": correct.astype(float), "short": -lengths / 10.0}
    d = batch_diagnostics(terms, correct, groups, lengths)
    assert d["diag/correct/auc"] == pytest.approx(1.0, abs=1e-12)
    assert d["diag/short/auc"] == pytest.approx(1.0, abs=1e-12)  # in group 0 the right completion is also the shortest
    assert d["diag/short/len_corr"] == pytest.approx(-1.0)
    assert "diag/correct/len_corr" not in d  # constant in groups 1 and 2: undefined, omitted
    assert d["diag/correct/adv_share"] + d["diag/short/adv_share"] == pytest.approx(1.0)
    assert (d["diag/auc_groups"], d["diag/len_corr_groups"]) == pytest.approx((1, 2), abs=1e-12)  # group counts
    assert d["diag/flat_outcome_frac"] == pytest.approx(2 / 3, abs=1e-12)  # groups 1 (all right) and 2 (all wrong)
    assert "diag/total/auc" in d and "diag/total/adv_share" not in d
    assert all(isinstance(v, float) and math.isfinite(v) for v in d.values())
    json.dumps(d, allow_nan=False)  # strict JSON


def test_batch_diagnostics_omits_undefined_and_reserves_total():
    # no group varies in correctness and no lengths: no auc and no len_corr keys at all
    d = batch_diagnostics({"r": [1.0, 0.0]}, [1, 1], [0, 0])
    assert d == {"diag/r/adv_share": 1.0, "diag/auc_groups": 0.0, "diag/flat_outcome_frac": 1.0}
    with pytest.raises(ValueError, match="may not be named 'total'"):
        batch_diagnostics({"total": [1.0]}, [1], [0])


def test_batch_diagnostics_total_uses_weights():
    # a = correctness, b = anti-correctness; with b weighted 2 the total ranks wrong above right
    correct = [1, 0]
    d = batch_diagnostics({"a": [1.0, 0.0], "b": [0.0, 1.0]}, correct, [0, 0], weights={"b": 2.0})
    assert (d["diag/a/auc"], d["diag/b/auc"], d["diag/total/auc"]) == pytest.approx((1.0, 0.0, 0.0), abs=1e-12)
    # a centred (.5, -.5), 2b centred (-1, 1), A = (-.5, .5), var .5: share_a = -.5/.5, share_b = 1/.5
    assert (d["diag/a/adv_share"], d["diag/b/adv_share"]) == pytest.approx((-1.0, 2.0))
