"""The full trial matrix of a POEM fit, and leave-one-out choice of POEM's settings from it.

A fit scores every (training input, tried order) pair once. :class:`TrialMatrix` keeps, per pair,
the LM's normalised label scores (the numbers every reward is computed from), so any reward,
encoding, ``k``, read rule or shrinkage can be evaluated later with **zero LM calls**.

:func:`loo_select` scores every candidate setting by leave-one-out accuracy over the training
inputs: for input ``i``, the memory is the other inputs' rows, the setting picks an order for
``i`` exactly as :meth:`memrl.poem.PoemOptimizer.select` would, and the pick counts as correct
when that order's trial on ``i`` was correct. Everything here is pure numpy over the matrix.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from memrl.poem.orders import (
    decode_label_order,
    decode_order,
    encode_label_order,
    encode_order,
    kate_code,
    label_ranks,
    similarity_ranks,
)
from memrl.poem.reading import pick_codes
from memrl.poem.rewards import compute_reward
from memrl.poem.settings import ENCODINGS, READS, REWARDS, Setting
from memrl.tasks.fewshot import text_hash

MATRIX_VERSION = 1
# leave-one-out searches every encoding, reward and read rule, and these k and shrinkage values
LOO_KS: tuple[int | str, ...] = (1, 2, 4, 8, 16, "all")
LOO_SHRINKS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class TrialMatrix:
    """Every scored trial of one fit.

    Attributes:
        orders: ``(P, n)`` the distinct concrete orders tried (``orders[p][j]`` = index into the
            input's candidate demonstrations of the one at prompt position ``j``).
        scores: ``(m, P, C)`` normalised label log-probabilities of input ``i`` under order
            ``p``; NaN where ``p`` was not tried on ``i``; ``-inf`` pads inputs with fewer than
            ``C`` choices (multiple choice).
        gold: ``(m,)`` gold label / choice index of each input.
        sims: ``(m, n)`` similarity of each candidate demonstration to the input.
        labels: ``(m, n)`` label of each candidate demonstration.
        vecs: ``(m, d)`` input embeddings.
        keys: ``m`` input key texts (the memory's key ids).
    """

    orders: np.ndarray
    scores: np.ndarray
    gold: np.ndarray
    sims: np.ndarray
    labels: np.ndarray
    vecs: np.ndarray
    keys: list[str]

    def __post_init__(self) -> None:
        m, P = len(self.keys), len(self.orders)
        if self.scores.shape[:2] != (m, P) or self.gold.shape != (m,) or self.vecs.shape[0] != m:
            raise ValueError(f"inconsistent trial matrix: {m} keys, {P} orders, scores {self.scores.shape}, "
                             f"gold {self.gold.shape}, vecs {self.vecs.shape}")

    @property
    def tried(self) -> np.ndarray:
        """``(m, P)`` bool: order ``p`` was scored on input ``i``."""
        return ~np.isnan(self.scores[:, :, 0])

    @property
    def n(self) -> int:
        return int(self.orders.shape[1])

    @property
    def order_tuples(self) -> list[tuple[int, ...]]:
        """:attr:`orders` as hashable tuples of ints, in column order."""
        return [tuple(int(x) for x in o) for o in self.orders]

    def ranks(self, i: int) -> tuple[int, ...]:
        return similarity_ranks(self.sims[i])

    def label_ranks(self, i: int) -> tuple[int, ...]:
        return label_ranks(self.labels[i], self.sims[i])

    def rewards(self, kind: str) -> np.ndarray:
        """``(m, P)`` reward ``kind`` of every trial (NaN where untried), from the stored scores."""
        m, P, C = self.scores.shape
        tried = self.tried
        flat = np.where(np.isnan(self.scores), 0.0, self.scores).reshape(m * P, C)
        out = compute_reward(kind, flat, np.repeat(self.gold, P)).reshape(m, P)
        return np.where(tried, out, np.nan)

    # ----------------------------------------------------------------- persistence
    ARRAYS = ("orders", "scores", "gold", "sims", "labels", "vecs")  # every field but keys

    def to_arrays(self, prefix: str = "", *, hash_keys: bool = False) -> dict[str, np.ndarray]:
        """The fields as named arrays (``prefix`` + field name). ``hash_keys`` stores each key's
        16-hex SHA-1 under ``key_hash`` instead of its text under ``keys``: enough to tell which
        inputs share a key, without keeping the dataset's text."""
        out = {prefix + f: getattr(self, f) for f in self.ARRAYS}
        if hash_keys:
            out[prefix + "key_hash"] = np.array([text_hash(k) for k in self.keys], dtype=np.str_)
        else:
            out[prefix + "keys"] = np.array(self.keys, dtype=np.str_)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "") -> TrialMatrix:
        """Inverse of :meth:`to_arrays` (keys from ``keys`` or, failing that, ``key_hash``)."""
        keys = arrays[prefix + "keys"] if prefix + "keys" in arrays else arrays[prefix + "key_hash"]
        return cls(**{f: np.asarray(arrays[prefix + f]) for f in cls.ARRAYS}, keys=[str(k) for k in keys])

    def save(self, path: str | Path) -> None:
        """Write as one ``.npz`` (exact float64 arrays; keys as a unicode array)."""
        with open(path, "wb") as fh:
            np.savez(fh, version=np.array(MATRIX_VERSION), **self.to_arrays())

    @classmethod
    def load(cls, path: str | Path) -> TrialMatrix:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["version"])
            if version != MATRIX_VERSION:
                raise ValueError(f"{path}: trial matrix format v{version}, expected v{MATRIX_VERSION}")
            return cls.from_arrays(z)


def build_matrix(trials: Sequence[tuple[int, tuple[int, ...], np.ndarray]], *, gold: Sequence[int],
                 sims: Sequence[np.ndarray], labels: Sequence[Sequence[int]], vecs: np.ndarray,
                 keys: Sequence[str]) -> TrialMatrix:
    """Assemble a :class:`TrialMatrix` from ``(input index, order, label scores (C_i,))`` trials."""
    orders = sorted({tuple(int(x) for x in perm) for _, perm, _ in trials})
    index = {p: j for j, p in enumerate(orders)}
    width = max(len(s) for _, _, s in trials)
    scores = np.full((len(keys), len(orders), width), np.nan)
    for i, perm, s in trials:
        row = np.full(width, -np.inf)
        row[: len(s)] = s
        scores[i, index[tuple(perm)]] = row
    return TrialMatrix(orders=np.array(orders, dtype=np.int64).reshape(len(orders), -1), scores=scores,
                       gold=np.asarray(gold, dtype=np.int64), sims=np.asarray(sims, dtype=np.float64),
                       labels=np.asarray(labels, dtype=np.int64), vecs=np.asarray(vecs), keys=list(keys))


# ---------------------------------------------------------------------------- encodings
def encode(encoding: str, perm: Sequence[int], sims: Sequence[float], labels: Sequence[int]) -> tuple:
    """The code of concrete order ``perm`` for a query whose candidates have ``sims``/``labels``."""
    if encoding == "identity":
        return tuple(int(p) for p in perm)
    if encoding == "rank":
        return encode_order(perm, similarity_ranks(sims))
    if encoding == "label":
        return encode_label_order(perm, labels, label_ranks(labels, sims))
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {list(ENCODINGS)}")


def decode(encoding: str, code: Sequence, sims: Sequence[float], labels: Sequence[int]) -> tuple[int, ...]:
    """Inverse of :func:`encode` for the query's own ``sims``/``labels`` (ValueError if the code
    cannot be realised: a label-aware code whose label pattern the candidates lack)."""
    if encoding == "identity":
        return tuple(int(p) for p in code)
    if encoding == "rank":
        return decode_order(code, similarity_ranks(sims))
    if encoding == "label":
        return decode_label_order(code, labels, label_ranks(labels, sims))
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {list(ENCODINGS)}")


def fallback_perm(sims: Sequence[float], most_similar_last: bool = True) -> tuple[int, ...]:
    """The KATE order of the candidates (the fallback and the tie-break preference)."""
    return decode_order(kate_code(len(sims), most_similar_last), similarity_ranks(sims))


@dataclass
class CodedMatrix:
    """The trial matrix seen through one encoding: ``codes`` (sorted, so index order is the
    lexicographic tie-break), ``code_of[i, p]`` (code index of order ``p`` on input ``i``, -1 if
    untried), ``dec[i, a]`` (order index that code ``a`` realises on input ``i``, -1 if it cannot
    be realised or that order was never tried), ``ok[i, a]`` (code ``a`` can be realised with input
    ``i``'s candidates), ``default[i]`` (code of the KATE order on ``i``)."""

    codes: list[tuple]
    code_of: np.ndarray
    dec: np.ndarray
    ok: np.ndarray
    default: np.ndarray


def code_matrix(mx: TrialMatrix, encoding: str, *, most_similar_last: bool = True) -> CodedMatrix:
    m, P = mx.tried.shape
    orders = mx.order_tuples
    order_index = {o: p for p, o in enumerate(orders)}
    tried = mx.tried
    per = [[encode(encoding, orders[p], mx.sims[i], mx.labels[i]) for p in range(P)] for i in range(m)]
    defaults = [encode(encoding, fallback_perm(mx.sims[i], most_similar_last), mx.sims[i], mx.labels[i])
                for i in range(m)]
    codes = sorted({per[i][p] for i in range(m) for p in range(P) if tried[i, p]} | set(defaults))
    cidx = {c: a for a, c in enumerate(codes)}
    code_of = np.full((m, P), -1, dtype=np.int64)
    for i in range(m):
        for p in range(P):
            if tried[i, p]:
                code_of[i, p] = cidx[per[i][p]]
    dec = np.full((m, len(codes)), -1, dtype=np.int64)
    ok = np.zeros((m, len(codes)), dtype=bool)
    for i in range(m):
        for a, c in enumerate(codes):
            try:
                dec[i, a] = order_index.get(decode(encoding, c, mx.sims[i], mx.labels[i]), -1)
                ok[i, a] = True
            except ValueError:
                pass
    return CodedMatrix(codes, code_of, dec, ok, np.array([cidx[d] for d in defaults], dtype=np.int64))


def coded_rewards(reward: np.ndarray, cm: CodedMatrix) -> np.ndarray:
    """``(m, A)`` reward of code ``a`` on input ``i`` (NaN where untried)."""
    m, _ = reward.shape
    out = np.full((m, len(cm.codes)), np.nan)
    i_idx, p_idx = np.nonzero(cm.code_of >= 0)
    out[i_idx, cm.code_of[i_idx, p_idx]] = reward[i_idx, p_idx]
    return out


# ---------------------------------------------------------------------------- leave-one-out
# the guard's fallback (reward, shrink): every query gets the code most often right on the other
# inputs, in the identity encoding (a concrete order) or, without it (kNN demonstrations), rank codes
GLOBAL_CODE = ("correct", 1.0)
GUARD_FOLDS = 5


@dataclass
class LooResult:
    """Outcome of :func:`loo_select`.

    Attributes:
        setting: the chosen setting.
        accuracy: its leave-one-out accuracy over the training inputs.
        gold_prob: mean gold-label probability of the orders it chose (the first tie-break).
        coverage: fraction of inputs whose chosen order had been tried on them (the others count
            as the input's mean accuracy over its tried orders: the random-order expectation).
        n_inputs: inputs scored.
        table: every candidate setting with its scores, best first.
        per_input: ``(settings, inputs)`` leave-one-out correctness, rows in ``table`` order.
        guard: with ``loo_select(guard=True)``: ``{nested_accuracy, global_accuracy, kept,
            best_setting, folds}`` (see :func:`nested_selection_accuracy`); else None.
        grid_index: each ``table`` row's position in the grid (the last tie-break; the guard takes
            the global-order row that comes first in the grid).
    """

    setting: Setting
    accuracy: float
    gold_prob: float
    coverage: float
    n_inputs: int
    table: list[dict[str, Any]] = field(default_factory=list)
    per_input: np.ndarray | None = field(default=None, repr=False)
    guard: dict[str, Any] | None = None
    grid_index: np.ndarray | None = field(default=None, repr=False)

    def summary(self, top: int = 10) -> dict[str, Any]:
        out = {"setting": self.setting.to_dict(), "accuracy": self.accuracy, "gold_prob": self.gold_prob,
               "coverage": self.coverage, "n_inputs": self.n_inputs, "settings_scored": len(self.table),
               "top": self.table[:top]}
        if self.guard is not None:
            out["guard"] = self.guard
        return out

    def with_guard(self, folds: int = GUARD_FOLDS) -> LooResult:
        """This selection with the guard applied (no LM call, no setting scored again).

        The guard asks whether choosing among the settings generalises at all: the selection's
        accuracy on inputs it was not chosen on (:func:`nested_selection_accuracy`, ``folds`` folds)
        is compared with the leave-one-out accuracy of the global best order (the identity encoding,
        or rank codes without it; ``correct`` reward, shrink 1: every query gets the order most often
        right on the other inputs). Unless the selection is strictly better, the global order is
        chosen. It reads only ``table`` and ``per_input``, whose first row is always the
        leave-one-out best, so applying it to an already guarded result gives the same result.
        """
        if self.per_input is None or self.grid_index is None:
            raise ValueError("the guard needs the per-input leave-one-out table: this LooResult has none "
                             "(one loaded from a saved summary); score it again with loo_select")
        encodings = {r["setting"]["encoding"] for r in self.table}
        enc = "identity" if "identity" in encodings else "rank"
        reward, shrink = GLOBAL_CODE
        glob = [j for j, r in enumerate(self.table)
                if (r["setting"]["encoding"], r["setting"]["reward"], r["setting"]["shrink"]) == (enc, reward, shrink)]
        if not glob:
            raise ValueError("the guard needs the global-order setting in the grids: encoding "
                             f"{enc!r}, reward {reward!r}, shrink {shrink}")
        # the first in grid order (with fixed demonstrations every k / read of it picks the same orders;
        # rank codes over sampled orders may differ through the tie-break on neighbours that tried a code)
        j_glob = min(glob, key=lambda j: self.grid_index[j])
        nested = nested_selection_accuracy(self.per_input, folds)
        best, glob_row = self.table[0], self.table[j_glob]
        kept = nested > glob_row["accuracy"]
        checked = {"nested_accuracy": nested, "global_accuracy": glob_row["accuracy"], "kept": bool(kept),
                   "best_setting": best["setting"], "best_accuracy": best["accuracy"], "folds": folds}
        chosen = best if kept else glob_row
        return replace(self, setting=Setting(**chosen["setting"]), accuracy=chosen["accuracy"],
                       gold_prob=chosen["gold_prob"], coverage=chosen["coverage"], guard=checked)


def input_similarity(mx: TrialMatrix) -> np.ndarray:
    """``(m, m)`` cosine similarity of the inputs, with each input and its duplicates (same key)
    at ``-inf`` so that leave-one-out never reads an input's own row."""
    sim = np.asarray(mx.vecs, dtype=np.float64) @ np.asarray(mx.vecs, dtype=np.float64).T
    keys = np.array(mx.keys, dtype=object)
    sim[keys[:, None] == keys[None, :]] = -np.inf
    return sim


def loo_scores(mx: TrialMatrix, encoding: str, reward: str, *, ks: Sequence[int | str] = LOO_KS,
               reads: Sequence[str] = READS, shrinks: Sequence[float] = LOO_SHRINKS,
               sim: np.ndarray | None = None, most_similar_last: bool = True,
               cm: CodedMatrix | None = None) -> list[dict[str, Any]]:
    """Leave-one-out scores of every ``(k, read, shrink)`` for one encoding and reward.

    Returns one row per setting: ``{setting, accuracy, gold_prob, coverage, per_input, gold_probs}``
    (see :class:`LooResult`; ``per_input`` is each input's leave-one-out correctness, ``(m,)``;
    ``gold_probs`` the gold probability of the order chosen for it, NaN where that order was not
    tried on it). ``sim`` (default :func:`input_similarity`) says which rows each input reads: a
    ``-inf`` entry is never read (held-out folds mask whole columns, :mod:`memrl.poem.selection`).
    """
    m = len(mx.keys)
    if m < 2:
        raise ValueError("leave-one-out needs at least 2 training inputs")
    cm = cm or code_matrix(mx, encoding, most_similar_last=most_similar_last)
    R = coded_rewards(mx.rewards(reward), cm)
    correct = mx.rewards("correct")
    gp = mx.rewards("gold_prob")
    base = np.nanmean(correct, axis=1)  # an input's accuracy over its tried orders
    has = ~np.isnan(R)
    filled = np.where(has, R, 0.0)
    sim = input_similarity(mx) if sim is None else sim
    others = np.isfinite(sim).sum(axis=1)  # rows each input may read (duplicates excluded)
    order = np.argsort(-sim, axis=1, kind="stable")
    tot, totc = filled.sum(axis=0), has.sum(axis=0)
    # the prior without input i (and its duplicates): all rows minus the excluded ones
    same = ~np.isfinite(sim)
    g_sum = tot[None] - same.astype(np.float64) @ filled
    g_cnt = totc[None] - same.astype(np.float64) @ has.astype(np.float64)
    g_mean = np.divide(g_sum, g_cnt, out=np.zeros_like(g_sum), where=g_cnt > 0)
    allowed = cm.ok
    max_other = int(others.max())
    wanted: dict[int, list[int | str]] = {}
    for k in ks:
        eff = max_other if k == "all" else min(int(k), max_other)
        wanted.setdefault(eff, []).append(k)
    rows_out: list[dict[str, Any]] = []
    acc_sum = np.zeros_like(filled)
    acc_cnt = np.zeros_like(filled)
    ar = np.arange(m)
    for r in range(max_other):
        nb = order[:, r]
        valid = (r < others)[:, None]  # rows with fewer readable neighbours stop adding
        acc_sum += np.where(valid, filled[nb], 0.0)
        acc_cnt += np.where(valid, has[nb], False)
        if r + 1 not in wanted:
            continue
        n_neigh = np.minimum(r + 1, others)
        for read in reads:
            for shrink in shrinks:
                pick = pick_codes(acc_sum, acc_cnt, g_mean, g_cnt, n_neigh, read=read, shrink=float(shrink),
                                  allowed=allowed, default=cm.default)
                pick = np.where(pick >= 0, pick, cm.default)
                p = cm.dec[ar, pick]
                ok = p >= 0
                c = np.where(ok, correct[ar, np.maximum(p, 0)], np.nan)
                g = np.where(ok, gp[ar, np.maximum(p, 0)], np.nan)
                covered = ~np.isnan(c)
                per_input = np.where(covered, c, base)
                gprob = float(np.nanmean(g)) if covered.any() else float("nan")
                for k in wanted[r + 1]:
                    rows_out.append({"setting": Setting(encoding, reward, k, read, float(shrink)),
                                     "accuracy": float(per_input.mean()), "gold_prob": gprob,
                                     "coverage": float(covered.mean()), "per_input": per_input,
                                     "gold_probs": g})
    return rows_out


def nested_selection_accuracy(per_input: np.ndarray, folds: int = GUARD_FOLDS, seed: int = 0) -> float:
    """Accuracy of *choosing the best row* of ``per_input``, measured on inputs it was not chosen on.

    ``per_input[s, i]`` is input ``i``'s leave-one-out correctness under setting ``s``. The best row
    of the whole table is optimistic: over hundreds of settings, one fits the noise of these very
    inputs (the winner's curse). Here the inputs are split into ``folds`` seeded folds; for each
    fold, the setting with the best mean on the other folds is chosen (ties: the earlier row) and
    scored on that fold. Returns the mean over all inputs. No LM call.

    >>> nested_selection_accuracy(np.array([[1., 1, 1, 1], [0, 0, 0, 0]]), folds=2)
    1.0
    >>> nested_selection_accuracy(np.eye(4), folds=4)  # each setting right once, by luck: 0.25 in-sample
    0.0
    """
    per_input = np.asarray(per_input, dtype=np.float64)
    m = per_input.shape[1]
    if per_input.ndim != 2 or per_input.shape[0] < 1 or m < 2:
        raise ValueError(f"nested_selection_accuracy needs a (settings >= 1, inputs >= 2) array, got {per_input.shape}")
    folds = max(2, min(int(folds), m))
    fold_of = np.empty(m, dtype=int)
    fold_of[np.random.default_rng(seed).permutation(m)] = np.arange(m) % folds
    held = np.empty(m, dtype=np.float64)
    for f in range(folds):
        test = fold_of == f
        chosen = int(np.argmax(per_input[:, ~test].mean(axis=1)))  # first of equal means
        held[test] = per_input[chosen, test]
    return float(held.mean())


def loo_select(mx: TrialMatrix, *, encodings: Sequence[str] = ("identity", "label", "rank"),
               rewards: Sequence[str] = REWARDS, ks: Sequence[int | str] = LOO_KS,
               reads: Sequence[str] = READS, shrinks: Sequence[float] = LOO_SHRINKS,
               most_similar_last: bool = True, guard: bool = False, folds: int = GUARD_FOLDS) -> LooResult:
    """Choose the setting with the best leave-one-out accuracy over the training inputs.

    Every combination of the grids is scored (:func:`loo_scores`); no LM call. Ties: higher mean
    gold probability of the chosen orders, then the earlier setting in grid order (encodings as
    given, rewards as given, ``k`` ascending as given, reads as given, shrinks as given).

    ``guard=True`` applies :meth:`LooResult.with_guard` (``folds`` folds) to the result.
    """
    sim = input_similarity(mx)
    rows: list[dict[str, Any]] = []
    for enc in encodings:
        cm = code_matrix(mx, enc, most_similar_last=most_similar_last)
        for reward in rewards:
            rows += loo_scores(mx, enc, reward, ks=ks, reads=reads, shrinks=shrinks, sim=sim,
                               most_similar_last=most_similar_last, cm=cm)
    grid = {s: j for j, s in enumerate(Setting(*x) for x in itertools.product(
        encodings, rewards, ks, reads, [float(s) for s in shrinks]))}
    rows.sort(key=lambda r: (-r["accuracy"], -np.nan_to_num(r["gold_prob"], nan=-1.0), grid[r["setting"]]))
    per_input = np.stack([r.pop("per_input") for r in rows])
    for r in rows:
        del r["gold_probs"]
    best = rows[0]
    table = [{**r, "setting": r["setting"].to_dict()} for r in rows]
    res = LooResult(best["setting"], best["accuracy"], best["gold_prob"], best["coverage"], len(mx.keys), table,
                    per_input=per_input, grid_index=np.array([grid[r["setting"]] for r in rows]))
    return res.with_guard(folds) if guard else res
