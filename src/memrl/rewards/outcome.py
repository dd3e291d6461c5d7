"""Outcome rewards: is the final answer right?

One implementation of answer extraction and checking, used by the rewards during training and by
``memrl eval`` (so a checkpoint is scored exactly as it was rewarded).

* GSM8K-style numeric answers: the text between ``<answer>`` tags, else the last number in the
  completion; commas, ``$`` and a trailing ``.0`` are normalised; compared numerically with the
  number after ``####`` in the gold solution (or a plain gold answer).
* LaTeX / boxed answers (MATH-500, AIME): ``math-verify``. Its timeouts use ``signal.alarm``,
  which only works on the main thread; elsewhere we run it without signals in a worker thread and
  enforce the timeout ourselves.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import re
import threading
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from memrl.names import CHECKERS
from memrl.rewards.common import check_lengths, completion_texts, require_column

logger = logging.getLogger(__name__)

_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?\s*\d[\d,]*(?:\.\d+)?|-?\.\d+")
_GSM8K_GOLD = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def extract_tagged_answer(text: str) -> str | None:
    """Content of the last ``<answer>…</answer>`` block (an unclosed last tag counts), stripped."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


def normalize_number(text: str | None) -> str | None:
    """Canonical string of the last number in ``text``: ``"$1,234.50"`` -> ``"1234.5"``,
    ``"18.0"`` -> ``"18"``; ``None`` when there is no number.

    >>> normalize_number("The total is $1,234.50.")
    '1234.5'
    >>> normalize_number("-7.0 apples")
    '-7'
    >>> normalize_number("0.0000000001"), normalize_number("0.10")
    ('1e-10', '0.1')
    """
    if text is None:
        return None
    found = _NUMBER.findall(text)
    if not found:
        return None
    raw = found[-1].replace("$", "").replace(",", "").replace(" ", "")
    try:
        value = Fraction(raw)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    text = repr(float(value))
    if "e" in text:  # 1e-10: stripping zeros would turn it into 1e-1
        return text
    return text.rstrip("0").rstrip(".")


def extract_answer(text: str) -> str | None:
    """The model's final numeric answer: inside ``<answer>`` tags if present, else the last number
    anywhere in the completion (lm-eval's "flexible" extraction)."""
    tagged = extract_tagged_answer(text)
    if tagged is not None:
        value = normalize_number(tagged)
        if value is not None:
            return value
    return normalize_number(text)


def parse_gold(answer: Any) -> str | None:
    """Gold number from a GSM8K solution (``... #### 72``) or a plain answer (``72``, ``"1,000"``)."""
    if answer is None:
        return None
    text = str(answer)
    m = _GSM8K_GOLD.search(text)
    return normalize_number(m.group(1) if m else text)


def numbers_equal(a: str | None, b: str | None, rel_tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return False
    try:
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=1e-9)
    except ValueError:
        return False


def is_correct_numeric(completion: str, gold: Any) -> bool:
    """GSM8K correctness of one completion text against one gold answer."""
    return numbers_equal(extract_answer(completion), parse_gold(gold))


# --------------------------------------------------------------------------- math-verify
_MV_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def _math_verify_imports():
    try:
        from math_verify import parse, verify
    except ImportError as exc:  # pragma: no cover - math-verify is a dependency
        raise ImportError("math answer checking needs math-verify: pip install math-verify") from exc
    return parse, verify


def _verify_no_signal(gold: str, completion: str) -> bool:
    parse, verify = _math_verify_imports()
    gold_parsed = parse(_ensure_latex(gold), parsing_timeout=None)
    pred_parsed = parse(completion, parsing_timeout=None)
    if not gold_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _ensure_latex(gold: str) -> str:
    # math-verify's LaTeX extractor anchors on $...$ or \boxed{}; a bare "\frac{1}{2}" or "5"
    # from an answer column parses reliably once wrapped.
    gold = str(gold).strip()
    if "$" in gold or "\\boxed" in gold:
        return gold
    return f"${gold}$"


def is_correct_math(completion: str, gold: Any, timeout_s: float = 5.0) -> bool:
    """Mathematical equivalence of the completion's final answer and ``gold`` via math-verify.

    The answer inside ``<answer>`` tags is checked when present (else the whole completion, where
    math-verify finds ``\\boxed{}`` or the last expression). Safe on any thread: on a non-main
    thread the check runs without ``signal.alarm`` and a timeout counts as wrong.
    """
    global _MV_POOL
    tagged = extract_tagged_answer(completion)
    target = tagged if tagged else completion
    if tagged and "$" not in tagged and "\\boxed" not in tagged:
        target = f"${tagged}$"
    if threading.current_thread() is threading.main_thread():
        parse, verify = _math_verify_imports()
        gold_parsed = parse(_ensure_latex(str(gold)), parsing_timeout=int(max(1, timeout_s)))
        if not gold_parsed:
            return False
        pred = parse(target, parsing_timeout=int(max(1, timeout_s)))
        return bool(verify(gold_parsed, pred, timeout_seconds=int(max(1, timeout_s))))
    if _MV_POOL is None:
        _MV_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="math-verify")
    future = _MV_POOL.submit(_verify_no_signal, str(gold), target)
    try:
        return future.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        # A thread cannot be stopped: the hung check keeps its worker. Later checks get a fresh
        # pool, or two hung checks would leave no worker and every later answer would time out.
        logger.warning("math-verify timed out after %.1fs; scoring as wrong", timeout_s)
        _MV_POOL.shutdown(wait=False, cancel_futures=True)
        _MV_POOL = None
        return False


# --------------------------------------------------------------------------- TRL reward callables
class CorrectnessReward:
    """Outcome reward: ``correct_value`` for a right final answer, ``wrong_value`` otherwise.

    Args:
        answer_column: dataset column with the gold answer (GSM8K solution with ``####``, or a
            plain answer), forwarded by TRL as a keyword.
        checker: ``"numeric"`` (GSM8K) or ``"math"`` (math-verify, LaTeX/boxed answers).

    Example:
        >>> r = CorrectnessReward()
        >>> r(prompts=["q"], completions=["<answer>72</answer>"], answer=["... #### 72"])
        [1.0]
    """

    def __init__(
        self,
        answer_column: str = "answer",
        checker: str = "numeric",
        correct_value: float = 1.0,
        wrong_value: float = 0.0,
    ) -> None:
        if checker not in CHECKERS:
            raise ValueError(f"unknown checker {checker!r}; choose 'numeric' or 'math'")
        self.answer_column = answer_column
        self.checker = checker
        self.correct_value = correct_value
        self.wrong_value = wrong_value
        self.__name__ = "correctness_reward" if checker == "numeric" else "math_accuracy_reward"

    def correct(self, texts: Sequence[str], golds: Sequence[Any]) -> list[bool]:
        check = is_correct_numeric if self.checker == "numeric" else is_correct_math
        return [check(t, g) for t, g in zip(texts, golds)]

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float]:
        texts = completion_texts(completions)
        golds = require_column(kwargs, self.answer_column, len(texts), self.__name__)
        if prompts is not None:
            check_lengths(len(texts), prompts=prompts)
        return [self.correct_value if ok else self.wrong_value for ok in self.correct(texts, golds)]
