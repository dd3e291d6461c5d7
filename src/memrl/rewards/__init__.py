"""TRL-compatible reward functions: outcome, format, baselines and Memory-R / Memory-R+.

Every reward is a callable ``(prompts, completions, **kwargs) -> list[float]`` with a stable
``__name__`` (TRL logs it as ``rewards/<name>/mean``), accepts plain-text and conversational
inputs, ignores extra keywords and pickles.
"""

from memrl.names import METHODS
from memrl.rewards.baselines import CosineLengthReward, cosine_length_value
from memrl.rewards.exploration import OutcomeBatchReward, OutcomeExplorationConfig, OutcomeUCBReward
from memrl.rewards.format import (
    IntegerAnswerReward,
    ReasoningStepsReward,
    SoftFormatReward,
    StrictFormatReward,
    XMLCountReward,
)
from memrl.rewards.memory_rewards import MemoryRewardConfig, MemoryRPlus, reasoning_span
from memrl.rewards.outcome import (
    CorrectnessReward,
    extract_answer,
    is_correct_math,
    is_correct_numeric,
    parse_gold,
)
from memrl.rewards.registry import build_rewards, r1_rewards

__all__ = [
    "METHODS",
    "CorrectnessReward",
    "CosineLengthReward",
    "IntegerAnswerReward",
    "MemoryRPlus",
    "MemoryRewardConfig",
    "OutcomeBatchReward",
    "OutcomeExplorationConfig",
    "OutcomeUCBReward",
    "ReasoningStepsReward",
    "SoftFormatReward",
    "StrictFormatReward",
    "XMLCountReward",
    "build_rewards",
    "cosine_length_value",
    "extract_answer",
    "is_correct_math",
    "is_correct_numeric",
    "parse_gold",
    "r1_rewards",
    "reasoning_span",
]
