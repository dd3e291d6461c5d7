"""POEM's read rule: how the retrieved neighbours' reward tables become one chosen action.

Pure functions over ``code -> (mean reward, trials)`` tables; :class:`PoemOptimizer` calls them at
select time and :mod:`memrl.poem.matrix` mirrors the same rule, vectorised, for leave-one-out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from memrl.poem.orders import Order


def best_action(
    tables: Sequence[Mapping[Order, tuple[float, int]]],
    *,
    read: str = "sum",
    default: Order | None = None,
    prior: Mapping[Order, float] | None = None,
    shrink: float = 0.0,
    allowed: Any = None,
) -> tuple[Order | None, dict[Order, tuple[float, int]]]:
    """Combine the reward tables of the retrieved neighbours and pick an action.

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
        ``(code, scores)`` where ``scores[code] = (score, neighbours that tried it)``; ``code`` is
        ``None`` when no neighbour has any entry. Ties: higher score, then more neighbours, then
        ``default``, then the lexicographically smallest code (a fixed order).

    >>> best_action([{(0, 1): (1.0, 1), (1, 0): (0.5, 1)}, {(1, 0): (0.6, 1)}])[0]
    (1, 0)
    >>> best_action([{(0, 1): (1.0, 1), (1, 0): (0.5, 1)}, {(1, 0): (0.6, 1)}], read="mean")[0]
    (0, 1)
    """
    if read not in ("sum", "mean"):
        raise ValueError(f"read must be 'sum' or 'mean', got {read!r}")
    totals: dict[Order, list[float]] = {}
    for table in tables:
        for code, (mean_reward, _) in table.items():
            acc = totals.setdefault(code, [0.0, 0])
            acc[0] += float(mean_reward)
            acc[1] += 1
    codes = set(totals) | (set(prior) if prior is not None and shrink > 0 else set())
    scale = len(tables) if read == "sum" else 1
    scores: dict[Order, tuple[float, int]] = {}
    for code in codes:
        s, c = totals.get(code, (0.0, 0))
        local = (s / c if c else 0.0) if read == "mean" else s
        if shrink > 0 and prior is not None:
            local = (1.0 - shrink) * local + shrink * float(prior.get(code, 0.0)) * scale
        scores[code] = (local, int(c))
    ok = [a for a in scores if allowed is None or allowed(a)]
    if not ok:
        return None, scores
    top = max(scores[a][0] for a in ok)
    tol = 1e-12 * max(1.0, abs(top))  # the vectorised leave-one-out read uses the same tolerance
    near = [a for a in ok if scores[a][0] >= top - tol]
    best = min(near, key=lambda a: (-scores[a][1], a != default, a))
    return best, scores



def prior_means(tables: Mapping[str, Mapping[Any, tuple[float, int]]]) -> dict[Any, float]:
    """Per code, the mean over memory inputs of their mean reward (the shrinkage target)."""
    acc: dict[Any, list[float]] = {}
    for table in tables.values():
        for code, (mean, _) in table.items():
            a = acc.setdefault(code, [0.0, 0])
            a[0] += mean
            a[1] += 1
    return {code: s / c for code, (s, c) in acc.items()}
