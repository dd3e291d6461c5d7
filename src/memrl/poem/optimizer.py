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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memrl.io import atomic_dir, atomic_write_json
from memrl.memory import EpisodicMemory
from memrl.poem.config import PoemConfig
from memrl.poem.matrix import LooResult, TrialMatrix, build_matrix, loo_select
from memrl.poem.orders import Order, sample_orders, similarity_ranks
from memrl.poem.reading import prior_means
from memrl.poem.reward_memory import memory_from_matrix, read_memory
from memrl.poem.rewards import compute_reward
from memrl.poem.settings import Setting
from memrl.tasks.fewshot import Example, FewShotTask

logger = logging.getLogger(__name__)

FORMAT_NAME = "memrl.poem"
FORMAT_VERSION = 2  # v2: + trials.npz (the full trial matrix), the read setting and the leave-one-out summary
READABLE_VERSIONS = (1, 2)


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
class FitPlan:
    """Every prompt a fit will score, before any LM call (:meth:`PoemOptimizer.fit_plan`).

    Attributes:
        inputs: the training inputs to fit on.
        vecs: their embeddings, ``(len(inputs), d)``.
        candidates: per input, its candidate demonstrations and their similarity ranks.
        sims: per input, the candidates' cosine similarities to it.
        prompts: distinct prompt prefix -> the ``(input index, order)`` trials scored under it, in
            the order the fit scores them (one backend call per prefix).
    """

    inputs: list[Example]
    vecs: np.ndarray
    candidates: list[tuple[list[Example], Order]]
    sims: list[np.ndarray]
    prompts: dict[str, list[tuple[int, Order]]]

    @property
    def trials(self) -> int:
        return sum(len(jobs) for jobs in self.prompts.values())


@dataclass
class FitReport:
    """Cost and outcome of :meth:`PoemOptimizer.fit`, with the trials it scored."""

    inputs: int
    trials: int
    lm_calls: int
    wall_s: float
    mean_reward: float
    record: FitTrials | None = field(default=None, repr=False)
    setting: Setting | None = None
    loo: LooResult | None = field(default=None, repr=False)


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
        self.demos: list[Example] = []
        self.pool: list[Example] = []  # "knn" mode: candidates drawn per query
        self._demo_vecs: np.ndarray | None = None
        self._pool_vecs: np.ndarray | None = None
        self._pool_memory: EpisodicMemory | None = None
        self._pool_text_counts: Counter[str] = Counter()
        self.memory: EpisodicMemory | None = None
        self.tables: dict[str, dict[Order, tuple[float, int]]] = {}
        # fixed mode: per concrete order, [sum correct, sum reward, trials] (best fixed order baseline)
        self.order_stats: dict[Order, list[float]] = {}
        self.lm_calls_fit = 0
        self.matrix: TrialMatrix | None = None  # None for an optimiser loaded from format v1
        self.setting: Setting | None = None  # the read setting in use (chosen by leave-one-out or given)
        self.loo: LooResult | None = None
        self.loo_summary: dict[str, Any] | None = None
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
        """Choose the demonstrations (fixed mode) or index the pool (kNN mode); no LM call."""
        n = self.n
        train = self.task.train
        if not train:
            raise ValueError(f"task {self.task.name!r} has an empty training split; POEM needs examples")
        if n > len(train) - (1 if self.config.examples == "knn" else 0):
            raise ValueError(
                f"n_examples={n} is larger than the pool of {len(train)} training examples of task "
                f"{self.task.name!r}; lower n_examples"
            )
        if self.config.examples == "fixed":
            # Seeded, label-balanced draw: round-robin over shuffled classes so a 4-shot prompt of a
            # 2-class task holds 2 + 2 (a draw of one class only would make order irrelevant).
            rng = np.random.default_rng(self.config.seed)
            by_label: dict[int, list[int]] = {}
            for i in rng.permutation(len(train)):
                by_label.setdefault(train[int(i)].label, []).append(int(i))
            labels = [lab for lab in rng.permutation(sorted(by_label))]
            chosen: list[int] = []
            while len(chosen) < n:
                for lab in labels:
                    if by_label[int(lab)] and len(chosen) < n:
                        chosen.append(by_label[int(lab)].pop())
            self.demos = [train[i] for i in chosen]
            self._demo_vecs = self.encoder.encode([d.key_text for d in self.demos])
        else:
            self.pool = list(train)
            self._index_pool(self.encoder.encode([ex.key_text for ex in self.pool]))

    def _index_pool(self, vecs: np.ndarray) -> None:
        """(Re)build the kNN index of ``self.pool`` from its embeddings ``vecs``."""
        self._pool_vecs = vecs
        self._pool_memory = EpisodicMemory(vecs.shape[1], max_keys=len(self.pool), max_values=1,
                                           encoder_name=self.identities["encoder"])
        self._pool_memory.add([str(i) for i in range(len(self.pool))], vecs, vecs)
        # copies of one text in the pool: an input excluded as its own demo drops all of them
        self._pool_text_counts = Counter(ex.key_text for ex in self.pool)

    def add_examples(self, examples: Sequence[Example]) -> None:
        """Add demonstrations to the candidate pool of a fitted ``examples="knn"`` optimiser.

        No LM call and no refit: in kNN mode the memory stores *similarity-rank* codes, which name
        no example, so a new pool example is one more candidate. A query it is among the ``n``
        most similar to gets it as a demonstration, placed by its similarity rank like any other.
        The added examples live in this object only: :meth:`save` does not write the pool
        (:meth:`load` rebuilds it from ``task.train``).

        Raises:
            ValueError: in ``examples="fixed"`` mode. There the memory holds rewards earned by
                orders of one fixed set of demonstrations, chosen at fit, so a new demonstration
                has no reward to be ordered by: fit again with it in the training split, or use
                ``examples="knn"``. Also for a label outside the task's labels.
            RuntimeError: before :meth:`fit` or :meth:`load`.
        """
        self.check_fitted()
        if self.config.examples != "knn":
            raise ValueError(
                "PoemOptimizer(examples='fixed') cannot take new demonstrations without a refit: its "
                "memory holds rewards of orders of the fixed set chosen at fit, and a new example has no "
                "reward to be ordered by. Fit again with the example in the training split, or use "
                "PoemConfig(examples='knn'), whose candidate pool can grow."
            )
        examples = list(examples)
        n_labels = len(self.task.label_names)
        for ex in examples:
            if ex.choices is None and not 0 <= ex.label < n_labels:
                raise ValueError(f"label {ex.label} of {ex.text!r:.60} is outside the task's "
                                 f"{n_labels} labels {list(self.task.label_names)}")
        if not examples:
            return
        assert self._pool_vecs is not None
        vecs = self.encoder.encode([ex.key_text for ex in examples])
        self.pool += examples
        self._index_pool(np.concatenate([self._pool_vecs, vecs]))

    def candidates(self, query_vec: np.ndarray, exclude_text: str | None = None) -> tuple[list[Example], np.ndarray]:
        """The query's ``n`` candidate demonstrations and their similarities ``(n,)``.

        Fixed mode: the fixed set (in its stored order). kNN mode: the ``n`` most similar pool
        examples, skipping one whose text equals ``exclude_text`` (a training input is never its own demo).
        """
        n = self.n
        if self.config.examples == "fixed":
            assert self._demo_vecs is not None
            return self.demos, self._demo_vecs @ query_vec
        assert self._pool_memory is not None
        skipped = self._pool_text_counts.get(exclude_text, 0) if exclude_text is not None else 0
        sims, ids = self._pool_memory.search(query_vec[None], min(len(self.pool), n + skipped))
        picked = [(int(i), float(s)) for i, s in zip(ids[0], sims[0])
                  if self.pool[int(i)].key_text != exclude_text][:n]
        if len(picked) < n:
            raise ValueError(f"task {self.task.name!r}: only {len(picked)} pool examples differ from the input "
                             f"{exclude_text!r:.80}; n_examples={n} needs more distinct training texts")
        return [self.pool[i] for i, _ in picked], np.array([s for _, s in picked])

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
        """Try orders on each training input, score them with the LM, keep the full trial matrix,
        choose the read setting (``select="loo"`` / ``"loo_guarded"``: by leave-one-out, no LM call)
        and fill the memory.

        Args:
            inputs: training inputs (default :meth:`default_inputs`).
            progress: show a tqdm bar over distinct prompts.

        Returns:
            :class:`FitReport` with the number of LM calls (= (input, order) trials), the setting
            used and the leave-one-out result.
        """
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        plan = self.fit_plan(inputs)
        inputs = plan.inputs
        trials: list[tuple[int, Order, float, float]] = []  # (input, perm, reward, correct)
        raw: list[tuple[int, Order, np.ndarray]] = []
        calls0 = self.scorer.calls
        for prefix, jobs in tqdm(plan.prompts.items(), desc=f"poem fit {self.task.name}", unit="prompt",
                                 disable=not progress):
            batch = [inputs[i] for i, _ in jobs]
            res = self.scorer.score(prefix, [self.task.suffix(ex) for ex in batch], self.task.continuations(batch))
            scores = np.asarray(res.normalised(self.task.length_normalise), dtype=np.float64)
            gold = np.array([ex.label for ex in batch])
            rewards = compute_reward(self.config.reward, scores, gold)
            correct = compute_reward("correct", scores, gold)
            trials += [(i, perm, float(r), float(c)) for (i, perm), r, c in zip(jobs, rewards, correct)]
            raw += [(i, perm, row) for (i, perm), row in zip(jobs, scores)]
        self.lm_calls_fit = self.scorer.calls - calls0
        self.matrix = build_matrix(raw, gold=[ex.label for ex in inputs], sims=plan.sims,
                                   labels=[[c.label for c in cands] for cands, _ in plan.candidates],
                                   vecs=plan.vecs, keys=[ex.key_text for ex in inputs])
        self._choose_setting()
        self._write_memory()
        record = FitTrials(inputs, plan.vecs, plan.candidates, trials, self.matrix)
        report = FitReport(
            inputs=len(inputs), trials=len(trials), lm_calls=self.lm_calls_fit,
            wall_s=time.perf_counter() - t0, mean_reward=float(np.mean([t[2] for t in trials])), record=record,
            setting=self.setting, loo=self.loo,
        )
        logger.info("POEM fit on %s: %s", self.task.name, report)
        return report

    def fit_plan(self, inputs: Sequence[Example] | None = None) -> FitPlan:
        """The prompts :meth:`fit` scores on ``inputs`` (default :meth:`default_inputs`), grouped
        by prompt prefix; embeds the inputs but makes no LM call (what a fit will cost)."""
        self.setup_examples()
        inputs = self.default_inputs() if inputs is None else list(inputs)
        if not inputs:
            raise ValueError(f"task {self.task.name!r}: no training inputs left to fit on")
        vecs = self.encoder.encode([ex.key_text for ex in inputs])
        rng = np.random.default_rng(self.config.seed + 1)
        # fixed demonstrations: one sample of orders shared by every input (a dense trial matrix,
        # and each order's prefix is scored once for all inputs); kNN: a sample per input
        shared = self.shared_orders() if self.config.examples == "fixed" else None
        # Trials grouped by prompt prefix: every distinct prefix is scored in one backend call, so
        # a prefix-caching backend runs each order's demonstrations once.
        prompts: dict[str, list[tuple[int, Order]]] = {}
        candidates: list[tuple[list[Example], Order]] = []
        sims_of: list[np.ndarray] = []
        for i, ex in enumerate(inputs):
            cands, sims = self.candidates(vecs[i], exclude_text=ex.key_text)
            candidates.append((cands, similarity_ranks(sims)))
            sims_of.append(np.asarray(sims, dtype=np.float64))
            for perm in shared if shared is not None else sample_orders(len(cands), self.config.budget, rng):
                prompts.setdefault(self.task.prefix([cands[p] for p in perm]), []).append((i, perm))
        return FitPlan(inputs, vecs, candidates, sims_of, prompts)

    def shared_orders(self) -> list[Order]:
        """The orders a fixed-demonstration fit tries on every input: all ``n!`` when ``n! <=
        budget``, else a seeded uniform sample of ``budget`` (the same for the same config)."""
        return sample_orders(self.n, self.config.budget, np.random.default_rng(self.config.seed + 1))

    def loo_encodings(self) -> tuple[str, ...]:
        """Encodings leave-one-out chooses among (``identity`` needs fixed demonstrations)."""
        return ("identity", "label", "rank") if self.config.examples == "fixed" else ("label", "rank")

    def leave_one_out(self, *, guard: bool = False) -> LooResult:
        """Score every read setting on the fit's trial matrix by leave-one-out (no LM call);
        ``guard``: keep the best one only if choosing it holds out (see :meth:`LooResult.with_guard`).
        The fit's own selection is reused when it has one (the guard reads its table; nothing is
        scored twice)."""
        if self.matrix is None:
            raise RuntimeError("leave-one-out needs the fit's trial matrix: call fit() first (a memory saved in "
                               "format v1 has none)")
        loo = self.loo
        if loo is None or (loo.guard is not None and not guard):  # none kept (loaded), or only a guarded one
            loo = loo_select(self.matrix, encodings=self.loo_encodings(),
                             most_similar_last=self.config.fallback == "kate")
        return loo.with_guard() if guard else loo

    def _choose_setting(self) -> None:
        assert self.matrix is not None
        self.loo = None
        by_loo = self.config.select in ("loo", "loo_guarded")
        if by_loo and len(set(self.matrix.keys)) >= 2:
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
        else:
            if by_loo:
                logger.warning("POEM: leave-one-out needs >= 2 distinct fit inputs; using the config's setting")
            self.setting = self.config.read_setting()
            self.loo_summary = None

    def with_setting(self, setting: Setting) -> PoemOptimizer:
        """A copy of this fitted optimiser that reads its memory under ``setting``, rebuilt from the
        trial matrix: comparing encodings, rewards, k, read rules or shrinkage costs no LM call."""
        self.check_fitted()
        if self.matrix is None:
            raise RuntimeError("this optimiser has no trial matrix (saved in format v1, before trial matrices "
                               "were kept): fit again to change its setting")
        other = copy.copy(self)
        other.config = dataclasses.replace(self.config, select="fixed", encoding=setting.encoding,  # validates
                                           reward=setting.reward, k=setting.k, read=setting.read,
                                           shrink=setting.shrink)
        other.setting = setting
        other.loo, other.loo_summary = None, None
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
        statistics, from the trial matrix under :attr:`setting`."""
        assert self.matrix is not None and self.setting is not None
        self.memory, self.tables, self.prior, order_stats = memory_from_matrix(
            self.matrix, self.setting, encoder_name=self.identities["encoder"])
        self.order_stats = order_stats if self.config.examples == "fixed" else {}

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
        (ties: higher mean reward, then lexicographic). Fixed mode only."""
        if not self.order_stats:
            raise RuntimeError("best_fixed_order needs a fit in 'fixed' example mode")
        return min(self.order_stats, key=lambda p: (-self.order_stats[p][0] / self.order_stats[p][2],
                                                   -self.order_stats[p][1] / self.order_stats[p][2], p))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted optimiser to folder ``path`` atomically: ``poem.json`` (identities,
        config, read setting, leave-one-out summary, demonstrations, reward tables), ``memory.npz``
        (the input keys) and ``trials.npz`` (the full trial matrix; absent for an optimiser that
        was itself loaded from format v1)."""
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
            "demos": [_example_to_dict(d) for d in self.demos],
            "tables": {k: [[_listify(c), m, n] for c, (m, n) in t.items()] for k, t in self.tables.items()},
            "order_stats": [[list(p), *v] for p, v in self.order_stats.items()],
            "lm_calls_fit": self.lm_calls_fit,
            "has_matrix": self.matrix is not None,
        }
        with atomic_dir(path) as tmp:
            atomic_write_json(tmp / "poem.json", state)
            self.memory.save(tmp / "memory.npz")
            if self.matrix is not None:
                self.matrix.save(tmp / "trials.npz")
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
            if state.get("has_matrix"):
                if not (path / "trials.npz").is_file():
                    raise ValueError(f"{path}: trials.npz is missing; the saved optimiser is incomplete")
                opt.matrix = TrialMatrix.load(path / "trials.npz")
        if opt.config.examples == "fixed":
            opt.demos = [_example_from_dict(d) for d in state["demos"]]
            opt._demo_vecs = encoder.encode([d.key_text for d in opt.demos])
        else:
            opt.setup_examples()
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
