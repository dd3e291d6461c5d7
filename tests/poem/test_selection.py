"""Choosing the read setting and demonstration source with an honest estimate, on hand-built trial
matrices with known answers (no LM)."""

import itertools

import numpy as np
import pytest

from memrl.poem.matrix import TrialMatrix, build_matrix, loo_select
from memrl.poem.reward_memory import memory_from_matrix, read_memory
from memrl.poem.selection import (
    Candidate,
    Scorer,
    complexity,
    fold_of_inputs,
    fold_scores,
    nested_estimate,
    rule_best,
    select_candidate,
)
from memrl.poem.settings import Setting

GOOD, BAD = np.array([0.0, -2.0]), np.array([-2.0, 0.0])  # label scores when gold = 0


def _matrix(correct_order, vecs, sims, labels=(0, 1)):
    """n = 2 demonstrations, both orders tried on every input, gold 0; ``correct_order[i]`` is the
    one order that is right on input ``i``."""
    m = len(vecs)
    trials = [(i, o, GOOD if o == correct_order[i] else BAD) for i in range(m) for o in ((0, 1), (1, 0))]
    return build_matrix(trials, gold=[0] * m, sims=sims, labels=[list(labels)] * m, vecs=np.asarray(vecs, float),
                        keys=[f"input {i}" for i in range(m)])


def _unit(rows):
    rows = np.asarray(rows, dtype=float)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _noise(m=20, seed=0):
    """Random embeddings and, per input, a random right order: the neighbours say nothing."""
    rng = np.random.default_rng(seed)
    vecs = _unit(rng.normal(size=(m, 8)))
    right = [(1, 0) if rng.random() < 0.7 else (0, 1) for _ in range(m)]
    return _matrix(right, vecs, [[0.5, 0.1]] * m), right


def _clusters(per=5, seed=0):
    """Two tight clusters; order (0, 1) is right in one, (1, 0) in the other: reading the
    neighbours is right on every input, any single order on half of them."""
    rng = np.random.default_rng(seed)
    a = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.normal(size=(per, 3))
    b = np.array([0.0, 1.0, 0.0]) + 0.05 * rng.normal(size=(per, 3))
    vecs = _unit(np.concatenate([a, b]))
    return _matrix([(0, 1)] * per + [(1, 0)] * per, vecs, [[0.5, 0.1]] * (2 * per)), vecs


def test_a_setting_that_wins_by_noise_is_not_chosen_and_the_estimate_is_below_the_loo_max():
    mx, right = _noise()
    plain = loo_select(mx)  # leave-one-out's own pick: a k-NN read that fits these inputs' noise
    assert plain.setting.shrink < 1.0
    res = select_candidate({"fixed": mx})
    assert res.loo_best == pytest.approx(plain.accuracy, abs=1e-12)
    assert res.candidate != Candidate("fixed", plain.setting)
    # the simplest setting within one standard error: one global order (the majority order here)
    assert res.setting == Setting("identity", "correct", 1, "sum", 1.0) and res.source == "fixed"
    majority = max(np.mean([r == (0, 1) for r in right]), np.mean([r == (1, 0) for r in right]))
    assert res.loo_accuracy == pytest.approx(majority, abs=1e-12)
    assert res.loo_accuracy < res.loo_best  # gave up in-sample accuracy for simplicity
    assert res.estimate < res.loo_best  # and says honestly that the choosing does not generalise
    # the estimate is the mean over 3 seeded fold assignments, 5 folds each
    assert (res.folds, res.repeats, len(res.fold_choices)) == (5, 3, 15)
    singles = [select_candidate({"fixed": mx}, repeats=1, seed=s).estimate for s in range(3)]
    assert res.estimate == pytest.approx(np.mean(singles), abs=1e-12)
    # the plain best-of-grid rule is as optimistic in-sample, and its own nested estimate shows it
    best = select_candidate({"fixed": mx}, rule="best")
    assert best.candidate == Candidate("fixed", plain.setting) and best.estimate < best.loo_accuracy


def test_a_clearly_best_setting_is_chosen_with_an_estimate_that_holds():
    mx, _ = _clusters()
    res = select_candidate({"fixed": mx})
    # the neighbours' orders are right on every input, a global order on half
    assert res.loo_accuracy == pytest.approx(1.0, abs=1e-12) and res.loo_best == pytest.approx(1.0, abs=1e-12)
    assert res.setting.shrink < 1.0 and res.estimate == pytest.approx(1.0, abs=1e-12)
    assert all(c.setting.shrink < 1.0 for c in res.fold_choices)


def test_the_rule_chooses_the_demonstration_source_that_holds_out():
    mx_fixed, right = _noise()
    # the same inputs with per-query (kNN) demonstrations, candidates most similar first: the order
    # "most similar last" is right on every input
    knn = _matrix([(1, 0)] * len(right), mx_fixed.vecs, [[0.6, 0.2]] * len(right))
    res = select_candidate({"fixed": mx_fixed, "knn": knn})
    assert res.source == "knn" and res.estimate == pytest.approx(1.0, abs=1e-12)
    assert res.setting.encoding in ("label", "rank")  # no concrete-order codes across differing demonstrations
    assert res.source_estimates["knn"] == pytest.approx(1.0, abs=1e-12)
    assert res.source_estimates["fixed"] < res.source_estimates["knn"]
    assert res.candidates_scored == 540 + 360
    # and the other way round: fixed demonstrations whose neighbours' orders are right, kNN noise
    clusters, vecs = _clusters()
    rng = np.random.default_rng(3)
    noise = _matrix([(0, 1) if rng.random() < 0.5 else (1, 0) for _ in vecs], vecs, [[0.6, 0.2]] * len(vecs))
    res = select_candidate({"fixed": clusters, "knn": noise})
    assert res.source == "fixed" and res.estimate == pytest.approx(1.0, abs=1e-12)


def test_sources_must_hold_the_same_inputs():
    mx, _ = _clusters()
    other, _ = _noise(m=10)
    other.keys = [f"another input {i}" for i in range(10)]
    with pytest.raises(ValueError, match="different fit inputs"):
        select_candidate({"fixed": mx, "knn": other})
    with pytest.raises(ValueError, match="unknown demonstration source"):
        select_candidate({"retrieved": mx})
    with pytest.raises(ValueError, match="unknown selection rule"):
        select_candidate({"fixed": mx}, rule="median")
    one = _matrix([(0, 1)] * 2, _unit([[1.0, 0.0], [0.9, 0.1]]), [[0.5, 0.1]] * 2)
    one.keys = ["same", "same"]
    with pytest.raises(ValueError, match="at least 2 distinct"):
        select_candidate({"fixed": one})


def test_complexity_orders_global_first_and_copying_one_neighbour_last():
    memory = 30
    s = lambda k, shrink: Setting("identity", "correct", k, "sum", shrink)  # noqa: E731
    assert complexity(s(1, 1.0), memory) == pytest.approx(0.0, abs=1e-12)
    assert complexity(s(1, 0.0), memory) == pytest.approx(1.0, abs=1e-12)
    assert complexity(s("all", 0.0), memory) == pytest.approx(1 / 30, abs=1e-12)
    assert complexity(s(64, 0.0), memory) == pytest.approx(1 / 30, abs=1e-12)  # k beyond the memory = all
    assert complexity(s(4, 0.5), memory) == pytest.approx(0.125, abs=1e-12)
    order = sorted([s(1, 0.0), s(4, 0.5), s("all", 0.0), s(8, 1.0), s(2, 0.0)], key=lambda x: complexity(x, memory))
    assert order == [s(8, 1.0), s("all", 0.0), s(4, 0.5), s(2, 0.0), s(1, 0.0)]


def test_folds_keep_copies_of_an_input_together():
    keys = ["a", "b", "a", "c", "d", "b", "e"]
    fold = fold_of_inputs(keys, 3, seed=1)
    assert fold[0] == fold[2] and fold[1] == fold[5] and set(fold.tolist()) == {0, 1, 2}
    assert list(fold_of_inputs(keys, 3, seed=1)) == list(fold)  # seeded
    assert set(fold_of_inputs(keys, 50).tolist()) == set(range(5))  # at most one fold per distinct input


def _sub(mx: TrialMatrix, rows: np.ndarray) -> TrialMatrix:
    return TrialMatrix(orders=mx.orders, scores=mx.scores[rows], gold=mx.gold[rows], sims=mx.sims[rows],
                       labels=mx.labels[rows], vecs=mx.vecs[rows], keys=[k for k, r in zip(mx.keys, rows) if r])


def test_each_fold_is_the_whole_selection_rerun_without_the_held_out_inputs():
    # a random matrix (n = 3, two labels, 3 classes of gold, 4 of the 6 orders per input): each
    # fold's masked scores equal leave-one-out on the sub-matrix of the other folds, and a held-out
    # input is scored as select() would read a memory of those inputs only
    rng = np.random.default_rng(7)
    m, n = 12, 3
    all_orders = list(itertools.permutations(range(n)))
    trials = [(i, o, rng.normal(size=3)) for i in range(m)
              for o in [all_orders[j] for j in rng.choice(6, size=4, replace=False)]]
    mx = build_matrix(trials, gold=rng.integers(0, 3, size=m), sims=rng.uniform(size=(m, n)),
                      labels=[[0, 1, 0]] * m, vecs=_unit(rng.normal(size=(m, 5))), keys=[str(i) for i in range(m)])
    scorer = Scorer({"fixed": mx})
    (per_fold,) = fold_scores(scorer, folds=3, repeats=1, seed=2)
    correct, orders = mx.rewards("correct"), mx.order_tuples
    held = np.empty(m)
    for out, scores in per_fold:
        inner = _sub(mx, ~out)
        plain = loo_select(inner)
        j = rule_best(scores, ~out)
        assert scores.candidates[j] == Candidate("fixed", plain.setting)
        assert scores.accuracy(~out)[j] == pytest.approx(plain.accuracy, abs=1e-12)
        st = plain.setting
        memory, tables, prior, _ = memory_from_matrix(inner, st)
        for i in np.flatnonzero(out):
            perm = read_memory(memory, tables, prior, st, mx.vecs[i], mx.sims[i], mx.labels[i]).perm
            p = orders.index(perm)
            expected = correct[i, p] if mx.tried[i, p] else np.nanmean(correct[i])
            assert scores.correct[j, i] == pytest.approx(expected, abs=1e-12), (st, i)
            held[i] = expected
    estimate, chosen = nested_estimate([per_fold], "best")
    assert estimate == pytest.approx(held.mean(), abs=1e-12) and len(chosen) == 3
