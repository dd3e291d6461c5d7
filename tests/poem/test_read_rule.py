"""The memory read rule on hand-built memories (no LM)."""

import numpy as np
import pytest

from memrl.memory import EpisodicMemory
from memrl.poem import PoemConfig, PoemOptimizer, Setting, best_action
from memrl.poem.rewards import compute_reward
from memrl.tasks.fewshot import Example, FewShotTask, PromptTemplate

A, B, C = (0, 1), (1, 0), (2, 2)


def test_sum_favours_actions_tried_by_more_neighbours_and_mean_does_not():
    tables = [{A: (1.0, 1), B: (0.5, 1)}, {B: (0.6, 1)}]
    assert best_action(tables, read="sum")[0] == B  # 1.1 > 1.0
    assert best_action(tables, read="mean")[0] == A  # 1.0 > 0.55
    _, scores = best_action(tables, read="sum")
    assert scores[B] == pytest.approx((1.1, 2)) and scores[A] == (1.0, 1)


def test_missing_action_contributes_nothing():
    # A is absent for the second neighbour: it is not counted as 0 reward in the mean
    _, scores = best_action([{A: (0.8, 3)}, {B: (0.2, 1)}], read="mean")
    assert scores[A] == pytest.approx((0.8, 1), abs=1e-12)


def test_ties_by_count_then_default_then_lexicographic():
    assert best_action([{A: (1.0, 1)}, {B: (0.5, 1)}, {B: (0.5, 1)}])[0] == B  # tie 1.0, B has 2 neighbours
    assert best_action([{A: (1.0, 1), B: (1.0, 1)}], default=B)[0] == B
    assert best_action([{B: (1.0, 1), A: (1.0, 1)}])[0] == A  # lexicographic


def test_empty_memory_gives_none():
    assert best_action([]) == (None, {})
    with pytest.raises(ValueError, match="read"):
        best_action([], read="max")


def test_rewards():
    scores = np.log(np.array([[0.7, 0.3], [0.2, 0.8]]))
    gold = np.array([0, 0])
    assert compute_reward("correct", scores, gold).tolist() == pytest.approx([1.0, 0.0], abs=1e-12)
    assert compute_reward("gold_prob", scores, gold) == pytest.approx([0.7, 0.2])
    assert compute_reward("margin", scores, gold) == pytest.approx([np.log(7 / 3), np.log(0.2 / 0.8)])
    with pytest.raises(ValueError, match="unknown reward"):
        compute_reward("f1", scores, gold)


def _hand_built(encoder, n=3):
    """An optimiser whose memory holds two inputs with hand-set reward tables."""
    demos = [Example("a wonderful film", 1), Example("a terrible film", 0), Example("the weather is nice", 1)]
    task = FewShotTask("toy", None, "hand", demos, [], [], ("0", "1"), PromptTemplate(), ("bad", "good"))
    opt = PoemOptimizer(task, scorer=None, encoder=encoder, config=PoemConfig(n_examples=n, k=1))
    opt.demos = demos
    opt._demo_vecs = encoder.encode([d.text for d in demos])
    keys = ["great movie, loved it", "stock markets fell sharply"]
    vecs = encoder.encode(keys)
    opt.memory = EpisodicMemory(vecs.shape[1], max_keys=4, max_values=1)
    opt.memory.add(keys, vecs, vecs)
    opt.tables = {keys[0]: {(0, 1, 2): (0.9, 1), (2, 1, 0): (0.1, 1)}, keys[1]: {(2, 1, 0): (0.7, 1)}}
    return opt


def test_select_reads_nearest_neighbour_and_decodes_with_query_ranks(encoder):
    opt = _hand_built(encoder)
    sel = opt.select("what a great film, I loved it")
    assert sel.neighbours == ["great movie, loved it"] and not sel.fallback
    assert sel.code == (0, 1, 2)  # best action of that neighbour: most similar example first
    sims = opt._demo_vecs @ encoder.encode(["what a great film, I loved it"])[0]
    assert [float(sims[p]) for p in sel.perm] == sorted(sims.tolist(), reverse=True)
    assert sel.examples == [opt.demos[p] for p in sel.perm]
    assert opt.select("shares dropped on the stock exchange").code == (2, 1, 0)


def test_select_falls_back_on_empty_memory(encoder):
    opt = _hand_built(encoder)
    opt.memory = EpisodicMemory(opt._demo_vecs.shape[1], max_keys=1, max_values=1)
    sel = opt.select("anything")
    assert sel.fallback and sel.code == (2, 1, 0) and sel.neighbours == []  # KATE: most similar last


def test_a_setting_names_its_wrong_field():
    with pytest.raises(ValueError, match=r"Setting\.encoding='bogus'; choose one of"):
        Setting("bogus", "correct", 1, "sum", 0.0)
    with pytest.raises(ValueError, match=r"Setting\.read='max'; choose one of \['sum', 'mean'\]"):
        Setting("rank", "correct", 1, "max", 0.0)
    with pytest.raises(ValueError, match=r"Setting\.k must be a positive integer or one of \['all'\]"):
        Setting("rank", "correct", 0, "sum", 0.0)
    with pytest.raises(ValueError, match=r"Setting\.shrink must be a number in \[0, 1\]"):
        Setting("rank", "correct", 1, "sum", 1.5)
