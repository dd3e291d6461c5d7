"""POEM's read rule: how the retrieved neighbours' rewards become one chosen action.

The rule is written once, vectorised over rows (:func:`pick_codes`, from :func:`score_codes` and
:func:`choose_codes`): leave-one-out (:mod:`memrl.poem.matrix`) reads every training input at once,
and :func:`best_action`, what :meth:`memrl.poem.PoemOptimizer.select` uses, is the same rule on one
row built from one query's neighbour tables. Pure numpy; no LM call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from memrl.poem.orders import Order
from memrl.poem.settings import READS

# Scores within this fraction of the best (at least of 1.0) tie: the same sums of rewards, added in
# another order (one query's tables vs leave-one-out's running sums), may differ in the last bits.
TIE_TOLERANCE = 1e-12


def _check_read(read: str) -> None:
    if read not in READS:
        raise ValueError(f"read must be one of {list(READS)}, got {read!r}")


def score_codes(local_sum: np.ndarray, local_cnt: np.ndarray, prior_mean: np.ndarray, prior_cnt: np.ndarray,
                n_neigh: int | np.ndarray, *, read: str, shrink: float) -> np.ndarray:
    """``(rows, A)`` score of every code, ``-inf`` where the code has no evidence.

    Score of code ``a``: ``(1 - shrink) * local(a) + shrink * prior(a)`` with ``local`` the sum
    (``read="sum"``) or mean (``"mean"``) of the neighbours' rewards for ``a`` (a neighbour that did
    not try ``a`` adds nothing) and ``prior`` the mean reward of ``a`` over all memory inputs, times
    the number of neighbours read for ``"sum"`` (same scale). A code has evidence when a neighbour
    tried it, or ``shrink > 0`` and some memory input did (``prior_cnt > 0``).

    Args:
        local_sum, local_cnt: ``(rows, A)`` sum of the neighbours' mean rewards per code and the
            number of neighbours that tried it.
        prior_mean, prior_cnt: ``(rows, A)`` or ``(A,)`` the prior per code and how many memory
            inputs it rests on.
        n_neigh: neighbours read, one number or ``(rows,)``.
        read: one of :data:`memrl.poem.settings.READS`.
        shrink: weight of the prior in [0, 1].
    """
    _check_read(read)
    if read == "sum":
        local = local_sum
        scale = np.asarray(n_neigh, dtype=np.float64).reshape(-1, 1) if np.ndim(n_neigh) else float(n_neigh)
    else:
        local = np.divide(local_sum, local_cnt, out=np.zeros_like(local_sum), where=local_cnt > 0)
        scale = 1.0
    score = (1.0 - shrink) * local + shrink * prior_mean * scale if shrink > 0 else local
    evidence = (local_cnt > 0) | ((prior_cnt > 0) if shrink > 0 else False)
    return np.where(evidence, score, -np.inf)


def choose_codes(score: np.ndarray, local_cnt: np.ndarray, *, allowed: np.ndarray,
                 default: np.ndarray) -> np.ndarray:
    """Per row, the index of the winning code, ``-1`` when no code with evidence is ``allowed``.

    Among the allowed codes with a finite ``score``, the best score wins; ties (within
    :data:`TIE_TOLERANCE`) go to the code more neighbours tried, then to ``default[row]`` (the
    fallback heuristic's code; ``-1``: none), then to the lowest index (codes are kept sorted, so
    this is the lexicographically smallest code).
    """
    score = np.where(allowed, score, -np.inf)
    best = score.max(axis=1, keepdims=True)
    tie = np.isfinite(score) & (score >= best - TIE_TOLERANCE * np.maximum(1.0, np.abs(best)))
    cnt = np.where(tie, local_cnt, -1)
    tie &= cnt == cnt.max(axis=1, keepdims=True)
    rows = np.arange(len(score))
    first = np.argmax(tie, axis=1)
    prefer_default = (default >= 0) & tie[rows, np.maximum(default, 0)]
    pick = np.where(prefer_default, default, first)
    return np.where(tie.any(axis=1), pick, -1)


def pick_codes(local_sum: np.ndarray, local_cnt: np.ndarray, glob_mean: np.ndarray, glob_cnt: np.ndarray,
               n_neigh: int | np.ndarray, *, read: str, shrink: float, allowed: np.ndarray,
               default: np.ndarray) -> np.ndarray:
    """Per row, the code the read rule picks (-1 when nothing is known and the fallback applies):
    :func:`score_codes`, then :func:`choose_codes`."""
    score = score_codes(local_sum, local_cnt, glob_mean, glob_cnt, n_neigh, read=read, shrink=shrink)
    return choose_codes(score, local_cnt, allowed=allowed, default=default)


def best_action(
    tables: Sequence[Mapping[Order, tuple[float, int]]],
    *,
    read: str = "sum",
    default: Order | None = None,
    prior: Mapping[Order, float] | None = None,
    shrink: float = 0.0,
    allowed: Callable[[Any], bool] | None = None,
) -> tuple[Order | None, dict[Order, tuple[float, int]]]:
    """Combine the reward tables of one query's retrieved neighbours and pick an action: the rule of
    :func:`pick_codes` on one row.

    Args:
        tables: one table per neighbour, ``code -> (mean reward, trials)``.
        read: ``"sum"`` — score = sum over neighbours of the neighbour's mean reward (the paper);
            ``"mean"`` — that sum divided by the number of neighbours that tried the code.
            An action a neighbour did not try contributes nothing.
        default: preferred code on a tie after the neighbour count (the fallback heuristic).
        prior: ``code -> mean reward over all memory inputs`` (the global order's evidence).
        shrink: weight ``lambda`` of ``prior``: score = ``(1 - lambda) * local + lambda * prior``,
            the prior times the number of neighbours for ``read="sum"`` (same scale). With
            ``lambda > 0`` a code no neighbour tried competes on its prior alone.
        allowed: optional predicate; codes it rejects (not realisable for this query) never win.

    Returns:
        ``(code, scores)`` where ``scores[code] = (score, neighbours that tried it)``, in code order;
        ``code`` is ``None`` when no neighbour has any entry. Ties: higher score, then more
        neighbours, then ``default``, then the lexicographically smallest code (a fixed order).

    >>> best_action([{(0, 1): (1.0, 1), (1, 0): (0.5, 1)}, {(1, 0): (0.6, 1)}])[0]
    (1, 0)
    >>> best_action([{(0, 1): (1.0, 1), (1, 0): (0.5, 1)}, {(1, 0): (0.6, 1)}], read="mean")[0]
    (0, 1)
    """
    _check_read(read)  # before the early return: a wrong name fails on an empty memory too
    # per code, the sum of the neighbours' mean rewards in neighbour order (as leave-one-out adds them)
    totals: dict[Order, list[float]] = {}
    for table in tables:
        for code, (mean_reward, _) in table.items():
            acc = totals.setdefault(code, [0.0, 0])
            acc[0] += float(mean_reward)
            acc[1] += 1
    use_prior = prior is not None and shrink > 0
    codes = sorted(set(totals) | (set(prior) if use_prior else set()))
    if not codes:
        return None, {}
    # one row of the vectorised rule; every code listed has evidence (a neighbour or, with shrinkage,
    # the prior), so its score is finite
    local = np.array([totals.get(c, (0.0, 0)) for c in codes], dtype=np.float64).T[:, None, :]
    local_sum, local_cnt = local[0], local[1]
    if use_prior:
        assert prior is not None
        prior_mean = np.array([float(prior.get(c, 0.0)) for c in codes])
        prior_cnt = np.array([c in prior for c in codes])
    else:
        prior_mean = prior_cnt = np.zeros(len(codes))
    score = score_codes(local_sum, local_cnt, prior_mean, prior_cnt, len(tables), read=read,
                        shrink=shrink if use_prior else 0.0)
    ok = np.ones_like(local_cnt, dtype=bool) if allowed is None else np.array([[bool(allowed(c)) for c in codes]])
    default_index = np.array([codes.index(default) if default in codes else -1])
    pick = int(choose_codes(score, local_cnt, allowed=ok, default=default_index)[0])
    scores = dict(zip(codes, zip(score[0].tolist(), local_cnt[0].astype(np.int64).tolist())))
    return (codes[pick] if pick >= 0 else None), scores


def prior_means(tables: Mapping[str, Mapping[Any, tuple[float, int]]]) -> dict[Any, float]:
    """Per code, the mean over memory inputs of their mean reward (the shrinkage target)."""
    acc: dict[Any, list[float]] = {}
    for table in tables.values():
        for code, (mean, _) in table.items():
            a = acc.setdefault(code, [0.0, 0])
            a[0] += mean
            a[1] += 1
    return {code: s / c for code, (s, c) in acc.items()}
