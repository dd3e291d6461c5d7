"""Scoring a POEM fit: the prompts a fit scores (:class:`FitPlan`), scoring them with the LM, and
what that cost per demonstration source (:class:`SourceFit`: LM calls, tokens run, time per call).

One LM call = one fit input scored under one prompt prefix (all its label continuations). A plan
groups the trials by prefix, so a prefix-caching backend runs each distinct prefix once: with fixed
demonstrations every input shares the same ``budget`` prefixes and each call pays for its input
only; with kNN demonstrations each input has its own prefixes, so every call pays for (the part of)
a prefix too, which is why the kNN source is the expensive one (:func:`memrl.poem.demonstrations.knn_orders`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from memrl.poem.orders import Order
from memrl.tasks.fewshot import Example, FewShotTask


@dataclass
class FitPlan:
    """Every prompt a fit will score for one demonstration source, before any LM call
    (:meth:`memrl.poem.PoemOptimizer.fit_plan`).

    Attributes:
        inputs: the training inputs to fit on.
        vecs: their embeddings, ``(len(inputs), d)``.
        candidates: per input, its candidate demonstrations and their similarity ranks.
        sims: per input, the candidates' cosine similarities to it.
        prompts: distinct prompt prefix -> the ``(input index, order)`` trials scored under it, in
            the order the fit scores them (one backend call per prefix).
        source: the demonstration source (``fixed`` or ``knn``).
    """

    inputs: list[Example]
    vecs: np.ndarray
    candidates: list[tuple[list[Example], Order]]
    sims: list[np.ndarray]
    prompts: dict[str, list[tuple[int, Order]]]
    source: str = "fixed"

    @property
    def trials(self) -> int:
        return sum(len(jobs) for jobs in self.prompts.values())


@dataclass
class SourceFit:
    """What fitting one demonstration source cost.

    Attributes:
        source: ``fixed`` or ``knn``.
        inputs, trials: fit inputs, and (input, order) trials scored (= LM calls).
        orders_per_input: the most orders tried on one input.
        prompts: distinct prompt prefixes (backend calls).
        lm_calls: LM calls counted by the scorer.
        forward_tokens: tokens run through the model (:class:`memrl.lm.HFScorer`; None for a backend
            that does not count them).
        wall_s: seconds spent scoring.
    """

    source: str
    inputs: int
    trials: int
    orders_per_input: int
    prompts: int
    lm_calls: int
    forward_tokens: int | None
    wall_s: float

    @property
    def ms_per_call(self) -> float:
        return 1000.0 * self.wall_s / max(1, self.lm_calls)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ms_per_call": self.ms_per_call}


def score_plan(task: FewShotTask, scorer: Any, plan: FitPlan, *, progress: bool = False
               ) -> tuple[list[tuple[int, Order, np.ndarray]], SourceFit]:
    """Score every trial of ``plan`` with ``scorer``: ``(input index, order, normalised label scores)``
    per trial, in plan order, and the cost."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    calls0 = scorer.calls
    tokens0 = getattr(scorer, "forward_tokens", None)
    raw: list[tuple[int, Order, np.ndarray]] = []
    for prefix, jobs in tqdm(plan.prompts.items(), desc=f"poem fit {task.name} ({plan.source})", unit="prompt",
                             disable=not progress):
        batch = [plan.inputs[i] for i, _ in jobs]
        res = scorer.score(prefix, [task.suffix(ex) for ex in batch], task.continuations(batch))
        scores = np.asarray(res.normalised(task.length_normalise), dtype=np.float64)
        raw += [(i, perm, row) for (i, perm), row in zip(jobs, scores)]
    per_input: dict[int, int] = {}
    for i, _, _ in raw:
        per_input[i] = per_input.get(i, 0) + 1
    tokens = getattr(scorer, "forward_tokens", None)
    cost = SourceFit(plan.source, len(plan.inputs), len(raw), max(per_input.values(), default=0), len(plan.prompts),
                     scorer.calls - calls0, None if tokens is None or tokens0 is None else tokens - tokens0,
                     time.perf_counter() - t0)
    return raw, cost

