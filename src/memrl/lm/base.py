"""The scoring interface every LM backend implements.

POEM and its baselines only ever ask one question of an LM: *given this prompt, how likely is
each candidate continuation?* A prompt is split in two parts on purpose:

* ``prefix`` — the demonstrations (shared by many queries, so a backend may cache it);
* ``suffix`` — one query rendered by the task template (e.g. ``"Review: ...\\nSentiment:"``).

The continuations are the verbalizer words of a classification task (the same for every query)
or the answer choices of a multiple-choice item (one list per query).

LM call (the unit reported everywhere): scoring **one query under one prompt**, i.e. one
``(prefix, suffix)`` pair with all its continuations. A batch of ``m`` suffixes costs ``m`` calls,
whatever the backend does internally (prefix caching, batching).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class ContinuationScores:
    """Log-probabilities of candidate continuations.

    Attributes:
        logprob: ``(m, C)`` float64, summed log-probability of each continuation's tokens.
        num_tokens: ``(m, C)`` int, how many tokens each continuation has (for length
            normalisation of multiple-choice answers).
    """

    logprob: np.ndarray
    num_tokens: np.ndarray

    def normalised(self, length_normalise: bool) -> np.ndarray:
        """Per-token mean log-probability when ``length_normalise`` else the sum, ``(m, C)``."""
        if not length_normalise:
            return self.logprob
        return self.logprob / np.maximum(self.num_tokens, 1)


def as_choice_lists(
    continuations: Sequence[str] | Sequence[Sequence[str]], m: int
) -> list[list[str]]:
    """Broadcast shared continuations (``["great", ...]``) to one list per query, and check that
    per-query lists all have the same length (a ``(m, C)`` result needs a fixed ``C``)."""
    if len(continuations) and all(isinstance(c, str) for c in continuations):
        return [list(continuations)] * m  # type: ignore[list-item]
    lists = [list(c) for c in continuations]
    if len(lists) != m:
        raise ValueError(f"need one continuation list per suffix: got {len(lists)} for {m} suffixes")
    sizes = {len(c) for c in lists}
    if len(sizes) > 1:
        raise ValueError(f"every query needs the same number of choices; got sizes {sorted(sizes)}")
    if sizes == {0}:
        raise ValueError("no continuations to score")
    return lists


@runtime_checkable
class Scorer(Protocol):
    """What POEM needs from an LM backend.

    Attributes:
        identity: stable name of the LM (saved with a POEM memory, checked on load).
        calls: LM calls made so far (see the module docstring for the definition).
    """

    identity: str
    calls: int

    def score(
        self,
        prefix: str,
        suffixes: Sequence[str],
        continuations: Sequence[str] | Sequence[Sequence[str]],
    ) -> ContinuationScores:
        """Score ``prefix + suffixes[i] + continuations[i][c]`` for every query i and choice c."""
        ...
