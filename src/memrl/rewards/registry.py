"""Reward sets by method name, and their weights: what ``memrl train --method ...``, ``memrl serve``
and the demo use.

``r1``: outcome + format (DeepSeek-R1 style, the paper's "R1" baseline); ``cosine``: the cosine
length reward in place of plain correctness, plus format; ``memory-r`` / ``memory-r+``: R1 plus
the memory rewards; ``outcome-ucb`` / ``outcome-batch``: R1 plus the outcome-based exploration
bonus (historical UCB over each question's final answers, or the within-group repeat penalty);
``entropy``: the R1 rewards, with TRL's entropy bonus in the loss (``entropy_coef``, set by
:func:`memrl.grpo.config.resolve_config`); ``r1-random``: R1 plus a control reward of pure
Gaussian noise (:class:`~memrl.rewards.baselines.RandomReward`).
"""

from __future__ import annotations

from typing import Any

from memrl.names import MEMORY_METHODS, METHODS, OUTCOME_EXPLORATION_METHODS
from memrl.rewards.baselines import CosineLengthReward, RandomReward
from memrl.rewards.exploration import OutcomeBatchReward, OutcomeExplorationConfig, OutcomeUCBReward
from memrl.rewards.format import (
    IntegerAnswerReward,
    ReasoningStepsReward,
    SoftFormatReward,
    StrictFormatReward,
    XMLCountReward,
)
from memrl.rewards.memory_rewards import MemoryRewardConfig, MemoryRPlus
from memrl.rewards.outcome import CorrectnessReward, extract_answer, extract_tagged_answer

# Memory fields that follow from the method and the prompt style, never set directly.
DERIVED_MEMORY_FIELDS = ("memory_explore", "memory_style")


def memory_config_for(method: str, style: str,
                      config: MemoryRewardConfig | dict[str, Any] | None = None) -> MemoryRewardConfig:
    """``config`` (a built config, or option values) with the fields the method and the prompt
    style decide: ``memory_explore`` (Memory-R+, not Memory-R) and ``memory_style`` (the tag of
    the reasoning span). Options the semantics' preset filled follow ``memory_explore``."""
    values = dict(config.__dict__ if isinstance(config, MemoryRewardConfig) else config or {})
    return MemoryRewardConfig.from_dict({**values, "memory_explore": method == "memory-r+", "memory_style": style})


def reward_names(reward_funcs: list[Any]) -> list[str]:
    """The names TRL logs the rewards under (``rewards/<name>/mean``), in reward order."""
    return [getattr(f, "__name__", type(f).__name__) for f in reward_funcs]


def reward_weight_list(reward_funcs: list[Any], by_name: dict[str, float] | None) -> list[float] | None:
    """GRPOConfig ``reward_weights`` (a list in reward order) from a by-name mapping (None
    without one: every reward weighs 1)."""
    if not by_name:
        return None
    names = reward_names(reward_funcs)
    unknown = sorted(set(by_name) - set(names))
    if unknown:
        raise ValueError(f"reward_weights_by_name has unknown reward(s) {unknown}; this method's rewards: {names}")
    return [float(by_name.get(n, 1.0)) for n in names]


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
    exploration_config: OutcomeExplorationConfig | None = None,
    random_reward_std: float = 0.3,
    seed: int = 0,
) -> tuple[list[Any], MemoryRPlus | OutcomeUCBReward | None]:
    """Reward functions for ``method`` and the stateful reward among them, or None.

    The state object (:class:`MemoryRPlus` with its memories, :class:`OutcomeUCBReward` with its
    answer counts) is returned so the caller can checkpoint, restore and inspect it.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    rewards = r1_rewards(style, answer_column, checker)
    if method == "cosine":
        # correctness is folded into the cosine reward (its sign follows correctness)
        rewards[0] = CosineLengthReward(max_completion_length, answer_column=answer_column, checker=checker)
        return rewards, None
    if method in MEMORY_METHODS:
        config = memory_config_for(method, style, memory_config)
        memory = MemoryRPlus(config, encoder=encoder,
                             outcome=CorrectnessReward(answer_column=answer_column, checker=checker))
        return rewards + memory.reward_functions(), memory
    if method == "r1-random":
        return rewards + [RandomReward(random_reward_std, seed=seed)], None
    if method in OUTCOME_EXPLORATION_METHODS:
        # answers as the correctness check reads them: numbers normalised, or the tagged text
        answer_fn = extract_answer if checker == "numeric" else extract_tagged_answer
        kind = OutcomeUCBReward if method == "outcome-ucb" else OutcomeBatchReward
        bonus = kind(exploration_config, answer_fn=answer_fn)
        return rewards + [bonus], bonus if isinstance(bonus, OutcomeUCBReward) else None
    return rewards, None
