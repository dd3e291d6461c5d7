"""LM scores of the test queries under prompt prefixes, memoised, and what the evaluation reads off them.

A :class:`ScoreBook` memoises scores per (query, prefix) and scores missing pairs grouped by
prefix, so methods that agree on a query's order share the LM work. :func:`correctness_matrix`
scores every query under every prompt column (:func:`order_matrix`: every order of the fixed
demonstrations); :func:`oracle_and_spread` summarises that correctness matrix. Used by
:mod:`memrl.poem.evaluate` and the methods of :mod:`memrl.poem.methods`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from memrl.tasks.fewshot import Example, FewShotTask


class ScoreBook:
    """Memoised label scores of test queries under prompt prefixes.

    Args:
        task: the task (renders suffixes and continuations).
        scorer: LM backend.
        queries: the test examples; pairs refer to them by index.
    """

    def __init__(self, task: FewShotTask, scorer: Any, queries: Sequence[Example]) -> None:
        self.task, self.scorer, self.queries = task, scorer, list(queries)
        self._memo: dict[tuple[int, str], np.ndarray] = {}

    def scores(self, prefixes: Sequence[str], progress: bool = False) -> np.ndarray:
        """``(m, C)`` scores of query ``i`` under ``prefixes[i]`` for every test query ``i``."""
        from tqdm.auto import tqdm

        missing: dict[str, list[int]] = {}
        for i, prefix in enumerate(prefixes):
            if (i, prefix) not in self._memo:
                missing.setdefault(prefix, []).append(i)
        for prefix, idx in tqdm(missing.items(), desc="score", unit="prompt", disable=not progress, leave=False):
            batch = [self.queries[i] for i in idx]
            res = self.scorer.score(prefix, [self.task.suffix(q) for q in batch], self.task.continuations(batch))
            for i, row in zip(idx, res.normalised(self.task.length_normalise)):
                self._memo[(i, prefix)] = row
        return np.stack([self._memo[(i, p)] for i, p in enumerate(prefixes)])

    def memoised(self, prefix: str) -> np.ndarray | None:
        """``(m, C)`` scores of every query under ``prefix`` if all are memoised (no LM call),
        else None; rows with fewer choices are padded with ``-inf``."""
        rows = [self._memo.get((i, prefix)) for i in range(len(self.queries))]
        if any(r is None for r in rows):
            return None
        width = max(len(r) for r in rows)
        return np.stack([np.pad(np.asarray(r, np.float64), (0, width - len(r)), constant_values=-np.inf)
                         for r in rows])

    def predictions(self, prefixes: Sequence[str], progress: bool = False) -> np.ndarray:
        """``(m,)`` predicted label / choice index of each test query under its prefix."""
        return self.scores(prefixes, progress).argmax(axis=1)

    def accuracy(self, prefixes: Sequence[str], progress: bool = False) -> float:
        gold = np.array([q.label for q in self.queries])
        return float((self.predictions(prefixes, progress) == gold).mean())


def correctness_matrix(book: ScoreBook, columns: Sequence[Sequence[str]], progress: bool = False) -> np.ndarray:
    """``(m, P)`` correctness of every test query under each of ``P`` prompt columns (``columns[p][i]``:
    query ``i``'s prefix in column ``p``), scored once per (query, prefix) through ``book``, so later
    methods read them from its memo."""
    gold = np.array([q.label for q in book.queries])
    return np.stack([book.predictions(col, progress) == gold for col in columns], axis=1).astype(np.float64)


def order_matrix(book: ScoreBook, task: FewShotTask, demos: Sequence[Example], orders: Sequence[tuple[int, ...]],
                 progress: bool = False) -> np.ndarray:
    """``(m, P)`` correctness of every test query under every order of the fixed ``demos``."""
    return correctness_matrix(book, [[task.prefix([demos[p] for p in perm])] * len(book.queries) for perm in orders],
                              progress)


def oracle_and_spread(correct: np.ndarray) -> dict[str, float]:
    """From an ``(m, P)`` test correctness matrix: the per-query oracle (a query counts when some
    order is right) and the spread of the ``P`` fixed orders' accuracies (min / median / max /
    mean; the mean is the exact expected accuracy of a uniformly random candidate order)."""
    per_order = correct.mean(axis=0)
    return {"oracle": float(correct.max(axis=1).mean()), "fixed_min": float(per_order.min()),
            "fixed_median": float(np.median(per_order)), "fixed_max": float(per_order.max()),
            "fixed_mean": float(per_order.mean()),
            "orders": int(correct.shape[1])}
