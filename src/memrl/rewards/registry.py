"""Reward sets by method name: what ``memrl train --method ...`` and the demo use.

``r1``: outcome + format (DeepSeek-R1 style, the paper's "R1" baseline); ``cosine``: the cosine
length reward in place of plain correctness, plus format; ``memory-r`` / ``memory-r+``: R1 plus
the memory rewards.
"""

from __future__ import annotations

from typing import Any

from memrl.names import MEMORY_METHODS, METHODS
from memrl.rewards.baselines import CosineLengthReward
from memrl.rewards.format import (
    IntegerAnswerReward,
    ReasoningStepsReward,
    SoftFormatReward,
    StrictFormatReward,
    XMLCountReward,
)
from memrl.rewards.memory_rewards import MemoryRewardConfig, MemoryRPlus
from memrl.rewards.outcome import CorrectnessReward


def r1_rewards(style: str = "think", answer_column: str = "answer", checker: str = "numeric") -> list[Any]:
    """The R1 set. GSM8K (numeric): correctness, XML count, soft and strict format, integer
    answer. Math (math-verify): accuracy, XML count, reasoning steps (the paper's AI-MO set)."""
    correctness = CorrectnessReward(answer_column=answer_column, checker=checker)
    if checker == "math":
        return [correctness, XMLCountReward(style), ReasoningStepsReward(style)]
    return [correctness, XMLCountReward(style), SoftFormatReward(style), StrictFormatReward(style),
            IntegerAnswerReward(style)]


def build_rewards(
    method: str,
    *,
    style: str = "think",
    answer_column: str = "answer",
    checker: str = "numeric",
    max_completion_length: int = 200,
    memory_config: MemoryRewardConfig | None = None,
    encoder: Any = None,
) -> tuple[list[Any], MemoryRPlus | None]:
    """Reward functions for ``method`` and the :class:`MemoryRPlus` object (or None).

    The memory object is returned so the caller can save, restore and inspect its memories.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    rewards = r1_rewards(style, answer_column, checker)
    if method == "cosine":
        # correctness is folded into the cosine reward (its sign follows correctness)
        rewards[0] = CosineLengthReward(max_completion_length, answer_column=answer_column, checker=checker)
        return rewards, None
    if method in MEMORY_METHODS:
        config = memory_config or MemoryRewardConfig()
        config = MemoryRewardConfig.from_dict({**config.__dict__, "memory_explore": method == "memory-r+",
                                               "memory_style": style})
        memory = MemoryRPlus(config, encoder=encoder,
                             outcome=CorrectnessReward(answer_column=answer_column, checker=checker))
        return rewards + memory.reward_functions(), memory
    return rewards, None
