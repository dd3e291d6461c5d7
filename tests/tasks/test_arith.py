"""The procedural arith task: levels, determinism, disjoint splits, answers that check out."""

from __future__ import annotations

import random
import re

import pytest

from memrl.rewards.outcome import is_correct_numeric, parse_gold
from memrl.tasks.arith import LEVELS, generate_problems, make_problem, split_of


@pytest.mark.parametrize("level", LEVELS)
def test_levels_are_deterministic_and_distinct(level):
    a = generate_problems(50, level=level, seed=3)
    assert a == generate_problems(50, level=level, seed=3)  # same seed, same list
    assert a != generate_problems(50, level=level, seed=4)
    assert len({p["question"] for p in a}) == 50
    assert all(re.fullmatch(r"-?\d+", p["answer"]) for p in a)


def test_train_and_test_never_share_a_question():
    train = {p["question"] for p in generate_problems(500, level=1, seed=0, split="train")}
    test = {p["question"] for p in generate_problems(200, level=1, seed=0, split="test")}
    assert not train & test
    assert all(split_of(q) == "test" for q in test)


def test_level1_answer_is_the_sum():
    for p in generate_problems(20, level=1):
        a, b = map(int, re.findall(r"\d+", p["question"]))
        assert int(p["answer"]) == a + b


def test_level4_is_multistep_and_non_negative():
    rng = random.Random(0)
    for _ in range(200):
        p = make_problem(rng, 4)
        assert "boxes" in p["question"] and int(p["answer"]) >= 1


def test_answers_work_with_the_shared_checker():
    p = generate_problems(1, level=2)[0]
    # the reward code must accept the arith gold as is
    assert parse_gold(p["answer"]) == p["answer"]
    assert is_correct_numeric(f"<answer>\n{p['answer']}\n</answer>", p["answer"])


@pytest.mark.parametrize("kwargs", [dict(level=5), dict(split="dev"), dict(n=0)])
def test_bad_arguments_raise(kwargs):
    args = dict(n=5, level=1, split="train") | kwargs
    with pytest.raises(ValueError):
        generate_problems(**args)
