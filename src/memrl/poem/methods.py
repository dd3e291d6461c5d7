"""The methods ``memrl poem eval`` compares, one function each, in a registry.

Every method answers one question: which prompt prefix does each test query get? A method is a
function ``(ctx) -> None`` that records one or more rows through ``ctx.record`` (GlobalE and
LocalE share one probe computation, so one function records both). :data:`METHODS` lists them in
the order they run; POEM runs first and pays for its own scoring, later methods reuse what the
:class:`~memrl.poem.scorebook.ScoreBook` already scored.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memrl.poem.baselines import entropy_orders, kate_perms, probes_per_order, sample_probes, unlabelled_probes
from memrl.poem.config import PoemConfig
from memrl.poem.optimizer import FitTrials, PoemOptimizer
from memrl.poem.orders import Order
from memrl.poem.scorebook import ScoreBook, correctness_matrix, oracle_and_spread, order_matrix
from memrl.poem.settings import Setting
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
    book: ScoreBook
    vecs: np.ndarray
    cands: list[list[Example]] | None
    fit_wall: float
    methods: Sequence[str]
    progress: bool
    min_probes: int
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
        if self.last_predictions is not None:  # of the last accuracy() call
            self.out[name]["predictions"] = self.last_predictions
            self.last_predictions = None
        logger.info("%s seed %s %-12s acc %.4f", self.task.name, self.task.seed, name, acc)

    def wanted(self, name: str) -> bool:
        return name in self.methods

    @property
    def fixed_set(self) -> bool:
        """The baselines run on the fixed demonstrations (``examples="fixed"`` or ``"choose"``)."""
        return self.cands is None

    def fixed_orders(self) -> list[Order]:
        """The candidate orders of the fixed demonstrations: those the fit tried (all ``n!`` when
        ``n! <= budget``), else a seeded sample of ``budget``. Every fixed-order method picks
        among these, so the oracle row's matrix holds every order they can choose. (With kNN
        demonstrations: the same orders of each query's own candidates.)"""
        fixed = self.optimizer.matrices.get("fixed")
        return fixed.order_tuples if fixed is not None else self.optimizer.shared_orders()


def _record_poem(ctx: EvalContext, name: str, opt: PoemOptimizer, start: float, *, fit_calls: int | None = None,
                 estimate: float | None = None) -> float:
    """Select for every query with ``opt``, score, record (its fit's LM calls unless ``fit_calls``
    says which of them it needed, its wall time from ``start``, the selection's honest ``estimate``
    when it is not ``opt``'s own); returns select() ms per query."""
    t_sel = time.perf_counter()
    sels = [opt.select_vec(v) for v in ctx.vecs]
    sel_ms = 1000 * (time.perf_counter() - t_sel) / len(ctx.queries)
    acc = ctx.accuracy([ctx.task.prefix(s.examples) for s in sels])
    extra = {"fallback_rate": float(np.mean([s.fallback for s in sels])), "source": opt.source,
             "setting": opt.setting.to_dict() if opt.setting is not None else None}
    if opt.loo_summary is not None:
        extra["loo_accuracy"] = opt.loo_summary["accuracy"]
    if opt.selection_summary is not None:  # the honest estimate beside the optimistic in-sample score
        extra["selection_estimate"] = opt.selection_summary["estimate"]
        extra["loo_accuracy"] = opt.selection_summary["loo_accuracy"]
    if estimate is not None:
        extra["selection_estimate"] = estimate
    ctx.record(name, acc, start, fit_calls=opt.lm_calls_fit if fit_calls is None else fit_calls, extra=extra)
    return sel_ms


def poem(ctx: EvalContext) -> dict[str, Any]:
    """POEM as configured (by default its read setting chosen by leave-one-out on the fit)."""
    start = time.perf_counter() - ctx.fit_wall  # the fit is charged to this row
    return {"select_ms_per_query": _record_poem(ctx, "poem", ctx.optimizer, start)}


def _fixed_source(opt: PoemOptimizer) -> str | None:
    """The source the fixed-set ablations read: the fixed demonstrations when fitted, else the
    source in use (None without a trial matrix)."""
    return "fixed" if "fixed" in opt.matrices else (opt.source if opt.matrices else None)


def poem_paper(ctx: EvalContext) -> None:
    """The paper's read rule (the ``paper`` preset: rank encoding, summed gold-label rewards of the
    k = 8 nearest inputs, no shrinkage) on this fit's memory of the fixed demonstrations (or of the
    kNN ones without them): zero extra LM calls. The fit inputs are the main POEM row's (the preset
    alone would also drop the dev inputs)."""
    source = _fixed_source(ctx.optimizer)
    if source is None:
        logger.info("poem_paper skipped: needs a trial matrix")
        return
    start = time.perf_counter()
    paper = ctx.optimizer.with_setting(PoemConfig.from_preset("paper").read_setting(), source=source)
    _record_poem(ctx, "poem_paper", paper, start, fit_calls=_source_calls(ctx.optimizer, source))


def _source_calls(opt: PoemOptimizer, source: str) -> int:
    """LM calls the fit spent on ``source``'s demonstrations (all of them for a loaded optimiser)."""
    cost = opt.fit_costs.get(source)
    return cost.lm_calls if cost is not None else opt.lm_calls_fit


def poem_guarded(ctx: EvalContext) -> None:
    """The guarded choice of read setting (``select="loo_guarded"``) on this fit's fixed
    demonstrations: the leave-one-out best setting if choosing among settings holds out on inputs
    it was not chosen on, else the global best order. Zero extra LM calls (with fixed
    demonstrations its orders are among the oracle's); the guard's figures are recorded."""
    opt = ctx.optimizer
    source = _fixed_source(opt)
    if source is None or len(set(opt.matrices[source].keys)) < 2:
        logger.info("poem_guarded skipped: needs a trial matrix of >= 2 distinct inputs")
        return
    start = time.perf_counter()
    res = opt.leave_one_out(guard=True, source=source)
    guarded = opt.with_setting(res.setting, source=source)
    guarded.loo_summary = res.summary()
    _record_poem(ctx, "poem_guarded", guarded, start, fit_calls=_source_calls(opt, source))
    ctx.out["poem_guarded"]["guard"] = res.guard


def poem_one_source(ctx: EvalContext, source: str) -> None:
    """The main selection restricted to one demonstration source (``examples="choose"`` only): what
    choosing the source adds over that source alone. Zero extra LM calls; the row's fit calls are
    that source's."""
    opt, summary = ctx.optimizer, ctx.optimizer.selection_summary or {}
    row = f"poem_{source}"
    choice = summary.get("source_choices", {}).get(source)
    if choice is None or source not in opt.matrices:
        logger.info("%s skipped: needs the selection over both demonstration sources (examples='choose')", row)
        return
    start = time.perf_counter()
    one = opt.with_setting(Setting(**{k: v for k, v in choice.items() if k != "source"}), source=source)
    _record_poem(ctx, row, one, start, fit_calls=_source_calls(opt, source),
                 estimate=summary["source_estimates"][source])


def poem_fixed(ctx: EvalContext) -> None:
    """The default selection restricted to the fixed demonstrations (see :func:`poem_one_source`)."""
    poem_one_source(ctx, "fixed")


def poem_knn(ctx: EvalContext) -> None:
    """POEM on per-query kNN demonstrations: each query gets KATE's ``n`` most similar training
    examples, ordered by POEM; there a similarity-rank code is the natural action (compare with
    ``kate_knn``, the same demonstrations in KATE's order). With ``examples="choose"`` it is the
    main selection restricted to the kNN source (no extra LM call); with ``examples="fixed"`` it
    is a fit of its own (``examples="knn"``), whose LM calls and time this row reports, the read
    setting chosen by the config's ``select``."""
    if ctx.config.examples == "choose":
        poem_one_source(ctx, "knn")
        return
    if ctx.config.examples != "fixed":
        logger.info("poem_knn skipped: the main POEM row already uses kNN demonstrations")
        return
    start = time.perf_counter()
    encoding = "rank" if ctx.config.encoding == "identity" else ctx.config.encoding  # identity needs fixed demos
    opt = PoemOptimizer(ctx.task, ctx.scorer, ctx.optimizer.encoder,
                        dataclasses.replace(ctx.config, examples="knn", encoding=encoding))
    opt.fit(progress=ctx.progress)
    _record_poem(ctx, "poem_knn", opt, start)


def poem_identity(ctx: EvalContext) -> None:
    """Ablation of the rank encoding: the same fit's trials of the fixed demonstrations stored as
    concrete orders (the main setting with ``encoding="identity"``)."""
    opt = ctx.optimizer
    if "fixed" not in opt.matrices or opt.setting is None or (opt.source == "fixed" and opt.setting.encoding == "identity"):
        logger.info("poem_identity skipped: needs a trial matrix of fixed demonstrations and another encoding "
                    "as the main POEM row")
        return
    start = time.perf_counter()
    ident = opt.with_setting(dataclasses.replace(opt.setting, encoding="identity"), source="fixed")
    _record_poem(ctx, "poem_identity", ident, start, fit_calls=_source_calls(opt, "fixed"))


def oracle(ctx: EvalContext) -> None:
    """Evaluation as a matrix: every test query scored once under every tried order of the fixed
    demonstrations. Records the per-query oracle (some order is right) with the spread of the
    fixed orders' test accuracies (min / median / max): how much ordering can matter for this LM.
    Later fixed-order methods (best fixed, GlobalE/LocalE, POEM's identity picks) read these
    scores from the ScoreBook's memo."""
    if not ctx.fixed_set:
        logger.info("oracle skipped: needs fixed demonstrations")
        return
    start = time.perf_counter()
    orders = ctx.fixed_orders()
    correct = order_matrix(ctx.book, ctx.task, ctx.optimizer.demos, orders, ctx.progress)
    stats = oracle_and_spread(correct)
    ctx.last_predictions = None
    ctx.record("oracle", stats.pop("oracle"), start, draws=len(orders),
               extra={**stats, "per_order_accuracy": {",".join(map(str, o)): float(a)
                                                      for o, a in zip(orders, correct.mean(axis=0))}})


def best_fixed(ctx: EvalContext) -> None:
    """The one concrete order with the best training accuracy, for every query."""
    if not ctx.fixed_set or not ctx.optimizer.order_stats:
        return
    start = time.perf_counter()
    best = ctx.optimizer.best_fixed_order()
    ctx.record("best_fixed", ctx.accuracy(ctx.prefixes_of([best] * len(ctx.queries))), start,
               fit_calls=_source_calls(ctx.optimizer, "fixed"), extra={"order": list(best)})


def kate(ctx: EvalContext) -> None:
    """KATE orders (Liu et al. 2022): by similarity to the query, most similar last ('kate') or
    first ('kate_reverse')."""
    if ctx.cands is None:
        sims = ctx.vecs @ ctx.optimizer.demo_vecs.T  # (m, n) query-to-demo cosine
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
    """A uniformly random candidate order per query, as its exact expectation: every query is scored
    under every candidate order (:meth:`EvalContext.fixed_orders`: all ``n!`` when they fit the
    budget, else the fit's uniform sample, so the expectation is unchanged; with kNN demonstrations
    the same orders of each query's own candidates), and the row's accuracy is the mean over orders
    of their accuracy. No draw: each query's ``expected_correct`` (the fraction of the orders that
    get it right) is kept instead of predictions, and paired tests use it
    (:func:`memrl.stats.paired_permutation_test`). With fixed demonstrations these are the oracle
    row's scores (look-ups); with kNN ones it costs queries x orders LM calls."""
    start = time.perf_counter()
    orders = ctx.fixed_orders()
    m = len(ctx.queries)
    correct = correctness_matrix(ctx.book, [ctx.prefixes_of([perm] * m) for perm in orders], ctx.progress)
    expected = correct.mean(axis=1)
    ctx.last_predictions = None
    ctx.record("random", float(expected.mean()), start, draws=len(orders),
               extra={"expected_correct": expected.tolist(), "candidate_orders": len(orders), "exact": True})


def entropy_methods(ctx: EvalContext) -> None:
    """GlobalE / LocalE (Lu et al. 2022) over the candidate orders of the fixed demonstrations.

    The probe set is sampled from the LM under *every* candidate order (as Lu et al.), enough
    samples per order for ``min_probes`` texts; empty and repeated texts are dropped and one more
    sample per order is drawn while fewer than ``min_probes`` distinct texts are left
    (:func:`memrl.poem.baselines.sample_probes`). The row records the distinct probe count
    (``probes``), the samples drawn for them (``probes_drawn``) and how many orders tied before
    the tie-break (:func:`memrl.poem.baselines.pick_entropy_orders`). Multiple-choice tasks, where a
    sampled question would need sampled choices, use ``min_probes`` unlabelled fit inputs instead
    and the entropies of the predicted choice index."""
    config, task, scorer, opt = ctx.config, ctx.task, ctx.scorer, ctx.optimizer
    if not ctx.fixed_set:
        logger.info("GlobalE/LocalE skipped: they rank orders of fixed demonstrations")
        return
    if task.verbalizer is not None and not hasattr(scorer, "model"):
        logger.warning("GlobalE/LocalE skipped: sampling the probe set needs a generating backend")
        return
    start = time.perf_counter()
    calls0 = scorer.calls
    perms = ctx.fixed_orders()
    if task.verbalizer is not None:
        per_order = probes_per_order(len(perms), ctx.min_probes)
        sampled = sample_probes(task, scorer, opt.demos, perms, samples_per_order=per_order, seed=config.seed,
                                min_distinct=ctx.min_probes)
        probes, drawn = sampled.probes, sampled.drawn
        source = f"sampled from the LM, {per_order} per candidate order, topped up to {ctx.min_probes} distinct"
    else:
        probes = unlabelled_probes(opt.default_inputs(), ctx.min_probes, seed=config.seed)
        drawn = len(probes)
        source = "unlabelled fit inputs (multiple choice)"
    distinct = len({(p.text, p.text_b, p.choices) for p in probes})
    g, loc, _, ties = entropy_orders(task, scorer, opt.demos, perms, probes)
    select_calls = scorer.calls - calls0
    shared = time.perf_counter() - start
    for name, perm in (("globale", g), ("locale", loc)):
        if ctx.wanted(name):
            s2 = time.perf_counter()
            ctx.record(name, ctx.accuracy(ctx.prefixes_of([perm] * len(ctx.queries))), s2 - shared,
                       select_calls=select_calls,
                       extra={"order": list(perm), "probes": distinct, "probes_drawn": drawn,
                              "min_probes": ctx.min_probes, "probe_source": source,
                              "candidate_orders": len(perms), "ties": ties[f"{name}_ties"]})


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


# In run order. POEM first: it pays for its own scoring; then the oracle scores every candidate
# order of the fixed demonstrations, so the fixed-order rows after it are look-ups.
REGISTRY: tuple[Method, ...] = (
    Method(("poem",), poem, needs_fit=True),
    Method(("poem_fixed",), poem_fixed, needs_fit=True),
    Method(("oracle",), oracle),
    Method(("poem_identity",), poem_identity, needs_fit=True),
    Method(("poem_paper",), poem_paper, needs_fit=True),
    Method(("poem_guarded",), poem_guarded, needs_fit=True),
    Method(("best_fixed",), best_fixed, needs_fit=True),
    Method(("kate", "kate_reverse"), kate),
    Method(("kate_knn",), kate_retrieved),
    Method(("poem_knn",), poem_knn),
    Method(("random",), random_order),
    Method(("globale", "locale"), entropy_methods),
    Method(("zero_shot",), zero_shot),
)
METHODS: tuple[str, ...] = tuple(row for m in REGISTRY for row in m.rows)
