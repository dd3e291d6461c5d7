"""Leave-one-out choice of POEM's read setting, on hand-built trial matrices (no LM)."""

import itertools

import numpy as np
import pytest

from memrl.poem.matrix import (
    LooResult,
    TrialMatrix,
    build_matrix,
    code_matrix,
    decode,
    encode,
    fallback_perm,
    loo_scores,
    loo_select,
    nested_selection_accuracy,
)
from memrl.poem.reading import best_action, prior_means
from memrl.poem.settings import Setting

GOOD, BAD = np.array([0.0, -2.0]), np.array([-2.0, 0.0])  # label scores when gold = 0


def _matrix(correct_order, vecs, sims):
    """n = 2 fixed demonstrations (labels 0, 1), both orders tried on every input, gold 0;
    ``correct_order[i]`` is the one order that is right on input ``i``."""
    trials = [(i, o, GOOD if o == correct_order[i] else BAD)
              for i in range(len(vecs)) for o in ((0, 1), (1, 0))]
    m = len(vecs)
    return build_matrix(trials, gold=[0] * m, sims=sims, labels=[[0, 1]] * m, vecs=np.asarray(vecs, float),
                        keys=[f"input {i}" for i in range(m)])


def _row(result_table, **setting):
    want = Setting(**setting).to_dict()
    (row,) = [r for r in result_table if r["setting"] == want]
    return row


def test_one_order_always_correct_is_chosen_and_rank_codes_cannot_express_it():
    # inputs alternate which demonstration is more similar, so the always-correct concrete order
    # (1, 0) is rank code (1, 0) on even inputs and (0, 1) on odd ones
    m = 4
    sims = [[0.6, 0.2] if i % 2 == 0 else [0.2, 0.6] for i in range(m)]
    # each input's nearest other input has the other parity
    vecs = np.array([[1.0, 0.0], [0.95, 0.31], [0.0, 1.0], [0.31, 0.95]])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    mx = _matrix([(1, 0)] * m, vecs, sims)
    res = loo_select(mx)
    assert res.accuracy == pytest.approx(1.0, abs=1e-12) and res.coverage == pytest.approx(1.0, abs=1e-12) and res.n_inputs == m
    assert res.setting == Setting("identity", "correct", 1, "sum", 0.0)  # first of the ties in grid order
    assert res.gold_prob == pytest.approx(1 / (1 + np.exp(-2)))
    # exact scores of other settings
    rank_k1 = _row(res.table, encoding="rank", reward="correct", k=1, read="sum", shrink=0.0)
    assert rank_k1["accuracy"] == pytest.approx(0.0, abs=1e-12)  # the neighbour's good code realises the bad order here
    assert _row(res.table, encoding="identity", reward="margin", k="all", read="mean", shrink=1.0)["accuracy"] == pytest.approx(1.0, abs=1e-12)
    assert _row(res.table, encoding="label", reward="gold_prob", k=2, read="sum", shrink=0.5)["accuracy"] == pytest.approx(1.0, abs=1e-12)


def test_neighbours_matter_so_knn_beats_the_global_order():
    # two clusters of 3 inputs; order (0, 1) is right in cluster A, (1, 0) in cluster B
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.normal(size=(3, 3))
    b = np.array([0.0, 1.0, 0.0]) + 0.05 * rng.normal(size=(3, 3))
    vecs = np.concatenate([a, b])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    mx = _matrix([(0, 1)] * 3 + [(1, 0)] * 3, vecs, [[0.5, 0.1]] * 6)
    res = loo_select(mx)
    assert res.setting == Setting("identity", "correct", 1, "sum", 0.0) and res.accuracy == pytest.approx(1.0, abs=1e-12)
    kw = {"encoding": "identity", "reward": "correct", "read": "sum"}
    assert _row(res.table, k=2, shrink=0.0, **kw)["accuracy"] == pytest.approx(1.0, abs=1e-12)  # both other members of its cluster
    # all 5 others: 3 of the other cluster outvote 2 of its own -> always wrong
    assert _row(res.table, k="all", shrink=0.0, **kw)["accuracy"] == pytest.approx(0.0, abs=1e-12)
    assert _row(res.table, k=16, shrink=0.0, **kw)["accuracy"] == pytest.approx(0.0, abs=1e-12)  # k beyond the memory = all
    # the global order (shrink 1) is the other cluster's order for every held-out input
    assert _row(res.table, k=1, shrink=1.0, **kw)["accuracy"] == pytest.approx(0.0, abs=1e-12)
    # shrink 0.5 with k = 2 (sum): local 2 vs 0, prior x 2 neighbours: 2/5*2 vs 3/5*2 -> local wins
    assert _row(res.table, k=2, shrink=0.5, **kw)["accuracy"] == pytest.approx(1.0, abs=1e-12)
    assert _row(res.table, k=2, shrink=0.75, **kw)["accuracy"] == pytest.approx(1.0, abs=1e-12)  # 0.5 + 0.6 = 1.1 vs 0.9
    assert res.table[0]["accuracy"] == pytest.approx(1.0, abs=1e-12) and res.table[-1]["accuracy"] == pytest.approx(0.0, abs=1e-12)


def test_nested_selection_scores_the_choice_on_inputs_it_was_not_chosen_on():
    # one setting right everywhere: choosing it generalises
    assert nested_selection_accuracy(np.array([[1.0] * 6, [0.0] * 6])) == pytest.approx(1.0, abs=1e-12)
    # each setting right on one input by luck: the best row is 1/4 in-sample, 0 held out
    assert nested_selection_accuracy(np.eye(4), folds=4) == pytest.approx(0.0, abs=1e-12)
    # a real gap survives: setting 1 is right on 9 of 10 inputs, setting 0 on 5
    table = np.array([[1, 0] * 5, [1] * 9 + [0]], dtype=float)
    assert nested_selection_accuracy(table, folds=5) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="inputs >= 2"):
        nested_selection_accuracy(np.ones((3, 1)))


def test_guard_falls_back_to_the_global_order_when_the_chosen_setting_fits_noise():
    # 20 inputs with random embeddings: the neighbours say nothing about which of the 2 orders is
    # right; over 540 settings one k-NN read still beats the global order in-sample
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(20, 8))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    right = [(1, 0) if rng.random() < 0.7 else (0, 1) for _ in range(20)]
    mx = _matrix(right, vecs, [[0.5, 0.1]] * 20)
    plain, guarded = loo_select(mx), loo_select(mx, guard=True)
    glob = Setting("identity", "correct", 1, "sum", 1.0)
    glob_acc = _row(plain.table, **glob.to_dict())["accuracy"]
    assert plain.setting.shrink == 0.0 and plain.accuracy > glob_acc and plain.guard is None
    g = guarded.guard
    assert g["best_setting"] == plain.setting.to_dict() and g["best_accuracy"] == plain.accuracy
    assert g["global_accuracy"] == glob_acc and g["nested_accuracy"] < glob_acc and not g["kept"]
    assert guarded.setting == glob and guarded.accuracy == glob_acc
    assert guarded.summary()["guard"] == g and "guard" not in plain.summary()
    assert guarded.per_input.shape == (len(guarded.table), 20)
    assert guarded.per_input.mean(axis=1) == pytest.approx([r["accuracy"] for r in guarded.table])


def test_guard_reads_a_scored_selection_without_scoring_again_and_is_idempotent():
    # the fit's own selection is guarded afterwards (the poem_guarded row): the same answer as
    # choosing with the guard from the start, the plain result untouched, a second guard a no-op
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(20, 8))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    mx = _matrix([(1, 0) if rng.random() < 0.7 else (0, 1) for _ in range(20)], vecs, [[0.5, 0.1]] * 20)
    plain, fresh = loo_select(mx), loo_select(mx, guard=True)
    guarded = plain.with_guard()
    assert (guarded.setting, guarded.accuracy, guarded.guard) == (fresh.setting, fresh.accuracy, fresh.guard)
    assert plain.guard is None and plain.setting != guarded.setting  # this matrix falls back (test above)
    again = guarded.with_guard()
    assert (again.setting, again.accuracy, again.guard) == (guarded.setting, guarded.accuracy, guarded.guard)
    # a selection restored from a saved summary has no per-input table to guard
    bare = LooResult(plain.setting, plain.accuracy, plain.gold_prob, plain.coverage, plain.n_inputs, plain.table)
    with pytest.raises(ValueError, match="per-input leave-one-out table"):
        bare.with_guard()


def test_guard_keeps_a_setting_whose_gain_holds_out():
    rng = np.random.default_rng(0)  # the two clusters above, 5 inputs each
    a = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.normal(size=(5, 3))
    b = np.array([0.0, 1.0, 0.0]) + 0.05 * rng.normal(size=(5, 3))
    vecs = np.concatenate([a, b])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    res = loo_select(_matrix([(0, 1)] * 5 + [(1, 0)] * 5, vecs, [[0.5, 0.1]] * 10), guard=True)
    assert res.guard["kept"] and res.guard["nested_accuracy"] == pytest.approx(1.0, abs=1e-12) and res.guard["global_accuracy"] == pytest.approx(0.0, abs=1e-12)
    assert res.setting == Setting("identity", "correct", 1, "sum", 0.0)
    with pytest.raises(ValueError, match="global-order setting"):
        loo_select(_matrix([(0, 1)] * 5 + [(1, 0)] * 5, vecs, [[0.5, 0.1]] * 10), shrinks=(0.0,), guard=True)


def _slow_loo(mx, encoding, reward, k, read, shrink):
    """Leave-one-out by the optimiser's own read rule (best_action on per-input tables)."""
    orders = [tuple(int(x) for x in o) for o in mx.orders]
    rew, cor = mx.rewards(reward), mx.rewards("correct")
    m = len(mx.keys)
    tables = [{encode(encoding, orders[p], mx.sims[i], mx.labels[i]): (float(rew[i, p]), 1)
               for p in range(len(orders)) if mx.tried[i, p]} for i in range(m)]
    sim = mx.vecs @ mx.vecs.T
    accs = []
    for i in range(m):
        others = [j for j in np.argsort(-sim[i], kind="stable") if j != i]
        nb = others if k == "all" else others[:k]
        prior = prior_means({str(j): tables[j] for j in range(m) if j != i})
        default = encode(encoding, fallback_perm(mx.sims[i]), mx.sims[i], mx.labels[i])

        def ok(code, i=i):
            try:
                decode(encoding, code, mx.sims[i], mx.labels[i])
                return True
            except ValueError:
                return False

        code, _ = best_action([tables[j] for j in nb], read=read, default=default, prior=prior, shrink=shrink,
                              allowed=ok)
        perm = decode(encoding, code if code is not None else default, mx.sims[i], mx.labels[i])
        p = orders.index(perm) if perm in orders else -1
        accs.append(cor[i, p] if p >= 0 and mx.tried[i, p] else np.nanmean(cor[i]))
    return float(np.mean(accs))


@pytest.mark.parametrize("encoding", ["rank", "label", "identity"])
def test_vectorised_loo_agrees_with_the_optimisers_read_rule(encoding):
    # a random matrix: n = 3 with two labels, 3 classes of gold, a sample of orders per input
    rng = np.random.default_rng(7)
    m, n = 9, 3
    all_orders = list(itertools.permutations(range(n)))
    trials = [(i, o, rng.normal(size=3)) for i in range(m)
              for o in [all_orders[j] for j in rng.choice(6, size=4, replace=False)]]
    vecs = rng.normal(size=(m, 5))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    mx = build_matrix(trials, gold=rng.integers(0, 3, size=m), sims=rng.uniform(size=(m, n)),
                      labels=[[0, 1, 0]] * m, vecs=vecs, keys=[str(i) for i in range(m)])
    cm = code_matrix(mx, encoding)
    for reward in ("correct", "gold_prob", "margin"):
        rows = loo_scores(mx, encoding, reward, cm=cm)
        for row in rows:
            s = row["setting"]
            assert row["accuracy"] == pytest.approx(_slow_loo(mx, encoding, reward, s.k, s.read, s.shrink)), s


def test_loo_needs_two_inputs_and_a_consistent_matrix():
    mx = _matrix([(0, 1)], np.array([[1.0, 0.0]]), [[0.5, 0.1]])
    with pytest.raises(ValueError, match="at least 2"):
        loo_scores(mx, "identity", "correct")
    with pytest.raises(ValueError, match="inconsistent trial matrix"):
        TrialMatrix(orders=mx.orders, scores=mx.scores, gold=np.zeros(2, int), sims=mx.sims, labels=mx.labels,
                    vecs=mx.vecs, keys=mx.keys)
