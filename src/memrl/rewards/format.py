"""Format rewards of the "R1" reward set (after DeepSeek-R1 and the Memory-R reference code).

Two answer styles are supported: ``think`` (``<think>…</think><answer>…</answer>``, the paper's
prompt) and ``reasoning`` (``<reasoning>…</reasoning><answer>…</answer>``, the reference code's).
Every regex is compiled with DOTALL: the reference code's were not, so they almost never fired on
multi-line reasoning (spec, "what the reference code gets wrong" #7).
"""

from __future__ import annotations

import re

from memrl.names import PROMPT_STYLES as STYLES
from memrl.rewards.common import check_lengths, completion_texts
from memrl.rewards.outcome import extract_tagged_answer


def _tag(style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"unknown format style {style!r}; choose one of {STYLES}")
    return style


def strict_format_ok(text: str, style: str = "think") -> bool:
    """Exactly ``<tag>\\n…\\n</tag>\\n<answer>\\n…\\n</answer>`` and nothing else (a final newline
    is allowed)."""
    t = _tag(style)
    pattern = rf"^<{t}>\n.*?\n</{t}>\n<answer>\n.*?\n</answer>\n?$"
    return re.match(pattern, text, re.DOTALL) is not None


def soft_format_ok(text: str, style: str = "think") -> bool:
    """A ``<tag>…</tag>`` block followed (after optional whitespace) by ``<answer>…</answer>``,
    anywhere in the text."""
    t = _tag(style)
    return re.search(rf"<{t}>.*?</{t}>\s*<answer>.*?</answer>", text, re.DOTALL) is not None


def xml_count_score(text: str, style: str = "think") -> float:
    """0.125 for each of the four tags that appears exactly once, minus 0.001 per character of
    trailing text after ``</answer>`` (discourages rambling after the answer).

    >>> xml_count_score("<think>\\nx\\n</think>\\n<answer>\\n3\\n</answer>")
    0.5
    """
    t = _tag(style)
    score = 0.0
    for tag in (f"<{t}>", f"</{t}>", "<answer>", "</answer>"):
        if text.count(tag) == 1:
            score += 0.125
    if text.count("</answer>") == 1:
        trailing = text.split("</answer>", 1)[1].strip()
        score -= 0.001 * len(trailing)
    return score


def is_integer_answer(text: str) -> bool:
    """The tagged answer is a bare (optionally negative) integer."""
    answer = extract_tagged_answer(text)
    return answer is not None and re.fullmatch(r"-?\d+", answer.strip()) is not None


_STEP_MARKERS = re.compile(r"(Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)", re.MULTILINE)


def count_reasoning_steps(text: str) -> int:
    """Number of step markers ("Step 1:", "1.", bullets, "First,", ...)."""
    return len(_STEP_MARKERS.findall(text))


class _FormatReward:
    """Base for style-parametrised format rewards; a callable class (not a closure) so the
    reward stays picklable for multi-process training."""

    base_name = "format_reward"

    def __init__(self, style: str = "think", value: float = 0.5) -> None:
        self.style = _tag(style)
        self.value = value
        self.__name__ = self.base_name

    def score(self, text: str) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float]:
        texts = completion_texts(completions)
        if prompts is not None:
            check_lengths(len(texts), prompts=prompts)
        return [float(self.score(t)) for t in texts]


class StrictFormatReward(_FormatReward):
    """``value`` (0.5) when the completion is exactly in the style's strict layout."""

    base_name = "strict_format_reward"

    def score(self, text: str) -> float:
        return self.value if strict_format_ok(text, self.style) else 0.0


class SoftFormatReward(_FormatReward):
    """``value`` (0.5) when a reasoning block is followed by an answer block anywhere."""

    base_name = "soft_format_reward"

    def score(self, text: str) -> float:
        return self.value if soft_format_ok(text, self.style) else 0.0


class XMLCountReward(_FormatReward):
    """Partial credit per well-placed tag (see :func:`xml_count_score`)."""

    base_name = "xmlcount_reward"

    def score(self, text: str) -> float:
        return xml_count_score(text, self.style)


class IntegerAnswerReward(_FormatReward):
    """``value`` (0.5) when the tagged answer is a bare integer (GSM8K answers are integers)."""

    base_name = "int_answer_reward"

    def score(self, text: str) -> float:
        return self.value if is_integer_answer(text) else 0.0


class ReasoningStepsReward(_FormatReward):
    """``min(1, steps / 3)`` over step markers (open-r1's reasoning-steps reward; AI-MO set)."""

    base_name = "reasoning_steps_reward"

    def __init__(self, style: str = "think", value: float = 1.0, target_steps: int = 3) -> None:
        super().__init__(style, value)
        self.target_steps = target_steps

    def score(self, text: str) -> float:
        return self.value * min(1.0, count_reasoning_steps(text) / self.target_steps)
