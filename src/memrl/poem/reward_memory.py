"""POEM's memory of a fit: per training input a reward table, built from the trial matrix, and its
read for one query.

:func:`memory_from_matrix` turns a :class:`~memrl.poem.matrix.TrialMatrix` into the memory under
one read :class:`~memrl.poem.settings.Setting` (no LM call); :func:`read_memory` is what
:meth:`memrl.poem.PoemOptimizer.select_vec` and :class:`memrl.poem.replay.Replay` do per query:
retrieve the nearest inputs, apply the read rule (:func:`memrl.poem.reading.best_action`) and
decode the winning code with the query's own candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memrl.memory import EpisodicMemory
from memrl.poem.matrix import TrialMatrix, decode, encode, fallback_perm
from memrl.poem.orders import Order
from memrl.poem.reading import best_action, prior_means
from memrl.poem.settings import Setting


@dataclass
class MemoryRead:
    """What :func:`read_memory` chose for one query: the order ``perm`` of its candidates, its
    ``code``, the neighbours read (ids, similarities), the top action scores, and whether the
    fallback order was used because no neighbour offered a realisable code."""

    perm: Order
    code: Any
    neighbours: list[str]
    neighbour_sims: list[float]
    top: dict[Any, tuple[float, int]]
    fallback: bool


def memory_from_matrix(mx: TrialMatrix, st: Setting, *, encoder_name: str = "?") -> tuple[
        EpisodicMemory, dict[str, dict[Any, tuple[float, int]]], dict[Any, float], dict[Order, list[float]]]:
    """POEM's memory under read setting ``st``, built from a trial matrix with no LM call.

    Returns ``(memory, tables, prior, order_stats)``: one memory key per distinct input key (its
    embedding), per key a table ``code -> (mean reward over repeats, trials)`` (duplicate inputs
    merge), the per-code prior (:func:`prior_means`), and per concrete order ``[sum correct,
    sum reward, trials]`` (meaningful with fixed demonstrations only: the best-fixed-order baseline).
    """
    reward, correct, tried = mx.rewards(st.reward), mx.rewards("correct"), mx.tried
    orders = mx.order_tuples
    sums: dict[str, dict[Any, list[float]]] = {}
    order_stats: dict[Order, list[float]] = {}
    for i, p in zip(*np.nonzero(tried)):
        perm = orders[p]
        code = encode(st.encoding, perm, mx.sims[i], mx.labels[i])
        acc = sums.setdefault(mx.keys[i], {}).setdefault(code, [0.0, 0])
        acc[0] += float(reward[i, p])
        acc[1] += 1
        s = order_stats.setdefault(perm, [0.0, 0.0, 0])
        s[0] += float(correct[i, p])
        s[1] += float(reward[i, p])
        s[2] += 1
    tables = {key: {code: (s / c, int(c)) for code, (s, c) in t.items()} for key, t in sums.items()}
    keys = list(dict.fromkeys(mx.keys))
    first = {k: j for j, k in reversed(list(enumerate(mx.keys)))}
    key_vecs = np.asarray(mx.vecs)[[first[k] for k in keys]]
    memory = EpisodicMemory(key_vecs.shape[1], max_keys=max(1, len(keys)), max_values=1, encoder_name=encoder_name)
    # EpisodicMemory stores vector values; the reward tables live beside it, keyed by id.
    memory.add(keys, key_vecs, key_vecs)
    return memory, tables, prior_means(tables), order_stats


def read_memory(memory: EpisodicMemory, tables: dict[str, dict[Any, tuple[float, int]]], prior: dict[Any, float],
                st: Setting, query_vec: np.ndarray, sims: Sequence[float], labels: Sequence[int], *,
                most_similar_last: bool = True) -> MemoryRead:
    """POEM's choice for one query (embedding ``query_vec``) whose candidate demonstrations have
    similarities ``sims`` and labels ``labels``: read the ``st.k`` nearest keys' tables with
    :func:`best_action` and decode the winning code with the query's own ranks. No LM call."""
    fallback_code = encode(st.encoding, fallback_perm(sims, most_similar_last), sims, labels)
    ids: list[str] = []
    nsims: list[float] = []
    if len(memory):
        k = len(memory) if st.k == "all" else int(st.k)
        s, found = memory.search(query_vec[None], k)
        ids, nsims = found[0], [float(x) for x in s[0]]

    def realisable(code: Any) -> bool:
        try:
            decode(st.encoding, code, sims, labels)
            return True
        except ValueError:
            return False

    code, scores = best_action([tables[i] for i in ids], read=st.read, default=fallback_code, prior=prior,
                               shrink=st.shrink, allowed=realisable if st.encoding == "label" else None)
    used_fallback = code is None
    if code is None:
        code = fallback_code
    perm = decode(st.encoding, code, sims, labels)
    top = dict(sorted(scores.items(), key=lambda kv: -kv[1][0])[:5])
    return MemoryRead(perm, code, ids, nsims, top, used_fallback)
