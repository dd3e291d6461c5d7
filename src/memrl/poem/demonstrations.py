"""Where POEM's candidate demonstrations come from, and which orders of them a fit tries.

Two sources (:data:`memrl.poem.selection.SOURCES`): ``fixed``, one seeded label-balanced set of
``n`` training examples for every query (:func:`balanced_draw`), and ``knn``, each query's ``n``
most similar training examples, most similar first (:class:`KnnPool`, KATE's retrieval). No LM call.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from memrl.memory import EpisodicMemory
from memrl.poem.orders import Order, kate_code, sample_orders
from memrl.tasks.fewshot import Example


def balanced_draw(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """Indices of ``n`` examples drawn label-balanced: round robin over the shuffled classes, each
    class's examples in a seeded shuffle, so a 4-shot prompt of a 2-class task holds 2 + 2 (a draw
    of one class only would make order irrelevant). Every class is shown once ``n`` >= classes."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[int]] = {}
    for i in rng.permutation(len(labels)):
        by_label.setdefault(int(labels[int(i)]), []).append(int(i))
    order = [int(lab) for lab in rng.permutation(sorted(by_label))]
    chosen: list[int] = []
    while len(chosen) < n:
        for lab in order:
            if by_label[lab] and len(chosen) < n:
                chosen.append(by_label[lab].pop())
    return chosen


def knn_orders(n: int, budget: int, seed: int, *, most_similar_last: bool = True) -> list[Order]:
    """The orders a kNN-source fit tries on *every* input, as indices into the input's candidates
    (most similar first, so an order here is also its similarity-rank code): all ``n!`` when
    ``n! <= budget``, else KATE's order (the fallback, so the heuristic is always among the actions)
    and a seeded uniform sample of ``budget - 1`` others. Sorted, so that orders sharing their first
    demonstrations are scored one after the other and a prefix-caching backend reuses the shared
    start (:class:`memrl.lm.HFScorer`'s partial prefix reuse).

    >>> knn_orders(2, 24, 0)
    [(0, 1), (1, 0)]
    >>> orders = knn_orders(4, 3, 0); (3, 2, 1, 0) in orders and len(orders) == 3 and orders == sorted(orders)
    True
    """
    if math.factorial(n) <= budget:
        return sample_orders(n, budget, np.random.default_rng(seed))  # all of them, lexicographic
    kate = kate_code(n, most_similar_last)
    sample = sample_orders(n, budget, np.random.default_rng(seed))
    return sorted([kate, *[o for o in sample if o != kate][: budget - 1]])


class KnnPool:
    """The training examples a query's demonstrations are retrieved from, indexed by embedding.

    Args:
        examples: the pool (the training split; :meth:`add` grows it).
        vecs: their embeddings, ``(len(examples), d)``, unit norm.
        encoder_name: recorded with the index.
    """

    def __init__(self, examples: Sequence[Example], vecs: np.ndarray, encoder_name: str) -> None:
        self.examples = list(examples)
        self.encoder_name = encoder_name
        self._index(np.asarray(vecs))

    def _index(self, vecs: np.ndarray) -> None:
        self.vecs = vecs
        self.memory = EpisodicMemory(vecs.shape[1], max_keys=len(self.examples), max_values=1,
                                     encoder_name=self.encoder_name)
        self.memory.add([str(i) for i in range(len(self.examples))], vecs, vecs)
        # copies of one text in the pool: an input excluded as its own demo drops all of them
        self.text_counts = Counter(ex.key_text for ex in self.examples)

    def add(self, examples: Sequence[Example], vecs: np.ndarray) -> None:
        """Add ``examples`` (embedded as ``vecs``) to the pool."""
        self.examples += list(examples)
        self._index(np.concatenate([self.vecs, vecs]))

    def nearest(self, query_vec: np.ndarray, n: int, *, exclude_text: str | None = None,
                task_name: str = "?") -> tuple[list[Example], np.ndarray]:
        """The ``n`` pool examples most similar to the query, most similar first, and their
        similarities; an example whose text equals ``exclude_text`` is skipped (a training input is
        never its own demonstration)."""
        skipped = self.text_counts.get(exclude_text, 0) if exclude_text is not None else 0
        sims, ids = self.memory.search(query_vec[None], min(len(self.examples), n + skipped))
        picked = [(int(i), float(s)) for i, s in zip(ids[0], sims[0])
                  if self.examples[int(i)].key_text != exclude_text][:n]
        if len(picked) < n:
            raise ValueError(f"task {task_name!r}: only {len(picked)} pool examples differ from the input "
                             f"{exclude_text!r:.80}; n_examples={n} needs more distinct training texts")
        return [self.examples[i] for i, _ in picked], np.array([s for _, s in picked])
