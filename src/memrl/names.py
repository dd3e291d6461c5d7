"""The names memrl's options accept, each defined once and imported wherever it is checked.

A method, a prompt style or a checker spelled differently in two modules is how a CLI choice
list and a config check drift apart; every such set lives here.
"""

from __future__ import annotations

# Tags a completion's reasoning and answer are wrapped in: <think>/<answer> (paper) or
# <reasoning>/<answer> (reference code, GSM8K).
PROMPT_STYLES = ("think", "reasoning")

# GRPO reward methods (`memrl train --method`): the paper's baselines, Memory-R / Memory-R+, and
# peer exploration methods (outcome-based exploration, Song et al. 2025; TRL's entropy bonus), and a
# control (R1 plus pure noise of a chosen spread).
METHODS = ("r1", "cosine", "memory-r", "memory-r+", "outcome-ucb", "outcome-batch", "entropy", "r1-random")
MEMORY_METHODS = ("memory-r", "memory-r+")
OUTCOME_EXPLORATION_METHODS = ("outcome-ucb", "outcome-batch")

# Reward functions that grade correctness (their TRL names), each with the value above which a
# completion counts as correct: the cosine reward's sign follows correctness, so > 0 is right.
CORRECTNESS_REWARDS = {"correctness_reward": 0.5, "math_accuracy_reward": 0.5, "cosine_length_reward": 0.0}

# Answer checkers: GSM8K-style numeric comparison, or math-verify for LaTeX answers.
CHECKERS = ("numeric", "math")

# Memory-R+ write/score orders (`memory_semantics`) are not listed here: each is one class in
# memrl.rewards.semantics, and its registry SEMANTICS is the one list of their names.


def check_choice(name: str, value: object, allowed: tuple[str, ...], *, nullable: bool = False) -> None:
    """Raise ``ValueError`` naming the option and its valid values when ``value`` is not one of them."""
    if value is None and nullable:
        return
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
