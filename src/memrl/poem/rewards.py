"""Rewards of one (input, order) trial from the LM's label scores (pure functions).

All take ``scores`` ``(m, C)`` — log-probabilities (or length-normalised log-probabilities) of
each label/choice — and ``gold`` ``(m,)`` and return ``(m,)`` float64.
"""

from __future__ import annotations

import numpy as np


def label_probs(scores: np.ndarray) -> np.ndarray:
    """Softmax over the label set, ``(m, C)``: the LM's distribution restricted to the labels."""
    z = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def correct_reward(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """1.0 when the top-scored label is gold (ties count as wrong unless gold is the first max)."""
    return (scores.argmax(axis=1) == gold).astype(np.float64)


def gold_prob_reward(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """p(gold | prompt) normalised over the label set, in [0, 1]."""
    return label_probs(scores)[np.arange(len(gold)), gold]


def margin_reward(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """log p(gold) - max over other labels of log p(label) (positive iff correct)."""
    idx = np.arange(len(gold))
    others = scores.copy()
    others[idx, gold] = -np.inf
    return scores[idx, gold] - others.max(axis=1)


REWARD_FUNCTIONS = {"correct": correct_reward, "gold_prob": gold_prob_reward, "margin": margin_reward}


def compute_reward(kind: str, scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Dispatch on the reward name (see :data:`REWARD_FUNCTIONS`)."""
    if kind not in REWARD_FUNCTIONS:
        raise ValueError(f"unknown reward {kind!r}; choose one of {sorted(REWARD_FUNCTIONS)}")
    scores = np.asarray(scores, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != gold.shape[0]:
        raise ValueError(f"scores must be (m, C) with m = len(gold); got {scores.shape} and {gold.shape}")
    return REWARD_FUNCTIONS[kind](scores, gold)
