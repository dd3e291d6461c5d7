"""Outcome, format and cosine-length rewards: hand-computed cases, TRL calling conventions."""

from __future__ import annotations

import math
import pickle
import threading

import pytest

from memrl.rewards import (
    CorrectnessReward,
    CosineLengthReward,
    IntegerAnswerReward,
    ReasoningStepsReward,
    SoftFormatReward,
    StrictFormatReward,
    XMLCountReward,
    cosine_length_value,
    extract_answer,
    is_correct_math,
    parse_gold,
    r1_rewards,
)

THINK_OK = "<think>\n2 apples plus 3 apples\nmakes 5\n</think>\n<answer>\n5\n</answer>\n"
REASONING_OK = "<reasoning>\nline one\nline two\n</reasoning>\n<answer>\n5\n</answer>"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>72</answer>", "72"),  # tagged
        ("<answer> $1,234.00 </answer>", "1234"),  # $ , and .00 normalised
        ("so 3 then 4 then 18.0", "18"),  # no tags: last number, trailing .0 dropped
        ("<answer>seventy</answer> but 12", "12"),  # tag without a number: fall back to last number
        ("<answer>-7</answer>", "-7"),  # negative
        ("<answer>2.50</answer>", "2.5"),  # decimals canonical
        ("no digits here", None),
        ("", None),  # empty completion: no answer, not an error
        ("<answer>\n41\n", "41"),  # unclosed final tag still counts
        ("<answer>0.0000000001</answer>", "1e-10"),  # tiny decimal: not cut to 1e-1 (= 0.1)
        ("<answer>0.1</answer>", "0.1"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "gold, expected",
    [
        ("Ada packed 30/2 = <<30/2=15>>15 boxes.\n#### 45", "45"),  # a GSM8K-style solution
        ("#### 1,000", "1000"),
        ("72", "72"),  # plain answer column
        (5, "5"),
        (None, None),
    ],
)
def test_parse_gold(gold, expected):
    assert parse_gold(gold) == expected


def test_correctness_reward_plain_and_conversational():
    r = CorrectnessReward()
    golds = ["... #### 72", "#### 5", "3"]
    plain = ["<answer>72</answer>", "I think 6", "<answer>3.0</answer>"]
    conv = [[{"role": "assistant", "content": c}] for c in plain]
    assert r(prompts=["a", "b", "c"], completions=plain, answer=golds) == pytest.approx([1.0, 0.0, 1.0], abs=1e-12)
    assert r(prompts=[[{"role": "user", "content": "q"}]] * 3, completions=conv, answer=golds) == pytest.approx([1.0, 0.0, 1.0], abs=1e-12)
    # extra TRL keywords are ignored
    assert r(completions=plain, answer=golds, trainer_state=None, log_metric=print, foo=[1, 2, 3]) == pytest.approx([1.0, 0.0, 1.0], abs=1e-12)
    assert r.__name__ == "correctness_reward"


def test_correctness_reward_bad_input_is_clear():
    r = CorrectnessReward()
    with pytest.raises(ValueError, match="needs the dataset column 'answer'.*question"):
        r(completions=["1"], question=["q"])
    with pytest.raises(ValueError, match="mismatched lengths: answer=1"):
        r(completions=["1", "2"], answer=["1"])
    with pytest.raises(TypeError, match=r"completions\[1\] must be a string"):
        r(completions=["1", None], answer=["1", "2"])
    with pytest.raises(ValueError, match="prompts=1"):
        r(prompts=["p"], completions=["1", "2"], answer=["1", "2"])
    assert r(completions=[""], answer=["1"]) == pytest.approx([0.0], abs=1e-12)  # empty output is scored, not an error


def test_math_correctness_on_and_off_main_thread():
    assert is_correct_math("so the answer is \\boxed{\\frac{1}{2}}", "\\frac{1}{2}")
    assert is_correct_math("<answer>0.5</answer>", "\\frac{1}{2}")
    assert not is_correct_math("\\boxed{3}", "4")
    results = []
    t = threading.Thread(target=lambda: results.append(is_correct_math("\\boxed{12}", "12")))
    t.start()
    t.join()
    assert results == [True]  # no signal.alarm error off the main thread
    r = CorrectnessReward(checker="math")
    assert r.__name__ == "math_accuracy_reward"
    assert r(completions=["\\boxed{2\\pi}", "\\boxed{6}"], answer=["2\\pi", "7"]) == pytest.approx([1.0, 0.0], abs=1e-12)


def test_hung_math_checks_do_not_starve_later_ones(monkeypatch):
    import time

    from memrl.rewards import outcome

    real = outcome._verify_no_signal

    def slow_on_hang(gold, target):  # stands in for an input that makes math-verify hang
        if gold == "hang":
            time.sleep(6.0)
        return real(gold, target)

    outcome._math_verify_imports()  # import cost is not what this test measures
    monkeypatch.setattr(outcome, "_verify_no_signal", slow_on_hang)
    results = []

    def off_main_thread():
        results.append(is_correct_math("\\boxed{1}", "hang", timeout_s=0.2))
        results.append(is_correct_math("\\boxed{1}", "hang", timeout_s=0.2))
        # both pool workers may still be stuck; this check must still get one
        results.append(is_correct_math("\\boxed{12}", "12", timeout_s=3.0))

    t = threading.Thread(target=off_main_thread)
    t.start()
    t.join()
    assert results == [False, False, True]


@pytest.mark.parametrize(
    "reward, text, expected",
    [
        (StrictFormatReward("think"), THINK_OK, 0.5),  # exact layout, multi-line reasoning (DOTALL)
        (StrictFormatReward("think"), "x" + THINK_OK, 0.0),  # leading text breaks strict
        (StrictFormatReward("reasoning"), REASONING_OK, 0.5),
        (StrictFormatReward("reasoning"), THINK_OK, 0.0),  # wrong style
        (SoftFormatReward("think"), "Sure! <think>a\nb</think> <answer>5</answer> bye", 0.5),
        (SoftFormatReward("think"), "<answer>5</answer><think>late</think>", 0.0),  # wrong order
        (XMLCountReward("think"), THINK_OK, 0.5),  # four tags once each, no trailing text
        (XMLCountReward("think"), "<think>a</think><answer>5</answer> trailing", 0.5 - 0.008),
        (XMLCountReward("think"), "<answer>5</answer><answer>6</answer>", 0.0),  # doubled tags earn nothing
        (IntegerAnswerReward(), "<answer>42</answer>", 0.5),
        (IntegerAnswerReward(), "<answer>4.2</answer>", 0.0),
        (IntegerAnswerReward(), "42", 0.0),  # no tags
        (ReasoningStepsReward(), "Step 1: a\nStep 2: b", 2 / 3),
        (ReasoningStepsReward(), "First, x. Second, y. Next, z. Finally, w.", 1.0),  # capped at 1
    ],
)
def test_format_rewards(reward, text, expected):
    assert reward(prompts=["q"], completions=[text]) == [pytest.approx(expected)]


def test_r1_set_names_and_pickling():
    rewards = r1_rewards("think")
    names = [r.__name__ for r in rewards]
    assert names == ["correctness_reward", "xmlcount_reward", "soft_format_reward", "strict_format_reward",
                     "int_answer_reward"]
    for r in rewards:
        clone = pickle.loads(pickle.dumps(r))
        assert clone.__name__ == r.__name__
        assert clone(completions=[THINK_OK], answer=["5"]) == r(completions=[THINK_OK], answer=["5"])
    assert [r.__name__ for r in r1_rewards(checker="math")] == [
        "math_accuracy_reward", "xmlcount_reward", "reasoning_steps_reward"]


def test_cosine_length_formula_by_hand():
    # p = 0.25: cos(pi/4) = 0.7071; correct: 0.5 + 0.25 * 1.7071 = 0.92678
    assert cosine_length_value(50, 200, True) == pytest.approx(0.5 + 0.25 * (1 + math.cos(math.pi / 4)))
    assert cosine_length_value(200, 200, True) == pytest.approx(0.5)
    assert cosine_length_value(400, 200, True) == pytest.approx(0.5)  # beyond the cap = at the cap
    assert cosine_length_value(0, 200, False) == pytest.approx(-1.0)
    assert cosine_length_value(200, 200, False) == pytest.approx(-0.5)
    # monotone in length: shorter correct is better, longer wrong is better
    lengths = range(0, 201, 10)
    correct = [cosine_length_value(n, 200, True) for n in lengths]
    wrong = [cosine_length_value(n, 200, False) for n in lengths]
    assert correct == sorted(correct, reverse=True) and wrong == sorted(wrong)


def test_cosine_length_reward_counts_tokens_not_characters():
    r = CosineLengthReward(max_len=10)
    # same text, different token counts: only completion_ids decide the length
    out = r(completions=["<answer>5</answer>"] * 2, answer=["5", "5"], completion_ids=[[1] * 2, [1] * 8])
    assert out == [pytest.approx(cosine_length_value(2, 10, True)), pytest.approx(cosine_length_value(8, 10, True))]
    with pytest.raises(ValueError, match="completion_ids"):
        r(completions=["5"], answer=["5"])
    assert pickle.loads(pickle.dumps(r)).__name__ == "cosine_length_reward"


@pytest.mark.parametrize("key", ["reasoning_content", "thinking"])
def test_format_rewards_read_reasoning_that_trl_split_off_the_message(key):
    """TRL's response parser moves ``<think>`` ... ``</think>`` into a message field of its own; the
    in-process rewards must score the completion the model wrote, not its content alone."""
    split = [{"role": "assistant", key: "2 apples plus 3 apples\nmakes 5", "content": "<answer>\n5\n</answer>\n"}]
    as_written = [{"role": "assistant", "content": THINK_OK}]
    for reward in (StrictFormatReward(), SoftFormatReward(), XMLCountReward()):
        got, want = reward(completions=[split]), reward(completions=[as_written])
        assert got == pytest.approx(want, abs=1e-12) and want[0] > 0, type(reward).__name__
    only_reasoning = [{"role": "assistant", key: "thinking", "content": None}]  # nothing after the reasoning
    assert StrictFormatReward()(completions=[only_reasoning]) == pytest.approx([0.0], abs=1e-12)
