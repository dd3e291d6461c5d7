"""POEM: fit an episodic memory of (input, order code, reward), then pick orders per query.

``fit`` tries orders of the demonstrations on every training input and scores each with the LM
(one LM call per (input, order)). The memory (:class:`memrl.memory.EpisodicMemory`) holds one
key per training input (its embedding); beside it, the optimiser keeps per key a table
``code -> (reward sum, count)`` whose mean is the memory value of the spec.

``select`` embeds the query, retrieves the ``k`` nearest training inputs, combines their
tables with the read rule and decodes the winning code with the query's own similarity ranks
(:func:`memrl.poem.reward_memory.read_memory`). It makes no LM call.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memrl.io import atomic_dir, atomic_write_json
from memrl.memory import EpisodicMemory
from memrl.poem.config import PoemConfig, sources_of
from memrl.poem.demonstrations import KnnPool, balanced_draw, knn_orders
from memrl.poem.fitting import FitPlan, SourceFit, score_plan
from memrl.poem.matrix import LooResult, TrialMatrix, build_matrix, loo_select
from memrl.poem.orders import Order, sample_orders, similarity_ranks
from memrl.poem.reading import prior_means
from memrl.poem.reward_memory import memory_from_matrix, read_memory
from memrl.poem.selection import SOURCE_ENCODINGS, HeldOutChoice, select_candidate
from memrl.poem.settings import Setting
from memrl.tasks.fewshot import Example, FewShotTask

logger = logging.getLogger(__name__)

FORMAT_NAME = "memrl.poem"
# v2: + trials.npz (the full trial matrix), the read setting and the leave-one-out summary;
# v3: one trial matrix per demonstration source (trials-<source>.npz), the source in use, the selection
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


class PoemMismatchError(ValueError):
    """A saved POEM memory was built for another task, LM or encoder."""


@dataclass
class Selection:
    """What :meth:`PoemOptimizer.select` chose for one query, and why.

    Attributes:
        examples: the demonstrations in prompt order.
        perm: ``examples[j] = candidates[perm[j]]`` (indices into the query's candidate set).
        code: the rank code (``None`` never: the fallback code when nothing was retrieved).
        neighbours: key ids of the retrieved training inputs, most similar first.
        neighbour_sims: their cosine similarities to the query.
        scores: the top action scores ``{code: (score, neighbours that tried it)}``.
        fallback: True when memory gave nothing and the fallback heuristic was used.
    """

    examples: list[Example]
    perm: Order
    code: Order
    neighbours: list[str]
    neighbour_sims: list[float]
    scores: dict[Order, tuple[float, int]] = field(default_factory=dict)
    fallback: bool = False


@dataclass
class FitTrials:
    """Every scored (input, order) trial of one fit, so the memory can be rebuilt under another
    setting (:meth:`PoemOptimizer.with_encoding`) without scoring anything again.

    Attributes:
        inputs: the fitted training inputs.
        vecs: their embeddings, ``(len(inputs), d)``.
        candidates: per input, its candidate demonstrations and their similarity ranks.
        trials: ``(input index, order, reward, correct)`` per scored trial (``config.reward``).
        matrix: the full trial matrix (per-label scores of every trial: every reward recomputable).
    """

    inputs: list[Example]
    vecs: np.ndarray
    candidates: list[tuple[list[Example], Order]]
    trials: list[tuple[int, Order, float, float]]
    matrix: TrialMatrix | None = None


@dataclass
class FitReport:
    """Cost and outcome of :meth:`PoemOptimizer.fit`, with the trials it scored.

    ``inputs``, ``trials``, ``lm_calls`` and ``wall_s`` are totals over the demonstration sources
    fitted; ``costs`` holds each source's own (:class:`memrl.poem.fitting.SourceFit`: LM calls,
    tokens run, ms per call). ``source`` and ``setting`` are what is read at select time;
    ``record`` and ``mean_reward`` are the trials of that source.
    """

    inputs: int
    trials: int
    lm_calls: int
    wall_s: float
    mean_reward: float
    record: FitTrials | None = field(default=None, repr=False)
    setting: Setting | None = None
    loo: LooResult | None = field(default=None, repr=False)
    selection: HeldOutChoice | None = field(default=None, repr=False)
    source: str = "fixed"
    costs: dict[str, SourceFit] = field(default_factory=dict)


class PoemOptimizer:
    """Per-query demonstration ordering from episodic memory (POEM).

    Args:
        task: the task (template, verbalizer, training split).
        scorer: an LM backend (:class:`memrl.lm.HFScorer` or :class:`memrl.lm.OpenAICompletionsScorer`).
        encoder: :class:`memrl.encoders.Encoder` (``name`` and ``encode(list[str]) -> (m, d)``).
        config: :class:`PoemConfig`.

    Example:
        >>> opt = PoemOptimizer(task, scorer, Encoder(), PoemConfig(n_examples=4))  # doctest: +SKIP
        >>> opt.fit()                                                                 # doctest: +SKIP
        >>> opt.select(task.test[0]).examples      # 4 demonstrations, ordered for this query  # doctest: +SKIP
    """

    def __init__(self, task: FewShotTask, scorer: Any, encoder: Any, config: PoemConfig | None = None) -> None:
        self.task = task
        self.scorer = scorer
        self.encoder = encoder
        self.config = config or PoemConfig()
        self.demos: list[Example] = []  # the fixed source's demonstrations
        self._demo_vecs: np.ndarray | None = None
        self.knn: KnnPool | None = None  # the kNN source's pool: candidates drawn per query
        # the demonstration source read at select time: the config's, or chosen by the selection
        self.source: str = sources_of(self.config.examples)[0]
        self.matrices: dict[str, TrialMatrix] = {}  # per source fitted; None-free (v1 loads have none)
        self.fit_costs: dict[str, SourceFit] = {}
        self.memory: EpisodicMemory | None = None
        self.tables: dict[str, dict[Order, tuple[float, int]]] = {}
        # fixed mode: per concrete order, [sum correct, sum reward, trials] (best fixed order baseline)
        self.order_stats: dict[Order, list[float]] = {}
        self.lm_calls_fit = 0
        self.setting: Setting | None = None  # the read setting in use (chosen by leave-one-out or given)
        self.loo: LooResult | None = None
        self.loo_summary: dict[str, Any] | None = None
        # select="one_se": the choice and its honest (nested cross-validated) estimate
        self.selection: HeldOutChoice | None = None
        self.selection_summary: dict[str, Any] | None = None
        self.prior: dict[Any, float] = {}

    @property
    def n(self) -> int:
        """The number of demonstrations: ``config.n_examples`` with 'classes'/'auto' resolved."""
        value = self.config.n_examples
        if isinstance(value, int):
            return value
        classes = len(self.task.label_names)
        return classes if value == "classes" else max(4, classes)

    @property
    def matrix(self) -> TrialMatrix | None:
        """The trial matrix of the source in use (None for an optimiser loaded from format v1)."""
        return self.matrices.get(self.source)

    @property
    def pool(self) -> list[Example]:
        """The kNN source's candidate pool (empty without a kNN source)."""
        return self.knn.examples if self.knn is not None else []

    @property
    def sources(self) -> tuple[str, ...]:
        """The demonstration sources this optimiser fits (``config.examples``)."""
        return sources_of(self.config.examples)

    @property
    def demo_vecs(self) -> np.ndarray | None:
        """``(n, d)`` embeddings of the fixed demonstrations, in :attr:`demos` order (None before
        :meth:`setup_examples` / :meth:`load`, and with ``examples="knn"``)."""
        return self._demo_vecs

    # ------------------------------------------------------------------ identities
    @property
    def identities(self) -> dict[str, str]:
        return {
            "task": self.task.identity(),
            "lm": getattr(self.scorer, "identity", type(self.scorer).__name__),
            "encoder": getattr(self.encoder, "name", type(self.encoder).__name__),
        }

    # ------------------------------------------------------------------ examples
    def setup_examples(self) -> None:
        """Draw the fixed demonstrations and/or index the kNN pool, as the sources need; no LM call."""
        n = self.n
        train = self.task.train
        if not train:
            raise ValueError(f"task {self.task.name!r} has an empty training split; POEM needs examples")
        if n > len(train) - (1 if "knn" in self.sources else 0):
            raise ValueError(
                f"n_examples={n} is larger than the pool of {len(train)} training examples of task "
                f"{self.task.name!r}; lower n_examples"
            )
        if "fixed" in self.sources:
            self.demos = [train[i] for i in balanced_draw([ex.label for ex in train], n, self.config.seed)]
            self._demo_vecs = self.encoder.encode([d.key_text for d in self.demos])
        if "knn" in self.sources:
            self.knn = KnnPool(train, self.encoder.encode([ex.key_text for ex in train]), self.identities["encoder"])

    def add_examples(self, examples: Sequence[Example]) -> None:
        """Add demonstrations to the candidate pool of a fitted optimiser that reads kNN demonstrations
        (``examples="knn"``, or ``"choose"`` when the selection chose them).

        No LM call and no refit: in kNN mode the memory stores *similarity-rank* codes, which name
        no example, so a new pool example is one more candidate. A query it is among the ``n``
        most similar to gets it as a demonstration, placed by its similarity rank like any other.
        The added examples live in this object only: :meth:`save` does not write the pool
        (:meth:`load` rebuilds it from ``task.train``).

        Raises:
            ValueError: when it reads the fixed demonstrations. There the memory holds rewards earned by
                orders of one fixed set of demonstrations, chosen at fit, so a new demonstration
                has no reward to be ordered by: fit again with it in the training split, or use
                ``examples="knn"``. Also for a label outside the task's labels.
            RuntimeError: before :meth:`fit` or :meth:`load`.
        """
        self.check_fitted()
        if self.source != "knn":
            raise ValueError(
                "this PoemOptimizer reads fixed demonstrations, so it cannot take new demonstrations without a "
                "refit: its memory holds rewards of orders of the fixed set chosen at fit, and a new example has "
                "no reward to be ordered by. Fit again with the example in the training split, or read the kNN "
                "demonstrations (PoemConfig(examples='knn'), or with_setting(..., source='knn') after "
                "examples='choose'), whose candidate pool can grow."
            )
        examples = list(examples)
        n_labels = len(self.task.label_names)
        for ex in examples:
            if ex.choices is None and not 0 <= ex.label < n_labels:
                raise ValueError(f"label {ex.label} of {ex.text!r:.60} is outside the task's "
                                 f"{n_labels} labels {list(self.task.label_names)}")
        if not examples:
            return
        assert self.knn is not None
        self.knn.add(examples, self.encoder.encode([ex.key_text for ex in examples]))

    def candidates(self, query_vec: np.ndarray, exclude_text: str | None = None, *,
                   source: str | None = None) -> tuple[list[Example], np.ndarray]:
        """The query's ``n`` candidate demonstrations and their similarities ``(n,)`` under
        ``source`` (default: the source in use).

        Fixed: the fixed set (in its stored order). kNN: the ``n`` most similar pool examples, most
        similar first, skipping one whose text equals ``exclude_text`` (a training input is never
        its own demo).
        """
        source = source or self.source
        if source == "fixed":
            assert self._demo_vecs is not None
            return self.demos, self._demo_vecs @ query_vec
        assert self.knn is not None
        return self.knn.nearest(query_vec, self.n, exclude_text=exclude_text, task_name=self.task.name)

    # ------------------------------------------------------------------ fit
    def default_inputs(self) -> list[Example]:
        """The fit inputs by default: the training split minus the fixed demonstrations, then
        (``use_dev``) the dev split; a text already among them is not added twice."""
        demo_texts = {d.key_text for d in self.demos}
        inputs = [ex for ex in self.task.train if ex.key_text not in demo_texts]
        if self.config.use_dev:
            seen = {ex.key_text for ex in inputs} | demo_texts
            for ex in self.task.dev:
                if ex.key_text not in seen:
                    seen.add(ex.key_text)
                    inputs.append(ex)
        return inputs

    def fit(self, inputs: Sequence[Example] | None = None, *, progress: bool = True) -> FitReport:
        """Try orders on each training input under each demonstration source of ``config.examples``,
        score them with the LM, keep the full trial matrix per source, choose the source and read
        setting (``select="one_se"`` / ``"loo"`` / ``"loo_guarded"``: from the matrices, no LM call)
        and fill the memory.

        Args:
            inputs: training inputs (default :meth:`default_inputs`); every source fits the same ones.
            progress: show a tqdm bar over distinct prompts.

        Returns:
            :class:`FitReport` with the number of LM calls (= (input, order) trials) in all and per
            source, the source and setting used and how they were chosen.
        """
        t0 = time.perf_counter()
        self.setup_examples()
        inputs = self.default_inputs() if inputs is None else list(inputs)
        if not inputs:
            raise ValueError(f"task {self.task.name!r}: no training inputs left to fit on")
        vecs = self.encoder.encode([ex.key_text for ex in inputs])
        self.matrices, self.fit_costs = {}, {}
        plans: dict[str, FitPlan] = {}
        for source in self.sources:
            plan = plans[source] = self._plan(inputs, vecs, source)
            raw, self.fit_costs[source] = score_plan(self.task, self.scorer, plan, progress=progress)
            self.matrices[source] = build_matrix(raw, gold=[ex.label for ex in inputs], sims=plan.sims,
                                                 labels=[[c.label for c in cands] for cands, _ in plan.candidates],
                                                 vecs=vecs, keys=[ex.key_text for ex in inputs])
            logger.info("POEM fit on %s, %s demonstrations: %s", self.task.name, source, self.fit_costs[source])
        self.lm_calls_fit = sum(c.lm_calls for c in self.fit_costs.values())
        self._choose_setting()
        self._write_memory()
        record = self._trials(plans[self.source])
        report = FitReport(
            inputs=len(inputs), trials=sum(c.trials for c in self.fit_costs.values()), lm_calls=self.lm_calls_fit,
            wall_s=time.perf_counter() - t0, mean_reward=float(np.mean([t[2] for t in record.trials])),
            record=record, setting=self.setting, loo=self.loo, selection=self.selection, source=self.source,
            costs=dict(self.fit_costs),
        )
        logger.info("POEM fit on %s: %s", self.task.name, report)
        return report

    def _trials(self, plan: FitPlan) -> FitTrials:
        """The fit's record for the source in use: ``(input, order, config.reward, correct)`` per trial
        in scoring order, read off its trial matrix."""
        mx = self.matrix
        assert mx is not None
        column = {o: p for p, o in enumerate(mx.order_tuples)}
        reward, correct = mx.rewards(self.config.reward), mx.rewards("correct")
        trials = [(i, perm, float(reward[i, column[perm]]), float(correct[i, column[perm]]))
                  for jobs in plan.prompts.values() for i, perm in jobs]
        return FitTrials(plan.inputs, plan.vecs, plan.candidates, trials, mx)

    def fit_plan(self, inputs: Sequence[Example] | None = None, *, source: str | None = None) -> FitPlan:
        """The prompts :meth:`fit` scores on ``inputs`` (default :meth:`default_inputs`) with the
        demonstrations of ``source`` (default: the first of ``config.examples``' sources), grouped by
        prompt prefix; embeds the inputs but makes no LM call (what a fit will cost)."""
        self.setup_examples()
        inputs = self.default_inputs() if inputs is None else list(inputs)
        if not inputs:
            raise ValueError(f"task {self.task.name!r}: no training inputs left to fit on")
        return self._plan(inputs, self.encoder.encode([ex.key_text for ex in inputs]), source or self.sources[0])

    def _plan(self, inputs: list[Example], vecs: np.ndarray, source: str) -> FitPlan:
        # fixed demonstrations: one sample of orders shared by every input (a dense trial matrix, and
        # each order's prefix is scored once for all inputs); kNN: the same orders of each input's own
        # candidates (dense too), sorted so that one input's prompts sharing a start run one after another
        orders = self.shared_orders() if source == "fixed" else self.knn_orders()
        # Trials grouped by prompt prefix: every distinct prefix is scored in one backend call, so
        # a prefix-caching backend runs each order's demonstrations once.
        prompts: dict[str, list[tuple[int, Order]]] = {}
        candidates: list[tuple[list[Example], Order]] = []
        sims_of: list[np.ndarray] = []
        for i, ex in enumerate(inputs):
            cands, sims = self.candidates(vecs[i], exclude_text=ex.key_text, source=source)
            candidates.append((cands, similarity_ranks(sims)))
            sims_of.append(np.asarray(sims, dtype=np.float64))
            for perm in orders:
                prompts.setdefault(self.task.prefix([cands[p] for p in perm]), []).append((i, perm))
        return FitPlan(inputs, vecs, candidates, sims_of, prompts, source)

    def shared_orders(self) -> list[Order]:
        """The orders a fixed-demonstration fit tries on every input: all ``n!`` when ``n! <=
        budget``, else a seeded uniform sample of ``budget`` (the same for the same config)."""
        return sample_orders(self.n, self.config.budget, np.random.default_rng(self.config.seed + 1))

    def knn_orders(self) -> list[Order]:
        """The orders a kNN-demonstration fit tries on every input's own candidates
        (:func:`memrl.poem.demonstrations.knn_orders`, ``config.knn_budget``)."""
        return knn_orders(self.n, self.config.knn_budget, self.config.seed + 1,
                          most_similar_last=self.config.fallback == "kate")

    def loo_encodings(self, source: str | None = None) -> tuple[str, ...]:
        """Encodings leave-one-out chooses among (``identity`` needs fixed demonstrations)."""
        return tuple(SOURCE_ENCODINGS[source or self.source])

    def leave_one_out(self, *, guard: bool = False, source: str | None = None) -> LooResult:
        """Score every read setting on a source's trial matrix (default: the source in use) by
        leave-one-out (no LM call); ``guard``: keep the best one only if choosing it holds out (see
        :meth:`LooResult.with_guard`). The fit's own leave-one-out is reused when it has one for that
        source (the guard reads its table; nothing is scored twice)."""
        source = source or self.source
        mx = self.matrices.get(source)
        if mx is None:
            raise RuntimeError(f"leave-one-out needs the fit's trial matrix of the {source!r} demonstrations: call "
                               "fit() first with that source (a memory saved in format v1 has none)")
        loo = self.loo if source == self.source else None
        if loo is None or (loo.guard is not None and not guard):  # none kept (loaded), or only a guarded one
            loo = loo_select(mx, encodings=self.loo_encodings(source),
                             most_similar_last=self.config.fallback == "kate")
        return loo.with_guard() if guard else loo

    def _choose_setting(self) -> None:
        assert self.matrices
        self.loo = self.selection = None
        self.loo_summary = self.selection_summary = None
        self.source = self.sources[0]
        data_chosen = self.config.select != "fixed"
        if data_chosen and len(set(next(iter(self.matrices.values())).keys)) >= 2:
            if self.config.select == "one_se":
                self._select_held_out()
            else:
                self._select_by_loo()
        else:
            if data_chosen:
                logger.warning("POEM: choosing the setting needs >= 2 distinct fit inputs; using the config's setting "
                               "with the %s demonstrations", self.source)
            self.setting = self.config.read_setting()

    def _select_held_out(self) -> None:
        """``select="one_se"``: the one-standard-error rule over every source's candidates, estimated
        by nested cross-validation."""
        self.selection = select_candidate(self.matrices, rule="one_se",
                                          most_similar_last=self.config.fallback == "kate")
        self.source, self.setting = self.selection.source, self.selection.setting
        self.selection_summary = self.selection.summary()
        s = self.selection
        logger.info("POEM on %s chose %s by the one-SE rule: %.3f on inputs it was not chosen on (nested CV), "
                    "its own leave-one-out %.3f, best leave-one-out %.3f (%d inputs, %d candidates)", self.task.name,
                    s.candidate, s.estimate, s.loo_accuracy, s.loo_best, s.n_inputs, s.candidates_scored)

    def _select_by_loo(self) -> None:
        """``select="loo"`` / ``"loo_guarded"``: the best leave-one-out accuracy (guarded or not)."""
        self.loo = self.leave_one_out(guard=self.config.select == "loo_guarded")
        self.setting = self.loo.setting
        self.loo_summary = self.loo.summary()
        logger.info("POEM leave-one-out on %s chose %s (accuracy %.3f over %d inputs, %d settings)",
                    self.task.name, self.setting, self.loo.accuracy, self.loo.n_inputs, len(self.loo.table))
        if self.loo.guard is not None:
            g = self.loo.guard
            logger.info("POEM guard on %s: choosing among settings scores %.3f on inputs it was not chosen on, "
                        "the global order %.3f: %s", self.task.name, g["nested_accuracy"], g["global_accuracy"],
                        "kept the best setting" if g["kept"] else "fell back to the global order")

    def with_setting(self, setting: Setting, *, source: str | None = None) -> PoemOptimizer:
        """A copy of this fitted optimiser that reads the memory of ``source``'s demonstrations
        (default: the source in use) under ``setting``, rebuilt from that source's trial matrix:
        comparing sources, encodings, rewards, k, read rules or shrinkage costs no LM call."""
        self.check_fitted()
        source = source or self.source
        if not self.matrices:
            raise RuntimeError("this optimiser has no trial matrix (saved in format v1, before trial matrices "
                               "were kept): fit again to change its setting")
        if source not in self.matrices:
            raise ValueError(f"this optimiser fitted {list(self.matrices)} demonstrations, not {source!r}")
        other = copy.copy(self)
        other.config = dataclasses.replace(self.config, select="fixed", examples=source,  # validates
                                           encoding=setting.encoding, reward=setting.reward, k=setting.k,
                                           read=setting.read, shrink=setting.shrink)
        other.source, other.setting = source, setting
        other.loo, other.loo_summary = None, None
        other.selection, other.selection_summary = None, None
        other._write_memory()
        return other

    def with_encoding(self, encoding: str, record: FitTrials | None = None) -> PoemOptimizer:
        """:meth:`with_setting` with only the encoding changed (``record`` is accepted for
        backward compatibility; the optimiser's own trial matrix is used)."""
        if record is not None and not isinstance(record, FitTrials):
            raise TypeError("with_encoding's record must be a fit's FitReport.record")
        assert self.setting is not None or self.memory is None
        self.check_fitted()
        return self.with_setting(dataclasses.replace(self.setting, encoding=encoding))

    def _write_memory(self) -> None:
        """Reward tables (one per distinct input), the global prior and the per-order training
        statistics of the fixed demonstrations (the best-fixed-order baseline), from the trial
        matrices under :attr:`setting`."""
        assert self.matrix is not None and self.setting is not None
        self.memory, self.tables, self.prior, order_stats = memory_from_matrix(
            self.matrix, self.setting, encoder_name=self.identities["encoder"])
        fixed = self.matrices.get("fixed")
        if fixed is not None and self.source != "fixed":  # any encoding: only the reward matters here
            order_stats = memory_from_matrix(fixed, dataclasses.replace(self.setting, encoding="label"))[3]
        self.order_stats = order_stats if fixed is not None else {}

    # ------------------------------------------------------------------ select
    def check_fitted(self) -> None:
        """Raise ``RuntimeError`` unless the optimiser has a memory (after :meth:`fit` or :meth:`load`)."""
        if self.memory is None:
            raise RuntimeError("PoemOptimizer is not fitted: call fit() or load() first")

    def select_vec(self, query_vec: np.ndarray, exclude_text: str | None = None) -> Selection:
        """:meth:`select` for an already embedded query (``(d,)`` unit vector); no LM call."""
        self.check_fitted()
        st = self.setting or self.config.read_setting()
        cands, sims = self.candidates(query_vec, exclude_text)
        assert self.memory is not None
        r = read_memory(self.memory, self.tables, self.prior, st, query_vec, sims, [c.label for c in cands],
                        most_similar_last=self.config.fallback == "kate")
        return Selection([cands[p] for p in r.perm], r.perm, r.code, r.neighbours, r.neighbour_sims, r.top,
                         r.fallback)

    def select(self, query: Example | str) -> Selection:
        """Choose the demonstrations and their order for ``query`` (an :class:`Example` or text)."""
        text = query if isinstance(query, str) else query.key_text
        return self.select_vec(self.encoder.encode([text])[0])

    def select_many(self, queries: Sequence[Example]) -> list[Selection]:
        """:meth:`select` for many queries with one batched embedding call."""
        vecs = self.encoder.encode([q.key_text for q in queries])
        return [self.select_vec(v) for v in vecs]

    def best_fixed_order(self) -> Order:
        """The concrete order of the fixed demonstrations with the highest training accuracy
        (ties: higher mean reward, then lexicographic). Needs a fit of the fixed demonstrations."""
        if not self.order_stats:
            raise RuntimeError("best_fixed_order needs a fit with fixed demonstrations (examples='fixed' or 'choose')")
        return min(self.order_stats, key=lambda p: (-self.order_stats[p][0] / self.order_stats[p][2],
                                                   -self.order_stats[p][1] / self.order_stats[p][2], p))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted optimiser to folder ``path`` atomically: ``poem.json`` (identities,
        config, the demonstration source and read setting in use, how they were chosen, the fit's
        costs, the fixed demonstrations, reward tables), ``memory.npz`` (the input keys) and
        ``trials-<source>.npz`` per fitted source (the full trial matrices; absent for an optimiser
        that was itself loaded from format v1)."""
        self.check_fitted()
        assert self.setting is not None
        path = Path(path)
        state = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "identities": self.identities,
            "config": self.config.to_dict(),
            "n_examples": self.n,
            "setting": self.setting.to_dict(),
            "loo": self.loo_summary,
            "selection": self.selection_summary,
            "demos": [_example_to_dict(d) for d in self.demos],
            "tables": {k: [[_listify(c), m, n] for c, (m, n) in t.items()] for k, t in self.tables.items()},
            "order_stats": [[list(p), *v] for p, v in self.order_stats.items()],
            "lm_calls_fit": self.lm_calls_fit,
            "fit_costs": {s: c.to_dict() for s, c in self.fit_costs.items()},
            "source": self.source,
            "sources": list(self.matrices),
            "has_matrix": bool(self.matrices),
        }
        with atomic_dir(path) as tmp:
            atomic_write_json(tmp / "poem.json", state)
            self.memory.save(tmp / "memory.npz")
            for source, mx in self.matrices.items():
                mx.save(tmp / f"trials-{source}.npz")
        return path

    @classmethod
    def load(cls, path: str | Path, task: FewShotTask, scorer: Any, encoder: Any) -> PoemOptimizer:
        """Load a saved optimiser for ``task``/``scorer``/``encoder``.

        Raises:
            PoemMismatchError: the memory was built for another task, LM or encoder.
            FileNotFoundError, ValueError: missing or malformed files.
        """
        path = Path(path)
        meta_path = path / "poem.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: not a saved POEM optimiser")
        try:
            state = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta_path}: not valid JSON ({exc}); the saved optimiser is damaged") from exc
        if not isinstance(state, dict):
            raise ValueError(f"{meta_path}: expected a JSON object")
        missing = [k for k in ("config", "identities", "tables", "order_stats", "lm_calls_fit") if k not in state]
        if state.get("format") == FORMAT_NAME and missing:
            raise ValueError(f"{meta_path}: missing field(s) {missing}; the saved optimiser is incomplete")
        version = state.get("version")
        if state.get("format") != FORMAT_NAME or version not in READABLE_VERSIONS:
            raise ValueError(f"{meta_path}: format {state.get('format')!r} v{version}, "
                             f"expected {FORMAT_NAME!r} v{'/v'.join(map(str, READABLE_VERSIONS))}")
        config = dict(state["config"])
        if version == 1:
            # v1 read with the config's own fields, had no dev inputs and no shrinkage
            config.setdefault("select", "fixed")
            config.setdefault("use_dev", False)
        opt = cls(task, scorer, encoder, PoemConfig.from_dict(config, source=str(meta_path)))
        saved, now = state["identities"], opt.identities
        wrong = [f"{k}: saved {saved.get(k)!r}, now {now[k]!r}" for k in now if saved.get(k) != now[k]]
        if wrong:
            raise PoemMismatchError(
                f"{path} was fitted for another setting ({'; '.join(wrong)}). A POEM memory is specific "
                "to its task prompt, LM and encoder: fit a new one for this setting."
            )
        opt.memory = EpisodicMemory.load(path / "memory.npz", encoder_name=now["encoder"])
        opt.tables = {k: {_tuplify(c): (float(m), int(n)) for c, m, n in rows} for k, rows in state["tables"].items()}
        opt.prior = prior_means(opt.tables)
        opt.order_stats = {tuple(p): [a, b, c] for p, a, b, c in state["order_stats"]}
        opt.lm_calls_fit = int(state["lm_calls_fit"])
        if version == 1:
            opt.setting = opt.config.read_setting()
            logger.info("%s: format v1 (no trial matrix): it selects as saved; with_setting/with_encoding "
                        "and leave-one-out need a new fit", path)
        else:
            opt.setting = Setting(**state["setting"])
            opt.loo_summary = state.get("loo")
            opt.selection_summary = state.get("selection")
            opt.source = state.get("source", opt.sources[0])
            opt.fit_costs = {s: SourceFit(**{k: v for k, v in c.items() if k != "ms_per_call"})
                             for s, c in state.get("fit_costs", {}).items()}
            # v2 kept one matrix, of its only source, as trials.npz
            files = ({s: f"trials-{s}.npz" for s in state.get("sources", [])} if version >= 3
                     else {opt.source: "trials.npz"} if state.get("has_matrix") else {})
            for source, name in files.items():
                if not (path / name).is_file():
                    raise ValueError(f"{path}: {name} is missing; the saved optimiser is incomplete")
                opt.matrices[source] = TrialMatrix.load(path / name)
        if "fixed" in opt.sources:
            opt.demos = [_example_from_dict(d) for d in state["demos"]]
            opt._demo_vecs = encoder.encode([d.key_text for d in opt.demos])
        if "knn" in opt.sources:  # the pool is the training split (additions are not saved)
            opt.knn = KnnPool(task.train, encoder.encode([ex.key_text for ex in task.train]), now["encoder"])
        return opt


def _listify(code: Any) -> Any:
    return [_listify(x) for x in code] if isinstance(code, (tuple, list)) else int(code)


def _tuplify(code: Any) -> Any:
    return tuple(_tuplify(x) for x in code) if isinstance(code, (tuple, list)) else int(code)


def _example_to_dict(ex: Example) -> dict[str, Any]:
    return {"text": ex.text, "label": ex.label, "text_b": ex.text_b,
            "choices": list(ex.choices) if ex.choices is not None else None}


def _example_from_dict(d: dict[str, Any]) -> Example:
    return Example(text=d["text"], label=int(d["label"]), text_b=d.get("text_b"),
                   choices=tuple(d["choices"]) if d.get("choices") is not None else None)
