"""The methods ``memrl poem eval`` compares, one function each, in a registry.

Every method answers one question: which prompt prefix does each test query get? A method is a
function ``(ctx) -> None`` that records one or more rows through ``ctx.record`` (GlobalE and
LocalE share one probe computation, so one function records both). :data:`METHODS` lists them in
the order they run; POEM runs first and pays for its own scoring, later methods reuse what the
:class:`~memrl.poem.evaluate.ScoreBook` already scored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memrl.poem.baselines import entropy_orders, kate_perms, random_perms, sample_probes
from memrl.poem.config import PoemConfig
from memrl.poem.optimizer import FitTrials, PoemOptimizer
from memrl.poem.orders import Order, sample_orders
from memrl.tasks.fewshot import Example, FewShotTask

logger = logging.getLogger(__name__)


@dataclass
class EvalContext:
    """What every method of one (task, seed) evaluation shares.

    ``book`` memoises LM scores of (query, prefix) pairs; ``vecs`` are the test queries'
    embeddings; ``cands`` the per-query demonstrations in kNN mode (None with fixed ones);
    ``fit_wall`` the seconds the POEM fit took (charged to the POEM rows).
    """

    task: FewShotTask
    scorer: Any
    config: PoemConfig
    optimizer: PoemOptimizer
    fit_record: FitTrials | None
    queries: list[Example]
    book: Any
    vecs: np.ndarray
    cands: list[list[Example]] | None
    fit_wall: float
    methods: Sequence[str]
    progress: bool
    random_draws: int
    probe_orders: int
    out: dict[str, Any] = field(default_factory=dict)
    last_predictions: list[int] | None = None

    def prefixes_of(self, perms: Sequence[Order]) -> list[str]:
        """The prompt prefix of each query under its order of the demonstrations."""
        demos = self.optimizer.demos
        if self.cands is None:
            return [self.task.prefix([demos[p] for p in perm]) for perm in perms]
        return [self.task.prefix([self.cands[i][p] for p in perm]) for i, perm in enumerate(perms)]

    def accuracy(self, prefixes: Sequence[str]) -> float:
        """Accuracy of the queries under ``prefixes``; the per-query predictions are kept and the
        next :meth:`record` stores them (``predictions``), so methods compare on the same items."""
        pred = self.book.predictions(prefixes, self.progress)
        self.last_predictions = [int(x) for x in pred]
        return float((pred == np.array([q.label for q in self.queries])).mean())

    def record(self, name: str, acc: float, start: float, *, fit_calls: int = 0, select_calls: int = 0,
               draws: int = 1, std: float = 0.0, extra: dict | None = None) -> None:
        self.out[name] = {"accuracy": acc, "accuracy_std": std, "lm_calls_fit": fit_calls,
                          "lm_calls_select": select_calls, "lm_calls_eval": len(self.queries) * draws,
                          "wall_s": time.perf_counter() - start, **(extra or {})}
        if self.last_predictions is not None:  # of the last accuracy() call (random: its last draw)
            self.out[name]["predictions"] = self.last_predictions
            self.last_predictions = None
        logger.info("%s seed %s %-12s acc %.4f", self.task.name, self.task.seed, name, acc)

    def wanted(self, name: str) -> bool:
        return name in self.methods


def _record_poem(ctx: EvalContext, name: str, opt: PoemOptimizer, start: float) -> float:
    """Select for every query with ``opt``, score, record; returns select() ms per query."""
    t_sel = time.perf_counter()
    sels = [opt.select_vec(v) for v in ctx.vecs]
    sel_ms = 1000 * (time.perf_counter() - t_sel) / len(ctx.queries)
    acc = ctx.accuracy([ctx.task.prefix(s.examples) for s in sels])
    extra = {"fallback_rate": float(np.mean([s.fallback for s in sels])),
             "setting": opt.setting.to_dict() if opt.setting is not None else None}
    if opt.loo_summary is not None:
        extra["loo_accuracy"] = opt.loo_summary["accuracy"]
    ctx.record(name, acc, start - ctx.fit_wall, fit_calls=ctx.optimizer.lm_calls_fit, extra=extra)
    return sel_ms


def poem(ctx: EvalContext) -> dict[str, Any]:
    """POEM as configured (by default its read setting chosen by leave-one-out on the fit)."""
    return {"select_ms_per_query": _record_poem(ctx, "poem", ctx.optimizer, time.perf_counter())}


def poem_identity(ctx: EvalContext) -> None:
    """Ablation of the rank encoding: the same fit's trials stored as concrete orders."""
    config, opt = ctx.config, ctx.optimizer
    if config.examples != "fixed" or opt.setting is None or opt.setting.encoding == "identity" or opt.matrix is None:
        logger.info("poem_identity skipped: needs fixed demonstrations, another encoding as the "
                    "main POEM row and a trial matrix")
        return
    start = time.perf_counter()
    _record_poem(ctx, "poem_identity", opt.with_encoding("identity"), start)


def oracle(ctx: EvalContext) -> None:
    """Evaluation as a matrix: every test query scored once under every tried order of the fixed
    demonstrations. Records the per-query oracle (some order is right) with the spread of the
    fixed orders' test accuracies (min / median / max): how much ordering can matter for this LM.
    Later fixed-order methods (best fixed, GlobalE/LocalE, POEM's identity picks) read these
    scores from the ScoreBook's memo."""
    from memrl.poem.evaluate import oracle_and_spread, order_matrix

    if ctx.config.examples != "fixed":
        logger.info("oracle skipped: needs fixed demonstrations")
        return
    start = time.perf_counter()
    opt = ctx.optimizer
    orders = ([tuple(int(x) for x in o) for o in opt.matrix.orders] if opt.matrix is not None
              else sample_orders(opt.n, ctx.config.budget, np.random.default_rng(ctx.config.seed + 1)))
    correct = order_matrix(ctx.book, ctx.task, opt.demos, orders, ctx.progress)
    stats = oracle_and_spread(correct)
    ctx.last_predictions = None
    ctx.record("oracle", stats.pop("oracle"), start, draws=len(orders),
               extra={**stats, "per_order_accuracy": {",".join(map(str, o)): float(a)
                                                      for o, a in zip(orders, correct.mean(axis=0))}})


def best_fixed(ctx: EvalContext) -> None:
    """The one concrete order with the best training accuracy, for every query."""
    if ctx.config.examples != "fixed":
        return
    start = time.perf_counter()
    best = ctx.optimizer.best_fixed_order()
    ctx.record("best_fixed", ctx.accuracy(ctx.prefixes_of([best] * len(ctx.queries))), start,
               fit_calls=ctx.optimizer.lm_calls_fit, extra={"order": list(best)})


def kate(ctx: EvalContext) -> None:
    """KATE orders (Liu et al. 2022): by similarity to the query, most similar last ('kate') or
    first ('kate_reverse')."""
    if ctx.cands is None:
        sims = ctx.vecs @ ctx.optimizer._demo_vecs.T  # (m, n) query-to-demo cosine
    else:
        sims = np.stack([np.sort(ctx.optimizer.candidates(v)[1])[::-1] for v in ctx.vecs])
    for name, last in (("kate", True), ("kate_reverse", False)):
        if ctx.wanted(name):
            start = time.perf_counter()
            ctx.record(name, ctx.accuracy(ctx.prefixes_of(kate_perms(sims, last))), start)


def kate_prefixes(task: FewShotTask, train_vecs: np.ndarray, query_vecs: np.ndarray, n: int) -> list[str]:
    """KATE as Liu et al. 2022 (pure): per query, the ``n`` training examples most similar to it,
    most similar last (ties: lower training index first in similarity)."""
    out = []
    for row in query_vecs @ train_vecs.T:
        top = np.argsort(-row, kind="stable")[:n][::-1]  # most similar last
        out.append(task.prefix([task.train[int(i)] for i in top]))
    return out


def kate_retrieved(ctx: EvalContext) -> None:
    """Real KATE: the ``n`` training examples most similar to each query (not a re-ordering of the
    fixed set), most similar last."""
    n = ctx.optimizer.n
    if len(ctx.task.train) < n:
        logger.info("kate_knn skipped: fewer than n training examples")
        return
    start = time.perf_counter()
    train_vecs = ctx.optimizer.encoder.encode([ex.key_text for ex in ctx.task.train])
    ctx.record("kate_knn", ctx.accuracy(kate_prefixes(ctx.task, train_vecs, ctx.vecs, n)), start)


def random_order(ctx: EvalContext) -> None:
    """A fresh uniform order per query; mean and std over ``random_draws`` draws."""
    start = time.perf_counter()
    rng = np.random.default_rng(1000 + (ctx.task.seed or 0))
    n = ctx.optimizer.n
    accs = [ctx.accuracy(ctx.prefixes_of(random_perms(n, len(ctx.queries), rng))) for _ in range(ctx.random_draws)]
    ctx.record("random", float(np.mean(accs)), start, draws=ctx.random_draws, std=float(np.std(accs)),
               extra={"draws": accs})


def entropy_methods(ctx: EvalContext) -> None:
    """GlobalE / LocalE (Lu et al. 2022): on a probe set sampled from the LM, the order whose
    histogram of predicted labels has the highest entropy (GlobalE), and the order whose
    per-probe label distributions have the highest mean entropy (LocalE); see
    :func:`memrl.poem.baselines.globale_locale_scores`."""
    config, task, scorer = ctx.config, ctx.task, ctx.scorer
    if config.examples != "fixed" or task.verbalizer is None or not hasattr(scorer, "model"):
        logger.warning("GlobalE/LocalE skipped: need fixed demonstrations, a label verbalizer "
                       "and a generating backend")
        return
    start = time.perf_counter()
    calls0 = scorer.calls
    demos = ctx.optimizer.demos
    perms = sample_orders(ctx.optimizer.n, config.budget, np.random.default_rng(config.seed + 2))
    probe_src = [perms[int(i)] for i in np.random.default_rng(config.seed + 3).choice(
        len(perms), size=min(ctx.probe_orders, len(perms)), replace=False)]
    probes = sample_probes(task, scorer, demos, probe_src, seed=config.seed)
    g, loc, _ = entropy_orders(task, scorer, demos, perms, probes)
    select_calls = scorer.calls - calls0
    shared = time.perf_counter() - start
    for name, perm in (("globale", g), ("locale", loc)):
        if ctx.wanted(name):
            s2 = time.perf_counter()
            ctx.record(name, ctx.accuracy(ctx.prefixes_of([perm] * len(ctx.queries))), s2 - shared,
                       select_calls=select_calls, extra={"order": list(perm), "probes": len(probes)})


def zero_shot(ctx: EvalContext) -> None:
    """No demonstrations: the instruction alone."""
    start = time.perf_counter()
    ctx.record("zero_shot", ctx.accuracy([ctx.task.template.instruction] * len(ctx.queries)), start)


@dataclass(frozen=True)
class Method:
    """A registered method: the rows it records and the function that records them."""

    rows: tuple[str, ...]
    run: Callable[[EvalContext], dict[str, Any] | None]
    needs_fit: bool = False


# In run order. POEM first: it pays for its own scoring.
REGISTRY: tuple[Method, ...] = (
    Method(("poem",), poem, needs_fit=True),
    Method(("poem_identity",), poem_identity, needs_fit=True),
    Method(("oracle",), oracle),
    Method(("best_fixed",), best_fixed, needs_fit=True),
    Method(("kate", "kate_reverse"), kate),
    Method(("kate_knn",), kate_retrieved),
    Method(("random",), random_order),
    Method(("globale", "locale"), entropy_methods),
    Method(("zero_shot",), zero_shot),
)
METHODS: tuple[str, ...] = tuple(row for m in REGISTRY for row in m.rows)
