"""Choosing POEM's read setting, and its demonstration source, with an honest estimate of the choice.

Leave-one-out (:func:`memrl.poem.matrix.loo_scores`) scores every candidate setting on the fit
inputs. Taking the best of hundreds of such scores is optimistic: on 60–190 inputs some setting fits
their noise (the winner's curse), and its own score says nothing about that. Here a *selection rule*
turns the leave-one-out table into one choice, and the rule is itself scored by **nested
cross-validation**: the fit inputs are split into folds; for each fold the whole selection (the
leave-one-out table on the other folds' inputs, with a memory of those inputs only, then the rule)
is run again, and its choice is scored on the held-out fold with the memory of the other folds. The
mean over the held-out inputs is the rule's estimate: what choosing this way scores on inputs it
has not seen. Pure numpy on trial matrices; no LM call.

A candidate is a *(source, setting)*: the demonstration source (``fixed``: one set of
demonstrations for every query; ``knn``: each query's most similar training examples) and the read
setting over that source's trial matrix. Sources must hold the same fit inputs in the same order, so
their leave-one-out columns compare input by input.

Rules (:data:`RULES`):

* ``best``: the highest leave-one-out accuracy (ties: higher mean gold probability of the chosen
  orders, then grid order) — :func:`memrl.poem.matrix.loo_select`'s choice.
* ``one_se``: the *simplest* candidate whose leave-one-out accuracy is within one standard error of
  the best one's (Breiman et al. 1984, the one-standard-error rule). The standard error is that of
  the best candidate's mean per-input correctness, ``std(ddof=1) / sqrt(inputs)``. *Simplest* =
  smallest :func:`complexity`, ``(1 − shrink) / k_eff`` (``k_eff`` = the neighbours actually read:
  ``k`` capped at the inputs in memory, ``all`` = all of them): the weight one neighbour's rewards
  carry in a query's choice. ``shrink = 1`` (one global order, whatever ``k``) is the simplest;
  ``k = 1, shrink = 0`` (copy the nearest input) the most complex. Ties on complexity: higher
  accuracy, then gold probability, then grid order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memrl.poem.matrix import LOO_KS, LOO_SHRINKS, CodedMatrix, TrialMatrix, code_matrix, input_similarity, loo_scores
from memrl.poem.settings import READS, REWARDS, Setting

SOURCES = ("fixed", "knn")
# encodings each source is read under: a concrete order (identity) means nothing across queries
# whose demonstrations differ
SOURCE_ENCODINGS = {"fixed": ("identity", "label", "rank"), "knn": ("label", "rank")}
FOLDS = 5
REPEATS = 3  # the estimate is averaged over this many fold assignments (one split's luck is large)


@dataclass(frozen=True)
class Candidate:
    """One choice the selection can make: a demonstration ``source`` and a read ``setting``."""

    source: str
    setting: Setting

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, **self.setting.to_dict()}

    def __str__(self) -> str:
        return f"source={self.source} {self.setting}"


@dataclass
class GridScores:
    """Leave-one-out scores of every candidate on a common set of inputs.

    Attributes:
        candidates: in grid order (sources, then encodings, rewards, k, reads, shrinks as listed).
        correct: ``(S, m)`` each input's correctness under each candidate (the input's mean over
            its tried orders where the chosen order was not tried on it).
        gold_prob: ``(S, m)`` gold probability of the order chosen for the input (NaN: not tried).
        readable: ``(m,)`` the inputs the memory held (the others were only read *from* it).
    """

    candidates: list[Candidate]
    correct: np.ndarray
    gold_prob: np.ndarray
    readable: np.ndarray

    def accuracy(self, rows: np.ndarray) -> np.ndarray:
        """``(S,)`` mean correctness over the inputs ``rows`` (a boolean mask)."""
        return self.correct[:, rows].mean(axis=1)

    def mean_gold_prob(self, rows: np.ndarray) -> np.ndarray:
        """``(S,)`` mean gold probability of the chosen orders over ``rows`` (-1 where none was tried)."""
        g = self.gold_prob[:, rows]
        tried = ~np.isnan(g)
        total = np.where(tried, g, 0.0).sum(axis=1)
        return np.where(tried.any(axis=1), total / np.maximum(tried.sum(axis=1), 1), -1.0)


def check_sources(sources: Mapping[str, TrialMatrix]) -> None:
    """Raise ``ValueError`` unless every source is known and all hold the same inputs (at least 2
    distinct ones) in one order."""
    if not sources:
        raise ValueError("the selection needs at least one demonstration source's trial matrix")
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown demonstration source(s) {unknown}; choose from {list(SOURCES)}")
    keys = [mx.keys for mx in sources.values()]
    if any(k != keys[0] for k in keys[1:]):
        raise ValueError("the demonstration sources' trial matrices hold different fit inputs; the selection "
                         "compares them input by input, so fit every source on the same inputs")
    if len(set(keys[0])) < 2:
        raise ValueError(f"the selection needs at least 2 distinct fit inputs, got {len(set(keys[0]))}")


@dataclass
class Grid:
    """The candidate grid: per source its encodings, and the rewards, ``k``, reads and shrinks."""

    encodings: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(SOURCE_ENCODINGS))
    rewards: Sequence[str] = REWARDS
    ks: Sequence[int | str] = LOO_KS
    reads: Sequence[str] = READS
    shrinks: Sequence[float] = LOO_SHRINKS


class Scorer:
    """Scores the candidate grid over a fixed set of sources, with each source's coded matrices
    computed once (the folds of the nested cross-validation reuse them)."""

    def __init__(self, sources: Mapping[str, TrialMatrix], grid: Grid | None = None, *,
                 most_similar_last: bool = True) -> None:
        check_sources(sources)
        self.sources = {s: sources[s] for s in SOURCES if s in sources}
        self.grid = grid or Grid()
        self.most_similar_last = most_similar_last
        self._coded: dict[tuple[str, str], CodedMatrix] = {}
        first = next(iter(self.sources.values()))
        self.keys = list(first.keys)
        self.sim = input_similarity(first)

    @property
    def m(self) -> int:
        return len(self.keys)

    def coded(self, source: str, encoding: str) -> CodedMatrix:
        if (source, encoding) not in self._coded:
            self._coded[source, encoding] = code_matrix(self.sources[source], encoding,
                                                        most_similar_last=self.most_similar_last)
        return self._coded[source, encoding]

    def score(self, readable: np.ndarray | None = None) -> GridScores:
        """Leave-one-out over the grid, the memory holding only the ``readable`` inputs (default:
        all); every input, readable or not, is scored reading the readable ones other than itself."""
        readable = np.ones(self.m, dtype=bool) if readable is None else np.asarray(readable, dtype=bool)
        sim = self.sim.copy()
        sim[:, ~readable] = -np.inf
        cands, correct, gold = [], [], []
        g = self.grid
        for source, mx in self.sources.items():
            for enc in g.encodings.get(source, ()):
                cm = self.coded(source, enc)
                for reward in g.rewards:
                    rows = loo_scores(mx, enc, reward, ks=g.ks, reads=g.reads, shrinks=g.shrinks, sim=sim,
                                      most_similar_last=self.most_similar_last, cm=cm)
                    order = {r["setting"]: r for r in rows}
                    for st in (Setting(enc, reward, k, read, float(s))
                               for k, read, s in itertools.product(g.ks, g.reads, g.shrinks)):
                        cands.append(Candidate(source, st))
                        correct.append(order[st]["per_input"])
                        gold.append(order[st]["gold_probs"])
        return GridScores(cands, np.stack(correct), np.stack(gold), readable)


# ---------------------------------------------------------------------------- rules
def complexity(setting: Setting, memory_inputs: int) -> float:
    """How much one neighbour's rewards weigh in a query's choice: ``(1 − shrink) / k_eff``.

    ``k_eff`` is the number of neighbours read (``k`` capped at ``memory_inputs``; ``all`` = all).
    0 for a global order (``shrink = 1``); 1 for copying the nearest input's best order.

    >>> complexity(Setting("identity", "correct", 1, "sum", 0.0), 60)
    1.0
    >>> complexity(Setting("rank", "margin", "all", "mean", 0.5), 50), complexity(Setting("rank", "margin", 8, "sum", 1.0), 50)
    (0.01, 0.0)
    """
    k_eff = memory_inputs if setting.k == "all" else min(int(setting.k), memory_inputs)
    return (1.0 - setting.shrink) / max(1, k_eff)


def _ranked(scores: GridScores, rows: np.ndarray) -> list[int]:
    """Candidate indices best first: accuracy, then mean gold probability, then grid order."""
    acc, gp = scores.accuracy(rows), scores.mean_gold_prob(rows)
    return sorted(range(len(scores.candidates)), key=lambda j: (-acc[j], -gp[j], j))


def rule_best(scores: GridScores, rows: np.ndarray) -> int:
    """The highest leave-one-out accuracy over ``rows`` (ties: gold probability, grid order)."""
    return _ranked(scores, rows)[0]


def rule_one_se(scores: GridScores, rows: np.ndarray) -> int:
    """The simplest candidate (:func:`complexity`) within one standard error of the best."""
    acc, gp = scores.accuracy(rows), scores.mean_gold_prob(rows)
    best = rule_best(scores, rows)
    n = int(rows.sum())
    se = float(np.std(scores.correct[best, rows], ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    memory = int(scores.readable.sum()) - 1  # an input reads the others
    eligible = [j for j in range(len(scores.candidates)) if acc[j] >= acc[best] - se - 1e-12]
    return min(eligible, key=lambda j: (complexity(scores.candidates[j].setting, memory), -acc[j], -gp[j], j))


RULES: dict[str, Callable[[GridScores, np.ndarray], int]] = {"best": rule_best, "one_se": rule_one_se}


# ---------------------------------------------------------------------------- nested estimate
def fold_of_inputs(keys: Sequence[str], folds: int, seed: int = 0) -> np.ndarray:
    """``(m,)`` fold of each input: distinct keys are dealt into ``folds`` seeded folds (copies of one
    input share a fold, so a held-out input's copy never sits among the inputs that choose)."""
    distinct = list(dict.fromkeys(keys))
    if len(distinct) < 2:
        raise ValueError(f"nested cross-validation needs at least 2 distinct fit inputs, got {len(distinct)}")
    folds = max(2, min(int(folds), len(distinct)))
    fold = np.empty(len(distinct), dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(len(distinct))] = np.arange(len(distinct)) % folds
    of_key = dict(zip(distinct, fold.tolist()))
    return np.array([of_key[k] for k in keys], dtype=np.int64)


@dataclass
class HeldOutChoice:
    """What :func:`select_candidate` chose, with its honest estimate.

    Attributes:
        candidate: the chosen source and setting (the rule applied to every fit input).
        estimate: nested cross-validated accuracy of the whole selection: what choosing this way
            scored on inputs it had not seen (the number to compare with test accuracy).
        loo_accuracy: the chosen candidate's own leave-one-out accuracy (in-sample: optimistic).
        loo_best: the highest leave-one-out accuracy of any candidate (more optimistic still).
        rule, folds, repeats, n_inputs, candidates_scored: how it was made.
        fold_choices: the candidate each fold's selection chose, repeat by repeat (how stable the
            choice is).
        source_choices, source_estimates: with several sources, per source the rule restricted to
            that source's candidates — its choice on every fit input, and its nested estimate (what
            the demonstration choice adds over either source alone).
    """

    candidate: Candidate
    estimate: float
    loo_accuracy: float
    loo_best: float
    rule: str
    folds: int
    repeats: int
    n_inputs: int
    candidates_scored: int
    fold_choices: list[Candidate] = field(default_factory=list)
    source_choices: dict[str, Candidate] = field(default_factory=dict)
    source_estimates: dict[str, float] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.candidate.source

    @property
    def setting(self) -> Setting:
        return self.candidate.setting

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "setting": self.setting.to_dict(), "estimate": self.estimate,
                "loo_accuracy": self.loo_accuracy, "loo_best": self.loo_best, "rule": self.rule,
                "folds": self.folds, "repeats": self.repeats, "n_inputs": self.n_inputs,
                "candidates_scored": self.candidates_scored,
                "fold_choices": [c.to_dict() for c in self.fold_choices],
                "source_choices": {s: c.to_dict() for s, c in self.source_choices.items()},
                "source_estimates": self.source_estimates}


def fold_scores(scorer: Scorer, *, folds: int = FOLDS, repeats: int = REPEATS,
                seed: int = 0) -> list[list[tuple[np.ndarray, GridScores]]]:
    """Per repeat (fold assignment seeded ``seed + repeat``), per fold of :func:`fold_of_inputs`: the
    held-out mask and the grid scored with a memory of the other folds' inputs (the held-out inputs
    are scored reading them; the others by leave-one-out among themselves)."""
    out = []
    for r in range(repeats):
        fold = fold_of_inputs(scorer.keys, folds, seed + r)
        out.append([(fold == f, scorer.score(readable=fold != f)) for f in range(int(fold.max()) + 1)])
    return out


def nested_estimate(per_repeat: Sequence[Sequence[tuple[np.ndarray, GridScores]]], rule: str,
                    only_source: str | None = None) -> tuple[float, list[Candidate]]:
    """Nested cross-validated accuracy of selecting by ``rule`` (see the module docstring) from
    :func:`fold_scores` — per repeat the mean over every input of its held-out correctness, then the
    mean over repeats — and the candidate each fold chose. ``only_source``: the rule restricted to
    that source's candidates."""
    pick = RULES[rule]
    means: list[float] = []
    chosen: list[Candidate] = []
    for per_fold in per_repeat:
        held = np.empty(len(per_fold[0][0]), dtype=np.float64)
        for out, scores in per_fold:
            scores = restrict(scores, only_source)
            j = pick(scores, ~out)
            held[out] = scores.correct[j, out]
            chosen.append(scores.candidates[j])
        means.append(float(held.mean()))
    return float(np.mean(means)), chosen


def restrict(scores: GridScores, source: str | None) -> GridScores:
    """``scores`` with only ``source``'s candidates (all when ``source`` is None)."""
    if source is None:
        return scores
    keep = [j for j, c in enumerate(scores.candidates) if c.source == source]
    if not keep:
        raise ValueError(f"no candidate of source {source!r} in the grid")
    return GridScores([scores.candidates[j] for j in keep], scores.correct[keep], scores.gold_prob[keep],
                      scores.readable)


def select_candidate(sources: Mapping[str, TrialMatrix], *, rule: str = "one_se", folds: int = FOLDS,
                     repeats: int = REPEATS, seed: int = 0, grid: Grid | None = None,
                     most_similar_last: bool = True) -> HeldOutChoice:
    """Choose a (source, setting) by ``rule`` on every fit input, and estimate that choice honestly
    by nested cross-validation (``folds`` seeded folds over the distinct inputs). No LM call.

    Args:
        sources: demonstration source -> its trial matrix (the same fit inputs in each).
        rule: one of :data:`RULES`.
        folds, repeats, seed: the outer folds of the nested cross-validation, over ``repeats`` seeded
            fold assignments (the estimate is their mean).
        grid: the candidates (default: every encoding of each source × rewards × ``k`` × reads ×
            shrinks of :func:`memrl.poem.matrix.loo_select`).
        most_similar_last: the fallback order is KATE's (most similar last) or its reverse.
    """
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose one of {list(RULES)}")
    scorer = Scorer(sources, grid, most_similar_last=most_similar_last)
    full = scorer.score()
    every = np.ones(scorer.m, dtype=bool)
    j = RULES[rule](full, every)
    acc = full.accuracy(every)
    per_fold = fold_scores(scorer, folds=folds, repeats=repeats, seed=seed)
    estimate, chosen = nested_estimate(per_fold, rule)
    by_source: dict[str, Candidate] = {}
    by_source_estimate: dict[str, float] = {}
    if len(scorer.sources) > 1:
        for source in scorer.sources:
            only = restrict(full, source)
            by_source[source] = only.candidates[RULES[rule](only, every)]
            by_source_estimate[source] = nested_estimate(per_fold, rule, only_source=source)[0]
    return HeldOutChoice(full.candidates[j], estimate, float(acc[j]), float(acc.max()), rule,
                         len(per_fold[0]), len(per_fold), scorer.m, len(full.candidates), chosen, by_source,
                         by_source_estimate)
