"""Baseline rewards the paper compares Memory-R+ with."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from memrl.rewards.common import check_lengths, completion_texts
from memrl.rewards.outcome import CorrectnessReward


def cosine_length_value(length: int, max_len: int, correct: bool,
                        correct_range: tuple[float, float] = (0.5, 1.0),
                        wrong_range: tuple[float, float] = (-0.5, -1.0)) -> float:
    """Cosine-scaled length reward (Yeo et al. 2025, "Demystifying Long CoT Reasoning").

    ``p = min(length, max_len) / max_len``, ``r = v_end + ½(v_start − v_end)(1 + cos πp)`` so
    ``r(0) = v_start`` and ``r(1) = v_end``. Correct answers go from 1.0 (short) down to 0.5
    (at the cap); wrong answers from −1.0 (short) up to −0.5, so a long wrong attempt is penalised
    less than a short guess. Ranges are ``(v_end, v_start)`` pairs as in the paper's table:
    correct ``v_min = 0.5, v_max = 1.0``; wrong with the endpoints swapped.

    >>> round(cosine_length_value(0, 200, True), 3), round(cosine_length_value(200, 200, True), 3)
    (1.0, 0.5)
    >>> round(cosine_length_value(0, 200, False), 3), round(cosine_length_value(100, 200, False), 3)
    (-1.0, -0.75)
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    v_end, v_start = correct_range if correct else wrong_range
    p = min(max(length, 0), max_len) / max_len
    return v_end + 0.5 * (v_start - v_end) * (1.0 + math.cos(math.pi * p))


class CosineLengthReward:
    """Cosine length reward measured in **tokens** (the reference measured characters against a
    token cap, which made it non-monotone; spec issue #6).

    Token counts come from TRL's ``completion_ids`` keyword; outside TRL pass a ``tokenizer`` to
    count them.

    Args:
        max_len: the completion-token cap (``max_completion_length``); 200 for the paper's GSM8K.
        answer_column: gold answer column for correctness.
        checker: ``"numeric"`` or ``"math"``.
        tokenizer: optional, used only when ``completion_ids`` is not passed.
    """

    __name__ = "cosine_length_reward"

    def __init__(self, max_len: int = 200, answer_column: str = "answer", checker: str = "numeric",
                 tokenizer: Any = None) -> None:
        if max_len <= 0:
            raise ValueError(f"max_len must be positive, got {max_len}")
        self.max_len = max_len
        self.correctness = CorrectnessReward(answer_column=answer_column, checker=checker)
        self.tokenizer = tokenizer

    def __call__(self, prompts=None, completions=None, completion_ids: Sequence[Sequence[int]] | None = None,
                 **kwargs) -> list[float]:
        texts = completion_texts(completions)
        if completion_ids is not None:
            check_lengths(len(texts), completion_ids=completion_ids)
            lengths = [len(ids) for ids in completion_ids]
        elif self.tokenizer is not None:
            lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        else:
            raise ValueError(
                "cosine_length_reward measures length in tokens: pass completion_ids (TRL does) "
                "or construct it with tokenizer=..."
            )
        correct = self.correctness(prompts=prompts, completions=completions, **kwargs)
        return [cosine_length_value(n, self.max_len, c > 0.5) for n, c in zip(lengths, correct)]


class RandomReward:
    """A control reward: independent Gaussian noise ``N(0, std²)`` per completion, carrying no
    information about the completion at all.

    Added to R1 with the same within-group spread as Memory-R+'s intrinsic rewards (their
    ``memory/intrinsic_group_std``), it tells an effect of the intrinsic rewards' *signal* from an
    effect of merely adding variance to GRPO's advantages (e.g. filling zero-variance groups).
    The noise is reproducible: drawn from ``(seed, optimizer step, process rank)``, so a resumed run
    draws what the uninterrupted one would have.

    >>> r = RandomReward(std=0.5, seed=1)
    >>> r(completions=["a", "b"]) == RandomReward(std=0.5, seed=1)(completions=["a", "b"])
    True
    """

    __name__ = "random_reward"

    def __init__(self, std: float = 0.3, seed: int = 0) -> None:
        if not std > 0:
            raise ValueError(f"random reward std must be > 0, got {std}")
        self.std = float(std)
        self.seed = int(seed)
        self.calls = 0  # stands in for the step outside a trainer

    def __call__(self, prompts=None, completions=None, trainer_state: Any = None, **kwargs) -> list[float]:
        import numpy as np

        from memrl.distributed import rank

        n = len(completion_texts(completions))
        step = getattr(trainer_state, "global_step", None)
        step = self.calls if step is None else int(step)
        self.calls += 1
        rng = np.random.default_rng([self.seed, step, rank()])
        return rng.normal(0.0, self.std, size=n).tolist()
