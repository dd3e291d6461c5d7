"""Reward diagnostics: what each reward term of one GRPO batch tells the policy.

This module owns pure array functions (numpy in, floats out; no state, no I/O, no torch) that
describe, per step and per reward term:

* :func:`within_group_auc`: does the term rank a question's right completions above its wrong
  ones? GRPO only compares completions of one prompt, so only within-group rankings matter.
* :func:`length_correlation`: does the term follow completion length where correctness cannot
  explain it (in groups that are all right or all wrong)? That shows a length bias.
* :func:`advantage_variance_share`: how much of the GRPO advantage each term actually drives.
* :func:`batch_diagnostics`: all three for every term, as flat, JSON-able metric names.

Conventions shared by every function:

* ``groups`` holds one id per completion (any hashable); completions of one prompt share it.
* ``correct`` is 0/1 or a float score; ``> 0.5`` means correct (as ``CorrectnessReward``).
* A NaN term value (TRL turns a reward function's ``None`` into NaN) leaves that completion out
  of the AUC and the length correlation. For the variance shares NaN counts as 0, as in TRL's
  ``nansum`` over reward functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

SCALE_REWARDS = ("none", "group", "batch")
TOTAL = "total"  # the weighted sum of all terms, reported next to them by batch_diagnostics


class GroupStat(NamedTuple):
    """A statistic pooled over groups, and how many groups it used (NaN with 0 groups)."""

    value: float
    groups: int


def _vector(name: str, values: Any, n: int | None = None) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be one value per completion (1-D), got shape {x.shape}")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"{name} has {x.shape[0]} values for {n} completions")
    return x


def _group_index(groups: Sequence[Any]) -> tuple[np.ndarray, int]:
    """Dense ids ``0..k-1`` in order of first appearance (groups may be ints or strings)."""
    ids: dict[Any, int] = {}
    inverse = np.array([ids.setdefault(g, len(ids)) for g in list(groups)], dtype=np.int64)
    return inverse, len(ids)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + ½ P(pos = neg) over all pairs (the Mann-Whitney AUC)."""
    diff = pos[:, None] - neg[None, :]
    return float((np.count_nonzero(diff > 0) + 0.5 * np.count_nonzero(diff == 0)) / diff.size)


def flat_outcome_share(correct: Any, groups: Sequence[Any]) -> float:
    """Share of the groups whose completions were all right or all wrong (``c > 0.5`` or not, over
    the finite values): the outcome reward gives GRPO no signal there, whatever the other rewards do.

    >>> flat_outcome_share([1, 0, 1, 1, 0, 0], [0, 0, 1, 1, 2, 2])  # only group 0 varies
    0.6666666666666666
    """
    c = _vector("correct", correct)
    inverse, k = _group_index(groups)
    if inverse.shape[0] != c.shape[0]:
        raise ValueError(f"groups has {inverse.shape[0]} ids for {c.shape[0]} completions")
    if k == 0:
        return math.nan
    flat = 0
    for g in range(k):
        right = c[(inverse == g) & np.isfinite(c)] > 0.5
        flat += bool(right.all() or not right.any())
    return flat / k


def within_group_auc(term: Any, correct: Any, groups: Sequence[Any]) -> GroupStat:
    """Mean within-group AUC of ``term`` for telling correct from wrong completions.

    For each group ``g`` with at least one correct (``c > 0.5``) and one wrong completion,

        AUC_g = (1 / (|P_g| |W_g|)) Σ_{i ∈ P_g} Σ_{j ∈ W_g} (1{t_i > t_j} + ½ 1{t_i = t_j}),

    and the result is the unweighted mean of ``AUC_g`` over those groups. 1 means the term always
    ranks right above wrong, 0.5 that it carries no correctness signal, 0 that it is inverted.
    Groups whose correctness does not vary give GRPO nothing to rank and are skipped.

    Returns:
        ``GroupStat(value, groups)``: ``value`` is NaN and ``groups`` 0 when no group varies.

    >>> within_group_auc([3, 1, 2, 2], [1, 0, 1, 0], ["a", "a", "b", "b"])  # a: 1, b: tie ½
    GroupStat(value=0.75, groups=2)
    """
    t = _vector("term", term)
    c = _vector("correct", correct, t.shape[0])
    inverse, k = _group_index(groups)
    if inverse.shape[0] != t.shape[0]:
        raise ValueError(f"groups has {inverse.shape[0]} ids for {t.shape[0]} completions")
    valid = np.isfinite(t) & np.isfinite(c)
    aucs = []
    for g in range(k):
        member = (inverse == g) & valid
        pos, neg = t[member & (c > 0.5)], t[member & (c <= 0.5)]
        if pos.size and neg.size:
            aucs.append(_auc(pos, neg))
    return GroupStat(float(np.mean(aucs)) if aucs else math.nan, len(aucs))


def length_correlation(term: Any, lengths: Any, groups: Sequence[Any], correct: Any = None) -> GroupStat:
    """Pooled within-group Pearson correlation of ``term`` with completion length.

    Only groups **without correctness variance** are used when ``correct`` is given (all right
    or all wrong, so correctness cannot be what the term follows); all groups when it is None.
    Each used group must have at least two completions with finite term and length. Values and
    lengths are centred on their group's means, then pooled:

        r = Σ_i (t_i − t̄_g(i)) (ℓ_i − ℓ̄_g(i)) / sqrt(Σ_i (t_i − t̄_g(i))² · Σ_i (ℓ_i − ℓ̄_g(i))²).

    Pooling weights a group by its spread. Centring removes between-question differences, which
    GRPO never sees. −1 means the term falls exactly linearly with length (a shortness reward).

    Returns:
        ``GroupStat(value, groups)``: NaN when no group qualifies or either pooled variance is 0
        (e.g. a term constant within every group).

    >>> length_correlation([-10, -20, -5, -7], [10, 20, 5, 7], [0, 0, 1, 1], correct=[1, 1, 0, 0])
    GroupStat(value=-1.0, groups=2)
    """
    t = _vector("term", term)
    ln = _vector("lengths", lengths, t.shape[0])
    inverse, k = _group_index(groups)
    if inverse.shape[0] != t.shape[0]:
        raise ValueError(f"groups has {inverse.shape[0]} ids for {t.shape[0]} completions")
    c = None if correct is None else _vector("correct", correct, t.shape[0])
    valid = np.isfinite(t) & np.isfinite(ln)
    num = sst = ssl = 0.0
    used = 0
    for g in range(k):
        member = inverse == g
        if c is not None:
            right = c[member & np.isfinite(c)] > 0.5
            if right.any() and not right.all():
                continue  # correctness varies: the AUC's business, not this one's
        member &= valid
        if np.count_nonzero(member) < 2:
            continue
        tc, lc = t[member] - t[member].mean(), ln[member] - ln[member].mean()
        num += float(tc @ lc)
        sst += float(tc @ tc)
        ssl += float(lc @ lc)
        used += 1
    if used == 0 or sst <= 0.0 or ssl <= 0.0:
        return GroupStat(math.nan, used)
    # clip: rounding can put an exact ±1 a hair outside [-1, 1]
    return GroupStat(float(np.clip(num / math.sqrt(sst * ssl), -1.0, 1.0)), used)


def advantage_variance_share(
    terms: Mapping[str, Any],
    groups: Sequence[Any],
    weights: Mapping[str, float] | None = None,
    scale_rewards: str = "none",
    eps: float = 1e-4,
) -> dict[str, float]:
    """Share of the GRPO advantage variance that each reward term contributes.

    TRL's GRPO (``multi_objective_aggregation="sum_then_normalize"``) sums the weighted terms,
    ``R = Σ_k w_k r_k``, and takes ``A = (R − mean_g R) / s_g``, where ``s_g`` is
    ``std_g(R) + eps`` for ``scale_rewards="group"`` (Bessel-corrected, as TRL), one batch-wide
    constant for ``"batch"``, and 1 for ``"none"``. Centring is linear, so with
    ``A_k = w_k (r_k − mean_g r_k) / s_g`` the advantage splits exactly as ``A = Σ_k A_k``, and

        share_k = Σ_i A_k,i A_i / Σ_i A_i²  =  cov(A_k, A) / var(A),    Σ_k share_k = 1

    (every ``A`` has mean 0 in each group, so these are the pooled covariance and variance). A
    share can be **negative**: a term anti-correlated with the rest cancels part of their signal.
    A share above 1 means the other terms cancel part of this one. A batch-wide ``s`` cancels in
    the ratio, so ``"batch"`` gives the same shares as ``"none"``. ``"group"`` weights each group
    by ``1/s_g²``.

    NaN term values count as 0 and rows where every term is NaN are dropped, as TRL does. All
    shares are NaN when the advantage is 0 everywhere (no group has any reward variance).

    For TRL's other aggregation, ``"normalize_then_sum"``, pass each term already normalised
    within its group, ``(r_k − mean_g r_k) / (std_g r_k + eps)``, with ``scale_rewards="none"``:
    its final batch-wide normalisation is a constant and cancels in the shares.

    >>> s = advantage_variance_share({"a": [1, 0, 1, 0], "b": [0, 0, 1, 1]}, [0, 0, 0, 0])
    >>> {k: round(v, 6) for k, v in s.items()}  # a and b uncorrelated: half each
    {'a': 0.5, 'b': 0.5}
    """
    if not terms:
        raise ValueError("advantage_variance_share needs at least one reward term")
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={scale_rewards!r} is not one of {SCALE_REWARDS} (TRL's GRPOConfig values)")
    names = list(terms)
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"weights given for unknown term(s) {unknown}; terms: {names}")
    first = _vector(f"terms[{names[0]!r}]", terms[names[0]])
    raw = np.stack([_vector(f"terms[{k!r}]", terms[k], first.shape[0]) for k in names], axis=1)
    inverse, k_groups = _group_index(groups)
    if inverse.shape[0] != raw.shape[0]:
        raise ValueError(f"groups has {inverse.shape[0]} ids for {raw.shape[0]} completions")
    keep = ~np.isnan(raw).all(axis=1)
    x = np.nan_to_num(raw[keep], nan=0.0) * np.array([float(weights.get(k, 1.0)) for k in names])
    inverse = inverse[keep]
    total = x.sum(axis=1)
    scale = np.ones(total.shape[0])
    centred = np.empty_like(x)
    for g in range(k_groups):
        member = inverse == g
        if not member.any():
            continue
        block = x[member]
        # a term constant within the group has exactly no advantage; its mean can be off by an
        # ulp (3 × 0.1 / 3), and that noise must not turn into a share
        centred[member] = np.where((block == block[0]).all(axis=0), 0.0, block - block.mean(axis=0))
        if scale_rewards == "group" and np.count_nonzero(member) > 1:
            scale[member] = np.std(total[member], ddof=1) + eps
    parts = centred / scale[:, None]
    adv = parts.sum(axis=1)
    var = float(adv @ adv)
    # Terms that cancel exactly (a = 1 − b) leave only rounding noise in the sum: relative test.
    if var == 0.0 or var <= 1e-20 * float((parts * parts).sum()):
        return {k: math.nan for k in names}
    return {k: float(parts[:, j] @ adv) / var for j, k in enumerate(names)}


def batch_diagnostics(
    terms: Mapping[str, Any],
    correct: Any,
    groups: Sequence[Any],
    lengths: Any = None,
    *,
    weights: Mapping[str, float] | None = None,
    scale_rewards: str = "none",
) -> dict[str, float]:
    """Every diagnostic for every term of one batch, as flat metric names.

    Keys, for each term ``<name>`` and for ``total`` (the weighted sum ``Σ_k w_k r_k``, NaN
    counting as 0 as in TRL):

    * ``diag/<name>/auc``: :func:`within_group_auc`;
    * ``diag/<name>/len_corr``: :func:`length_correlation` over groups without correctness
      variance (only when ``lengths`` is given);
    * ``diag/<name>/adv_share``: :func:`advantage_variance_share` (terms only; total's is 1);
    * ``diag/auc_groups`` and ``diag/len_corr_groups``: how many groups the total's AUC and length
      correlation used;
    * ``diag/flat_outcome_frac``: :func:`flat_outcome_share`, the share of groups without correctness
      variance (what :func:`memrl.grpo.callbacks.outcome_stall` watches).

    **Undefined values are omitted, never NaN**: a batch where no group's correctness varies has
    no ``auc`` keys. Every value is then a finite float, safe for strict JSON and for loggers that
    average over steps. A missing key means "undefined this step", not 0.

    >>> d = batch_diagnostics({"correct": [1, 0, 1, 1]}, [1, 0, 1, 1], [0, 0, 1, 1], [5, 9, 4, 6])
    >>> d["diag/correct/auc"], d["diag/correct/adv_share"], "diag/correct/len_corr" in d
    (1.0, 1.0, False)
    """
    if not terms:
        raise ValueError("batch_diagnostics needs at least one reward term")
    if TOTAL in terms:
        raise ValueError(f"a reward term may not be named {TOTAL!r}: that name is the weighted sum's")
    names = list(terms)
    w = dict(weights or {})
    stacked = np.stack([_vector(f"terms[{k!r}]", terms[k]) * float(w.get(k, 1.0)) for k in names], axis=1)
    total = np.where(np.isnan(stacked).all(axis=1), np.nan, np.nansum(stacked, axis=1))
    out: dict[str, float] = {}
    stats: dict[str, tuple[GroupStat, GroupStat | None]] = {}
    for name, values in [*((k, terms[k]) for k in names), (TOTAL, total)]:
        auc = within_group_auc(values, correct, groups)
        lc = None if lengths is None else length_correlation(values, lengths, groups, correct)
        stats[name] = (auc, lc)
        if math.isfinite(auc.value):
            out[f"diag/{name}/auc"] = auc.value
        if lc is not None and math.isfinite(lc.value):
            out[f"diag/{name}/len_corr"] = lc.value
    for name, share in advantage_variance_share(terms, groups, weights, scale_rewards).items():
        if math.isfinite(share):
            out[f"diag/{name}/adv_share"] = share
    total_auc, total_lc = stats[TOTAL]
    out["diag/auc_groups"] = float(total_auc.groups)
    flat = flat_outcome_share(correct, groups)
    if math.isfinite(flat):
        out["diag/flat_outcome_frac"] = flat
    if total_lc is not None:
        out["diag/len_corr_groups"] = float(total_lc.groups)
    return out
