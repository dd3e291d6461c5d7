"""Top-K inner-product search over a key matrix.

Both backends are *exact*: they return the same neighbours (up to ties between equal
similarities). ``exact`` is a chunked numpy matrix product with no dependency and is the
reference; ``faiss`` calls ``faiss.knn`` (brute force, BLAS + SIMD top-K) and is optional.
Neither keeps an index of its own: the memory's key matrix *is* the index, so keys and
values can never drift apart after evictions (a bug of the reference code).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

BACKENDS = ("exact", "faiss")

# Rows of the key matrix scored per chunk: bounds the temporary (m, chunk) similarity block and
# the float16 -> float32 copy, so a 10^6-key memory never needs a second full-size copy.
_CHUNK = 65536


def _topk_rows(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` columns of every row, sorted by decreasing similarity, ties by lower index."""
    n = sims.shape[1]
    if k < n:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        # argpartition picks arbitrarily among values equal to the k-th largest; where such ties
        # straddle the cut, choose them by lower index (rare with real embeddings, so per row)
        kth = np.take_along_axis(sims, part, axis=1).min(axis=1)
        for r in np.flatnonzero((sims >= kth[:, None]).sum(axis=1) > k):
            cand = np.flatnonzero(sims[r] >= kth[r])
            part[r] = cand[np.lexsort((cand, -sims[r, cand]))[:k]]
    else:
        part = np.broadcast_to(np.arange(n), sims.shape).copy()
    part_sims = np.take_along_axis(sims, part, axis=1)
    # lexsort: last key is primary -> order by -sim, then by index for deterministic ties
    order = np.lexsort((part, -part_sims), axis=1)
    return np.take_along_axis(part_sims, order, axis=1), np.take_along_axis(part, order, axis=1)


def _search_exact(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    best_sims: np.ndarray | None = None
    best_idx: np.ndarray | None = None
    for start in range(0, keys.shape[0], _CHUNK):
        block = np.asarray(keys[start : start + _CHUNK], dtype=np.float32)
        sims = queries @ block.T  # (m, chunk)
        s, i = _topk_rows(sims, min(k, block.shape[0]))
        i = i + start
        if best_sims is None:
            best_sims, best_idx = s, i
        else:
            s = np.concatenate([best_sims, s], axis=1)
            i = np.concatenate([best_idx, i], axis=1)
            # re-select on the merged candidates; indices carry through
            s2, pos = _topk_rows(s, min(k, s.shape[1]))
            best_sims, best_idx = s2, np.take_along_axis(i, pos, axis=1)
    assert best_sims is not None and best_idx is not None
    return best_sims, best_idx


def _search_faiss(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - exercised only without faiss installed
        raise ImportError(
            "backend='faiss' needs faiss-cpu: pip install 'memrl[faiss]' (or use backend='exact')"
        ) from exc
    xb = np.ascontiguousarray(keys, dtype=np.float32)
    sims, idx = faiss.knn(queries, xb, k, metric=faiss.METRIC_INNER_PRODUCT)
    return sims.astype(np.float32, copy=False), idx.astype(np.int64, copy=False)


def topk_search(
    queries: np.ndarray, keys: np.ndarray, k: int, backend: str = "exact"
) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product top-K of each query row against the key rows.

    Args:
        queries: ``(m, d)`` float array.
        keys: ``(n, d)`` float32 or float16 array (the stored keys).
        k: neighbours wanted per query.
        backend: ``"exact"`` (numpy) or ``"faiss"``.

    Returns:
        ``(sims, idx)``, both ``(m, min(k, n))``, sorted by decreasing similarity. With fewer
        than ``k`` keys stored the arrays are simply narrower: there are never ``-1`` indices.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    m, n = queries.shape[0], keys.shape[0]
    k = min(int(k), n)
    if m == 0 or k <= 0:
        return np.zeros((m, 0), np.float32), np.zeros((m, 0), np.int64)
    if backend == "faiss":
        return _search_faiss(queries, keys, k)
    return _search_exact(queries, keys, k)
