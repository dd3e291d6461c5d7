"""Evaluate POEM against the baselines on one task and data seed (same LM, same demonstrations).

Every method turns into "which prompt prefix does each test query get". A :class:`ScoreBook`
memoises scores per (query, prefix) and scores missing pairs grouped by prefix, so methods that
agree on a query's order (KATE and POEM often do) share the LM work, and a prefix-caching
backend runs each distinct order once. ``lm_calls_eval`` reports what a method needs on its own
(one call per test query and draw); ``wall_s`` is the incremental wall time in the order methods
run (POEM runs first and pays for its own scoring).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from memrl.poem.baselines import entropy_orders, kate_perms, random_perms, sample_probes
from memrl.poem.config import PoemConfig
from memrl.poem.optimizer import PoemOptimizer
from memrl.poem.orders import Order, sample_orders
from memrl.tasks.fewshot import Example, FewShotTask

logger = logging.getLogger(__name__)

METHODS = ("poem", "poem_identity", "best_fixed", "kate", "kate_reverse", "random", "globale", "locale", "zero_shot")


class ScoreBook:
    """Memoised label scores of test queries under prompt prefixes.

    Args:
        task: the task (renders suffixes and continuations).
        scorer: LM backend.
        queries: the test examples; pairs refer to them by index.
    """

    def __init__(self, task: FewShotTask, scorer: Any, queries: Sequence[Example]) -> None:
        self.task, self.scorer, self.queries = task, scorer, list(queries)
        self._memo: dict[tuple[int, str], np.ndarray] = {}

    def scores(self, prefixes: Sequence[str], progress: bool = False) -> np.ndarray:
        """``(m, C)`` scores of query ``i`` under ``prefixes[i]`` for every test query ``i``."""
        from tqdm.auto import tqdm

        missing: dict[str, list[int]] = {}
        for i, prefix in enumerate(prefixes):
            if (i, prefix) not in self._memo:
                missing.setdefault(prefix, []).append(i)
        for prefix, idx in tqdm(missing.items(), desc="score", unit="prompt", disable=not progress, leave=False):
            batch = [self.queries[i] for i in idx]
            res = self.scorer.score(prefix, [self.task.suffix(q) for q in batch], self.task.continuations(batch))
            for i, row in zip(idx, res.normalised(self.task.length_normalise)):
                self._memo[(i, prefix)] = row
        return np.stack([self._memo[(i, p)] for i, p in enumerate(prefixes)])

    def accuracy(self, prefixes: Sequence[str], progress: bool = False) -> float:
        gold = np.array([q.label for q in self.queries])
        return float((self.scores(prefixes, progress).argmax(axis=1) == gold).mean())


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
    random_draws: int = 5,
    probe_orders: int = 8,
    progress: bool = True,
    optimizer: PoemOptimizer | None = None,
) -> dict[str, Any]:
    """Fit POEM (unless ``optimizer`` is given) and evaluate every method on the test split.

    Args:
        task, scorer, encoder, config: as for :class:`PoemOptimizer`.
        methods: subset of :data:`METHODS`.
        max_test: test subsample size (seeded, fixed), ``None`` for the full test set.
        random_draws: draws of the random-order baseline (mean and std reported).
        probe_orders: orders whose sampled continuations form the GlobalE/LocalE probe set
            (one probe each); all orders are then scored on it.
        optimizer: an already fitted optimiser (then its fit cost is reported, not re-run, and its
            config is used: ``config`` must then be None or equal to it).

    Returns:
        JSON-able dict: ``methods[name] = {accuracy, accuracy_std, lm_calls_fit,
        lm_calls_select, lm_calls_eval, wall_s}`` plus the POEM fit report and select latency.
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
                           "lm": getattr(scorer, "identity", "?"), "config": config.to_dict(), "methods": {}}

    t0 = time.perf_counter()
    if optimizer is None:
        optimizer = PoemOptimizer(task, scorer, encoder, config)
        fit = optimizer.fit(progress=progress)
        out["poem_fit"] = {"inputs": fit.inputs, "lm_calls": fit.lm_calls, "wall_s": fit.wall_s,
                           "mean_reward": fit.mean_reward}
    fit_wall = time.perf_counter() - t0
    vecs = encoder.encode([q.key_text for q in queries])
    cands = [optimizer.candidates(v)[0] for v in vecs] if config.examples == "knn" else None
    demos = optimizer.demos

    def prefixes_of(perms: Sequence[Order]) -> list[str]:
        if cands is None:
            return [task.prefix([demos[p] for p in perm]) for perm in perms]
        return [task.prefix([cands[i][p] for p in perm]) for i, perm in enumerate(perms)]

    def record(name: str, acc: float, start: float, *, fit_calls: int = 0, select_calls: int = 0,
               draws: int = 1, std: float = 0.0, extra: dict | None = None) -> None:
        out["methods"][name] = {"accuracy": acc, "accuracy_std": std, "lm_calls_fit": fit_calls,
                                "lm_calls_select": select_calls, "lm_calls_eval": len(queries) * draws,
                                "wall_s": time.perf_counter() - start, **(extra or {})}
        logger.info("%s seed %s %-12s acc %.4f", task.name, task.seed, name, acc)

    def record_poem(name: str, opt: PoemOptimizer, start: float) -> float:
        """Select for every query with ``opt``, score, record; returns select() ms per query."""
        t_sel = time.perf_counter()
        sels = [opt.select_vec(v) for v in vecs]
        sel_ms = 1000 * (time.perf_counter() - t_sel) / len(queries)
        acc = book.accuracy([task.prefix(s.examples) for s in sels], progress)
        record(name, acc, start - fit_wall, fit_calls=optimizer.lm_calls_fit,
               extra={"fallback_rate": float(np.mean([s.fallback for s in sels]))})
        return sel_ms

    n = config.n_examples
    if "poem" in methods:
        out["select_ms_per_query"] = record_poem("poem", optimizer, time.perf_counter())
    if "poem_identity" in methods:
        # Ablation of the paper's rank encoding: the same fit's trials stored as concrete orders.
        if config.examples != "fixed" or config.encoding == "identity" or not optimizer.can_reencode:
            logger.info("poem_identity skipped: needs fixed demonstrations, the rank encoding as the "
                        "main POEM row and a fit run here")
        else:
            start = time.perf_counter()
            record_poem("poem_identity", optimizer.with_encoding("identity"), start)
    if "best_fixed" in methods and config.examples == "fixed":
        start = time.perf_counter()
        best = optimizer.best_fixed_order()
        record("best_fixed", book.accuracy(prefixes_of([best] * len(queries)), progress), start,
               fit_calls=optimizer.lm_calls_fit, extra={"order": list(best)})
    sims = None
    if {"kate", "kate_reverse"} & set(methods):
        if cands is None:
            sims = vecs @ optimizer._demo_vecs.T  # (m, n) query-to-demo cosine
        else:
            sims = np.stack([np.sort(optimizer.candidates(v)[1])[::-1] for v in vecs])
        for name, last in (("kate", True), ("kate_reverse", False)):
            if name in methods:
                start = time.perf_counter()
                record(name, book.accuracy(prefixes_of(kate_perms(sims, last)), progress), start)
    if "random" in methods:
        start = time.perf_counter()
        rng = np.random.default_rng(1000 + (task.seed or 0))
        accs = [book.accuracy(prefixes_of(random_perms(n, len(queries), rng)), progress)
                for _ in range(random_draws)]
        record("random", float(np.mean(accs)), start, draws=random_draws, std=float(np.std(accs)),
               extra={"draws": accs})
    if {"globale", "locale"} & set(methods):
        if config.examples != "fixed" or task.verbalizer is None or not hasattr(scorer, "model"):
            logger.warning("GlobalE/LocalE skipped: need fixed demonstrations, a label verbalizer "
                           "and a generating backend")
        else:
            start = time.perf_counter()
            calls0 = scorer.calls
            perms = sample_orders(n, config.budget, np.random.default_rng(config.seed + 2))
            probe_src = [perms[int(i)] for i in np.random.default_rng(config.seed + 3).choice(
                len(perms), size=min(probe_orders, len(perms)), replace=False)]
            probes = sample_probes(task, scorer, demos, probe_src, seed=config.seed)
            g, loc, _ = entropy_orders(task, scorer, demos, perms, probes)
            select_calls = scorer.calls - calls0
            shared = time.perf_counter() - start
            for name, perm in (("globale", g), ("locale", loc)):
                if name in methods:
                    s2 = time.perf_counter()
                    record(name, book.accuracy(prefixes_of([perm] * len(queries)), progress),
                           s2 - shared, select_calls=select_calls,
                           extra={"order": list(perm), "probes": len(probes)})
    if "zero_shot" in methods:
        start = time.perf_counter()
        record("zero_shot", book.accuracy([task.template.instruction] * len(queries), progress), start)
    out["lm_calls_total"] = scorer.calls
    return out
