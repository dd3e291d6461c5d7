"""Similarity-rank encoding of demonstration orders (pure functions, any ``n``).

A POEM *action* is not a permutation of concrete examples (that would not transfer between
queries) but a tuple of **similarity ranks**: position ``j`` of the prompt holds "the example that
is the ``a_j``-th most similar to the query" (0 = most similar). Encoding with one query's ranks
and decoding with another's carries an order learned on one input over to a new input.

Notation: ``perm[j]`` is the index of the example at prompt position ``j``; ``ranks[i]`` is
example ``i``'s similarity rank for the query (a permutation of ``0..n-1``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

Order = tuple[int, ...]


def similarity_ranks(sims: Sequence[float] | np.ndarray) -> Order:
    """Rank of each example by similarity to the query, 0 = most similar.

    Ties are broken by the lower example index, so ranks are a deterministic permutation.

    Args:
        sims: ``(n,)`` similarities of the ``n`` examples to the query.

    Returns:
        ``ranks`` with ``ranks[i]`` the rank of example ``i``.

    >>> similarity_ranks([0.1, 0.9, 0.5])
    (2, 0, 1)
    """
    sims = np.asarray(sims, dtype=np.float64)
    if sims.ndim != 1:
        raise ValueError(f"sims must be 1-D, got shape {sims.shape}")
    by_rank = np.lexsort((np.arange(len(sims)), -sims))  # most similar first, stable on index
    ranks = np.empty(len(sims), dtype=np.int64)
    ranks[by_rank] = np.arange(len(sims))
    return tuple(int(r) for r in ranks)


def _check_perm(p: Sequence[int], n: int, name: str) -> None:
    if len(p) != n or sorted(p) != list(range(n)):
        raise ValueError(f"{name} must be a permutation of 0..{n - 1}, got {tuple(p)}")


def encode_order(perm: Sequence[int], ranks: Sequence[int]) -> Order:
    """Permutation of examples -> rank code ``a_j = ranks[perm[j]]``.

    >>> encode_order((1, 2, 0), ranks=(2, 0, 1))   # most similar example (1) first
    (0, 1, 2)
    """
    _check_perm(ranks, len(ranks), "ranks")
    _check_perm(perm, len(ranks), "perm")
    return tuple(int(ranks[i]) for i in perm)


def decode_order(code: Sequence[int], ranks: Sequence[int]) -> Order:
    """Rank code -> permutation of examples for a query with ``ranks``: position ``j`` gets the
    example whose rank is ``code[j]``. Inverse of :func:`encode_order` for the same ranks.

    >>> decode_order((0, 1, 2), ranks=(2, 0, 1))
    (1, 2, 0)
    """
    _check_perm(ranks, len(ranks), "ranks")
    _check_perm(code, len(ranks), "code")
    by_rank = [0] * len(ranks)
    for i, r in enumerate(ranks):
        by_rank[r] = i
    return tuple(by_rank[a] for a in code)


def kate_code(n: int, most_similar_last: bool = True) -> Order:
    """The KATE order as a code: most similar example last (``(n-1, ..., 0)``), or first.

    >>> kate_code(3), kate_code(3, most_similar_last=False)
    ((2, 1, 0), (0, 1, 2))
    """
    return tuple(range(n - 1, -1, -1)) if most_similar_last else tuple(range(n))


def sample_orders(n: int, budget: int, rng: np.random.Generator) -> list[Order]:
    """Orders of ``n`` items to try: all ``n!`` (lexicographic) when ``n! <= budget``, else
    ``budget`` distinct orders drawn uniformly at random.

    Args:
        n: number of demonstrations (>= 1).
        budget: most orders to return (>= 1).
        rng: numpy generator (the caller seeds it).
    """
    if n < 1 or budget < 1:
        raise ValueError(f"need n >= 1 and budget >= 1, got n={n}, budget={budget}")
    if math.factorial(n) <= budget:
        return [tuple(p) for p in itertools.permutations(range(n))]
    seen: set[Order] = set()
    out: list[Order] = []
    # Rejection sampling is efficient here: budget < n! so each draw is new with prob >= 1/2
    # until half of n! is taken, and budgets are far below n! for the n where we sample.
    while len(out) < budget:
        p = tuple(int(x) for x in rng.permutation(n))
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


# ---------------------------------------------------------------------------- label-aware codes
LabelCode = tuple[tuple[int, int], ...]


def label_ranks(labels: Sequence[int], sims: Sequence[float] | np.ndarray) -> Order:
    """Each example's similarity rank among the examples **of its own label**, 0 = most similar.

    Ties are broken by the lower example index (as :func:`similarity_ranks`).

    >>> label_ranks([0, 1, 0, 1], [0.1, 0.9, 0.5, 0.2])
    (1, 0, 0, 1)
    """
    labels = [int(x) for x in labels]
    sims = np.asarray(sims, dtype=np.float64)
    if sims.shape != (len(labels),):
        raise ValueError(f"labels and sims must have the same length, got {len(labels)} and {sims.shape}")
    out = [0] * len(labels)
    for lab in set(labels):
        members = [i for i, x in enumerate(labels) if x == lab]
        for r, i in enumerate(sorted(members, key=lambda i: (-sims[i], i))):
            out[i] = r
    return tuple(out)


def encode_label_order(perm: Sequence[int], labels: Sequence[int], lranks: Sequence[int]) -> LabelCode:
    """Permutation of examples -> label-aware code: position ``j`` holds ``(label, rank within
    that label)`` of the example at ``j``. Keeps the label pattern of the prompt (what drives
    recency/majority-label bias in a small LM) and still transfers similarity between queries.

    >>> encode_label_order((2, 0, 1), labels=(0, 1, 0), lranks=(1, 0, 0))
    ((0, 0), (0, 1), (1, 0))
    """
    n = len(labels)
    _check_perm(perm, n, "perm")
    if len(lranks) != n:
        raise ValueError(f"lranks must have {n} entries, got {len(lranks)}")
    return tuple((int(labels[i]), int(lranks[i])) for i in perm)


def decode_label_order(code: Sequence[Sequence[int]], labels: Sequence[int], lranks: Sequence[int]) -> Order:
    """Label-aware code -> permutation for a query whose candidates have ``labels`` and
    within-label ranks ``lranks``: position ``j`` gets the example with label ``code[j][0]`` that is
    the ``code[j][1]``-th most similar of its label. Inverse of :func:`encode_label_order` for
    the same ranks.

    Raises:
        ValueError: the code's label pattern cannot be realised with these candidates (another
            multiset of labels, as can happen with per-query kNN demonstrations).

    >>> decode_label_order(((0, 0), (0, 1), (1, 0)), labels=(0, 1, 0), lranks=(0, 0, 1))
    (0, 2, 1)
    """
    where = {(int(lab), int(r)): i for i, (lab, r) in enumerate(zip(labels, lranks))}
    if len(where) != len(labels):
        raise ValueError(f"lranks {tuple(lranks)} are not within-label ranks of labels {tuple(labels)}")
    try:
        perm = tuple(where[(int(lab), int(r))] for lab, r in code)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"label-aware code {tuple(code)} cannot be realised with candidate labels "
                         f"{tuple(labels)}") from None
    if len(perm) != len(labels) or len(set(perm)) != len(perm):
        raise ValueError(f"label-aware code {tuple(code)} is not a permutation of {len(labels)} candidates")
    return perm
