"""Evaluate POEM against the baselines on one task and data seed (same LM, same demonstrations).

Every method turns into "which prompt prefix does each test query get". A
:class:`~memrl.poem.scorebook.ScoreBook` memoises scores per (query, prefix) and scores missing
pairs grouped by prefix, so methods that agree on a query's order (KATE and POEM often do) share
the LM work, and a prefix-caching backend runs each distinct order once. ``lm_calls_eval`` reports what a method needs on its own
(one call per test query and draw); ``wall_s`` is the incremental wall time in the order methods
run (POEM runs first and pays for its own scoring).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from memrl.poem.config import PoemConfig
from memrl.poem.methods import METHODS, REGISTRY, EvalContext
from memrl.poem.optimizer import PoemOptimizer
from memrl.poem.scorebook import ScoreBook
from memrl.tasks.fewshot import Example, FewShotTask

logger = logging.getLogger(__name__)


def replay_arrays(ctx: EvalContext) -> dict[str, np.ndarray]:
    """The numbers of one evaluation from which any read rule over the fixed demonstrations can
    be replayed with no LM call: the fit's trial matrix of the fixed demonstrations (``fit_*``), the
    test queries' embeddings and their scores under every candidate order (``test_scores``,
    ``(m, P, C)``, present when the oracle row scored them); with kNN demonstrations fitted too,
    their trial matrix (``knn_fit_*``: the selection and its estimate replay; their test prompts are
    not scored). Input texts are not kept (they are the dataset's): ``*_key_hash`` keeps which
    inputs share a key. Empty without a trial matrix."""
    opt = ctx.optimizer
    mx = opt.matrices.get("fixed")
    if mx is None:
        return {}
    out: dict[str, np.ndarray] = {**mx.to_arrays("fit_", hash_keys=True), "test_vecs": np.asarray(ctx.vecs),
                                  "test_gold": np.array([q.label for q in ctx.queries])}
    if "knn" in opt.matrices:
        out.update(opt.matrices["knn"].to_arrays("knn_fit_", hash_keys=True))
    if ctx.cands is None:
        demos = opt.demos
        out["demo_labels"] = np.array([d.label for d in demos])
        out["demo_vecs"] = np.asarray(opt.demo_vecs)  # query-to-demo sims decode rank codes
        orders = ctx.fixed_orders()
        cols = [ctx.book.memoised(ctx.task.prefix([demos[p] for p in perm])) for perm in orders]
        if all(c is not None for c in cols):  # same queries in every column, so the same padded width
            out["test_orders"] = np.array(orders)
            out["test_scores"] = np.stack(cols, axis=1)
    return out


def subsample(examples: Sequence[Example], max_n: int | None, seed: int = 0) -> list[Example]:
    """A fixed seeded subsample (the same for every method and data seed); all when ``max_n`` is None."""
    if max_n is None or max_n >= len(examples):
        return list(examples)
    idx = np.sort(np.random.default_rng(seed).choice(len(examples), size=max_n, replace=False))
    return [examples[int(i)] for i in idx]


def evaluate_task(
    task: FewShotTask,
    scorer: Any,
    encoder: Any,
    config: PoemConfig | None = None,
    *,
    methods: Sequence[str] = METHODS,
    max_test: int | None = 500,
    min_probes: int = 48,
    progress: bool = True,
    optimizer: PoemOptimizer | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Fit POEM (unless ``optimizer`` is given) and evaluate every method on the test split.

    Args:
        task, scorer, encoder, config: as for :class:`PoemOptimizer`.
        methods: subset of :data:`METHODS`.
        max_test: test subsample size (seeded, fixed), ``None`` for the full test set.
        min_probes: GlobalE/LocalE probe set size to reach: samples are drawn from every
            candidate order until at least this many distinct probe texts.
        optimizer: an already fitted optimiser (then its fit cost is reported, not re-run, and its
            config is used: ``config`` must then be None or equal to it).
        arrays: if given, filled with :func:`replay_arrays` after the last method (for saving
            beside the JSON result).

    Returns:
        JSON-able dict: ``methods[name] = {accuracy, accuracy_std, lm_calls_fit,
        lm_calls_select, lm_calls_eval, lm_calls_made, wall_s, predictions}`` plus the POEM fit
        report and select latency. ``lm_calls_*`` are what a method needs on its own;
        ``lm_calls_made`` what it sent to the LM in this run, after the memo of earlier rows (the
        fixed-order rows after ``oracle`` make none).
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if optimizer is not None:
        # the baselines must use the fitted optimiser's settings (n, kNN or fixed demonstrations),
        # or POEM and the baselines would be compared on different prompts
        if config is not None and config != optimizer.config:
            raise ValueError(f"evaluate_task: config {config.to_dict()} differs from the loaded optimiser's "
                             f"{optimizer.config.to_dict()}; pass config=None to use the optimiser's")
        config = optimizer.config
    config = config or PoemConfig()
    queries = subsample(task.test, max_test)
    book = ScoreBook(task, scorer, queries)
    out: dict[str, Any] = {"task": task.name, "seed": task.seed, "source": task.source,
                           "n_test": len(queries), "test_size": len(task.test),
                           "lm": getattr(scorer, "identity", "?"), "config": config.to_dict(),
                           "gold": [int(q.label) for q in queries], "items": [q.item_id for q in queries],
                           "methods": {}}

    wanted = [m for m in REGISTRY if set(m.rows) & set(methods)]
    t0 = time.perf_counter()
    record = None
    if optimizer is None:
        optimizer = PoemOptimizer(task, scorer, encoder, config)
        if any(m.needs_fit for m in wanted):
            fit = optimizer.fit(progress=progress)
            record = fit.record
            out["poem_fit"] = {"inputs": fit.inputs, "lm_calls": fit.lm_calls, "wall_s": fit.wall_s,
                               "mean_reward": fit.mean_reward, "n_examples": optimizer.n, "source": fit.source,
                               "setting": fit.setting.to_dict() if fit.setting else None,
                               "costs": {s: c.to_dict() for s, c in fit.costs.items()},
                               "loo": optimizer.loo_summary, "selection": optimizer.selection_summary}
        else:  # the baselines need the demonstrations, not the memory: no LM call
            optimizer.setup_examples()
    fit_wall = time.perf_counter() - t0
    vecs = encoder.encode([q.key_text for q in queries])
    cands = [optimizer.candidates(v)[0] for v in vecs] if config.examples == "knn" else None
    ctx = EvalContext(task=task, scorer=scorer, config=config, optimizer=optimizer, fit_record=record,
                      queries=queries, book=book, vecs=vecs, cands=cands, fit_wall=fit_wall, methods=methods,
                      progress=progress, min_probes=min_probes, out=out["methods"])
    for method in wanted:
        calls0 = scorer.calls
        out.update(method.run(ctx) or {})
        for row in method.rows:  # what the method (all its rows together) sent to the LM, after earlier rows
            if row in ctx.out:
                ctx.out[row]["lm_calls_made"] = scorer.calls - calls0
    out["lm_calls_total"] = scorer.calls
    if arrays is not None:
        arrays.update(replay_arrays(ctx))
    return out
