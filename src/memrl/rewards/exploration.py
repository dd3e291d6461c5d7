"""Outcome-based exploration rewards (Song, Kempe & Munos 2025, arXiv 2509.06941) for TRL's GRPO.

The peer baseline memrl compares Memory-R+ with: exploration bonuses computed on a completion's
**final answer** (its outcome), not on its reasoning text. This module owns the two rewards, their
config, the per-question answer counts of the historical variant and the persistence of those
counts. It does not decide which method uses them (``registry.py``) or wire them into training.

What could be read of the paper, and from where
-----------------------------------------------
The arXiv page itself could only be read as far as its abstract here. The formulas below come
from two secondary copies of its text in stored public repositories: a section-by-section summary
that reproduces the paper's equations in LaTeX, and the OpenReview reviews of the submission.

* Historical exploration adds ``c · b_ucb(x, a_i)`` next to the GRPO advantage in the objective,
  ``Ê[ 1/n Σ_i Â(x, {y_i, a_i})_i + c · b_ucb(x, a_i) − β · KL(π ‖ π_base) ]``, with

      b_ucb(x, a) = min{1, sqrt(1 / N(x, a))},

  ``N(x, a)`` "the number of times answer a has been sampled for question x" during training.
* "Naive" UCB (the bonus above) sped up training-set exploration but helped test accuracy
  unevenly; the paper adds a baseline so frequent answers can be *penalised*:
  **UCB-Mean** subtracts the mean bonus of the current batch of samples for the question, and
  **UCB-Con** subtracts a constant ``b_0``: ``b_ucb(x, a_i) − b_0`` (with ``b_0 = 0.5`` an answer
  seen more than 4 times is penalised). UCB-Con was the best variant.
* Batch exploration replaces the bonus with a within-batch repetition penalty over the ``n``
  samples of a question,

      b_batch(x, {y_i, a_i})_i = −(1/n) · Σ_{j ≠ i} 1{a_i = a_j}.

* Constants (from a reviewer's summary of the experimental section): ``c = 0.2`` throughout;
  ``b_0 = 1`` on the easy dataset, ``b_0 = 0.5`` on the medium one.
* Nothing read restricts the bonus to right or wrong answers (a reviewer objects precisely that it
  rewards diverse *wrong* answers), and nothing scales it beyond ``c``: it applies to every answer.

What had to be assumed (each a named option where it matters)
-------------------------------------------------------------
* **Whether N counts the batch being scored.** The text does not say (a reviewer asks whether a
  new answer starts at N = 0 or 1). The ``min{1, ·}`` is only needed when N can be 0, so the
  default reads N as the count *before* the batch: a new answer earns the full bonus 1, and every
  completion of a step is scored against the same counts, whatever the order. Afterwards the
  whole step's answers are added. ``outcome_explore_count_batch=True`` adds the step's own answers
  first instead, so the bonus then also falls with repetition inside the step.
* **``c`` for the batch variant.** The text says the batch penalty *replaces* the bonus. It is
  taken to be scaled by the same ``c`` (``outcome_explore_coef``).
* **Where the term enters.** The paper adds ``c · b`` to the *advantage*. A TRL reward function
  can only add to the *reward*, which GRPO then centres per group (and by default divides by the
  group's std). So in memrl the term is group-centred like every reward. One consequence:
  **subtracting a constant ``b_0`` (UCB-Con) or the question's step mean (UCB-Mean) changes no
  advantage**, because GRPO's centring removes any per-group constant. The three historical
  variants differ only in their logged raw values, and for a trainer that adds the term to the
  advantage (:func:`ucb_values` is the pure formula for such a hook). Within a group the bonus still
  ranks rarer answers above common ones, which is its intended effect. The paper's ``c = 0.2`` was
  tuned against normalised advantages. Here it is relative to the other rewards before std
  scaling, so it is a starting value, not a transferred constant.
* **A completion with no extractable answer** (``extract_answer`` returns None) has no outcome to
  explore. Default ``"floor"``: it earns the lowest bonus, that of an answer seen infinitely often
  (``b_ucb = 0``; for the batch variant, as if it repeated every other sample, ``−(n − 1)/n``). It
  is not counted. So dropping the answer is never a way to earn novelty. ``"outcome"`` counts
  every unanswered completion of a question as one shared outcome, ``"<no answer>"``, rewarded
  like any answer. A neutral 0 is not offered: with a baseline it would beat every frequent
  answer.
* The batch is **all completions of one question in the step**, gathered from every process (a
  GRPO group can straddle ranks), and ``n`` is their number. The paper's ``1/n`` (not ``1/(n−1)``)
  is kept.
* Answers are normalised with memrl's :func:`~memrl.rewards.outcome.extract_answer`, the
  correctness reward's own extraction, so ``"1,000"`` and ``"1000"`` are one answer. It reads
  numbers (GSM8K). For LaTeX answers pass another ``answer_fn``.

Counting and process synchronisation
------------------------------------
Each call is one sampling step: all values are computed from the counts as they were before the
step, then the counts are updated. Every rank gathers the step's ``(question, answer)`` pairs
with :func:`memrl.distributed.all_gather_objects` and applies the same update, so all ranks hold
identical counts, and each rank's values equal those one process would give for the whole batch.
The counts also grow on every call made outside training, an evaluation pass included.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memrl.distributed import all_gather_objects
from memrl.io import atomic_write_text
from memrl.names import check_choice
from memrl.options import build_config, check_field_types
from memrl.rewards.common import check_lengths, completion_texts, question_keys
from memrl.rewards.outcome import extract_answer
from memrl.rewards.ownership import ProcessBound

logger = logging.getLogger(__name__)

BASELINES = ("none", "mean", "constant")
MISSING_POLICIES = ("floor", "outcome")
NO_ANSWER = "<no answer>"  # never produced by extract_answer (it returns digits), so no collision
FORMAT_NAME = "memrl.outcome_counts"
FORMAT_VERSION = 1


class ExplorationStateError(ValueError):
    """A saved outcome-count file is truncated, foreign, of another version or incompatible."""


@dataclass
class OutcomeExplorationConfig:
    """Outcome-based exploration settings. The defaults are the paper's: ``c = 0.2``, UCB-Con with
    ``b_0 = 0.5``.

    Field names carry an ``outcome_explore_`` prefix so they can share one command-line
    namespace with TRL's ``GRPOConfig``.
    """

    outcome_explore_coef: float = field(default=0.2, metadata={"help": "c, weight of the exploration term (paper: 0.2)."})
    outcome_explore_baseline: str = field(default="constant", metadata={"help": "Historical bonus baseline: 'none' (naive UCB), 'mean' (UCB-Mean: the question's mean bonus in the step) or 'constant' (UCB-Con: b_0). Under GRPO's group centring all three give the same advantages."})
    outcome_explore_b0: float = field(default=0.5, metadata={"help": "b_0 of UCB-Con (paper: 0.5 on its medium dataset, 1.0 on its easy one)."})
    outcome_explore_count_batch: bool = field(default=False, metadata={"help": "Count the step's own answers in N(q, a) before scoring (default: N is the count before the step)."})
    outcome_explore_missing: str = field(default="floor", metadata={"help": "A completion with no extractable answer: 'floor' (lowest bonus, not counted) or 'outcome' (all such completions of a question are one shared answer)."})
    outcome_explore_key_column: str = field(default="question", metadata={"help": "Dataset column identifying the question (text or id); falls back to the prompt's last user turn."})

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("outcome_explore_coef", "outcome_explore_b0"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.outcome_explore_coef < 0:
            raise ValueError(
                f"outcome_explore_coef must be >= 0, got {self.outcome_explore_coef}: a negative c "
                "would reward repeating answers; set it to 0 to switch the term off"
            )
        choices = {"outcome_explore_baseline": BASELINES, "outcome_explore_missing": MISSING_POLICIES}
        for name, allowed in choices.items():
            check_choice(name, getattr(self, name), allowed)
        if not self.outcome_explore_key_column:
            raise ValueError("outcome_explore_key_column must name a dataset column, e.g. 'question'")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> OutcomeExplorationConfig:
        """Build from a dict, refusing unknown keys with the closest valid names."""
        return build_config(cls, values)


# --------------------------------------------------------------------------- pure formulas
def ucb_bonus(counts: Any) -> np.ndarray:
    """``b_ucb = min{1, sqrt(1 / N)}`` for each count ``N`` (``N = 0`` gives 1, via the min).

    >>> ucb_bonus([0, 1, 4, 16]).tolist()
    [1.0, 1.0, 0.5, 0.25]
    """
    n = np.asarray(counts, dtype=np.float64)
    if np.any(n < 0):
        raise ValueError("answer counts must be >= 0")
    with np.errstate(divide="ignore"):
        return np.minimum(1.0, np.sqrt(1.0 / n))


def ucb_values(bonus: Any, groups: Any, coef: float, baseline: str = "constant", b0: float = 0.5) -> np.ndarray:
    """``c · (b_i − β_i)``, the historical term with the paper's baselines.

    ``β_i`` is 0 (``"none"``, naive UCB), the mean of ``b`` over the entries sharing ``i``'s group
    (``"mean"``, UCB-Mean), or ``b0`` (``"constant"``, UCB-Con).

    >>> ucb_values([1.0, 0.5, 0.25, 1.0], ["q", "q", "q", "p"], 0.2, "constant", 0.5).round(3).tolist()
    [0.1, 0.0, -0.05, 0.1]
    >>> ucb_values([1.0, 0.5, 0.0], ["q", "q", "q"], 1.0, "mean").tolist()
    [0.5, 0.0, -0.5]
    """
    b = np.asarray(bonus, dtype=np.float64)
    if baseline == "none":
        base = np.zeros_like(b)
    elif baseline == "constant":
        base = np.full_like(b, float(b0))
    elif baseline == "mean":
        groups = list(groups)
        if len(groups) != len(b):
            raise ValueError(f"got {len(b)} bonuses but {len(groups)} group ids")
        means = _group_means(groups, b)
        base = np.array([means[g] for g in groups], dtype=np.float64)
    else:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {BASELINES}")
    return coef * (b - base)


def batch_repeat_penalty(answers: Sequence[Any], groups: Sequence[Any]) -> np.ndarray:
    """``b_batch_i = −(1/n) Σ_{j≠i} 1{a_i = a_j}`` with ``n`` the size of ``i``'s group.

    ``None`` answers (no extractable answer) get the floor, ``−(n − 1)/n``, as if they matched
    every other sample of the group.

    >>> batch_repeat_penalty(["5", "5", "5", "7"], ["q"] * 4).tolist()
    [-0.5, -0.5, -0.5, 0.0]
    >>> batch_repeat_penalty(["5", None, "5"], ["q", "q", "p"]).tolist()  # "5" of q has no twin in q
    [0.0, -0.5, 0.0]
    """
    if len(answers) != len(groups):
        raise ValueError(f"got {len(answers)} answers but {len(groups)} group ids")
    pairs = list(zip(groups, answers))
    return _repeat_penalty(pairs, pairs)


def _group_means(groups: Sequence[Any], values: np.ndarray) -> dict[Any, float]:
    sums: dict[Any, float] = defaultdict(float)
    sizes: Counter = Counter(groups)
    for g, v in zip(groups, values):
        sums[g] += float(v)
    return {g: sums[g] / sizes[g] for g in sizes}


def _repeat_penalty(pairs: Sequence[tuple[Any, Any]], everyone: Sequence[tuple[Any, Any]]) -> np.ndarray:
    """``b_batch`` of each ``(group, answer)`` in ``pairs``, with repeats counted over ``everyone``
    (the whole step; ``pairs`` is one process's share of it)."""
    size = Counter(g for g, _ in everyone)
    same = Counter(p for p in everyone if p[1] is not None)
    repeats = [size[g] - 1 if a is None else same[(g, a)] - 1 for g, a in pairs]
    return np.array([-r / size[g] for r, (g, _) in zip(repeats, pairs)], dtype=np.float64)


# --------------------------------------------------------------------------- reward callables
def _callable_name(fn: Callable[..., Any]) -> str:
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{target.__module__}.{target.__qualname__}"


class _OutcomeExploration:
    """Shared parsing and cross-process gathering of one step's ``(question, answer)`` pairs."""

    __name__ = "outcome_exploration"

    def __init__(
        self,
        config: OutcomeExplorationConfig | None = None,
        *,
        answer_fn: Callable[[str], str | None] = extract_answer,
        **overrides: Any,
    ) -> None:
        if config is None:
            config = OutcomeExplorationConfig.from_dict(overrides)
        elif overrides:
            config = OutcomeExplorationConfig.from_dict({**asdict(config), **overrides})
        if not callable(answer_fn):
            raise TypeError(f"answer_fn must be callable (text -> answer or None), got {type(answer_fn).__name__}")
        self.config = config
        self.answer_fn = answer_fn
        self.calls = 0  # steps scored

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float]:
        return self.compute(prompts=prompts, completions=completions, **kwargs)["value"].tolist()

    def _step(self, prompts, completions, kwargs) -> tuple[list[str], list[str | None], list[tuple[str, str | None]]]:
        """Local question keys and answer keys, plus the whole step's pairs from every rank."""
        texts = completion_texts(completions)
        n = len(texts)
        questions = question_keys(prompts, n, kwargs, self.config.outcome_explore_key_column)
        if prompts is not None:
            check_lengths(n, prompts=prompts)
        answers = [self._answer_key(t) for t in texts]
        # Every rank must take part in the gather, even one with an empty shard.
        parts = all_gather_objects({"questions": questions, "answers": answers})
        everyone = [pair for part in parts for pair in zip(part["questions"], part["answers"])]
        return questions, answers, everyone

    def _answer_key(self, text: str) -> str | None:
        answer = self.answer_fn(text)
        if answer is None:
            return NO_ANSWER if self.config.outcome_explore_missing == "outcome" else None
        return str(answer)

    @staticmethod
    def _step_metrics(everyone: list[tuple[str, str | None]]) -> dict[str, float]:
        per_question: dict[str, set] = defaultdict(set)
        for q, a in everyone:
            per_question[q].add(a)
        distinct = [len(answers - {None, NO_ANSWER}) for answers in per_question.values()]
        return {
            "no_answer_frac": sum(a is None or a == NO_ANSWER for _, a in everyone) / max(len(everyone), 1),
            "distinct_answers_per_question": float(np.mean(distinct)) if distinct else 0.0,
        }


class OutcomeUCBReward(_OutcomeExploration, ProcessBound):
    """Historical outcome exploration: ``c · (min{1, 1/sqrt(N(q, a))} − β)`` per completion.

    ``N(q, a)`` counts how often answer ``a`` was produced for question ``q`` in earlier steps
    (see the module docstring for the baselines ``β`` and the options).

    Args:
        config: :class:`OutcomeExplorationConfig` (or keyword overrides of it).
        answer_fn: ``text -> normalised answer or None``; default memrl's ``extract_answer``.

    Example:
        >>> r = OutcomeUCBReward(outcome_explore_coef=1.0, outcome_explore_baseline="none")
        >>> r(completions=["<answer>1,000</answer>", "<answer>7</answer>"], question=["q", "q"])
        [1.0, 1.0]
        >>> r(completions=["<answer>1000</answer>"] * 2, question=["q", "q"])  # N(q, 1000) = 1
        [1.0, 1.0]
        >>> [round(v, 4) for v in r(completions=["1000", "9"], question=["q", "q"])]  # N(q, 1000) = 3
        [0.5774, 1.0]
    """

    __name__ = "outcome_ucb_reward"
    _state_name = "answer counts"  # ProcessBound: what a copy in another process would lose

    def __init__(self, config: OutcomeExplorationConfig | None = None, *,
                 answer_fn: Callable[[str], str | None] = extract_answer, **overrides: Any) -> None:
        super().__init__(config, answer_fn=answer_fn, **overrides)
        self.counts: dict[str, dict[str, int]] = {}
        self._bind_process()  # the process whose checkpoints save these counts

    def __repr__(self) -> str:
        c = self.config
        return (f"OutcomeUCBReward(c={c.outcome_explore_coef}, baseline={c.outcome_explore_baseline!r}, "
                f"questions={len(self.counts)}, answers={self.num_answers})")

    @property
    def num_answers(self) -> int:
        """Distinct ``(question, answer)`` pairs counted so far."""
        return sum(len(a) for a in self.counts.values())

    def count(self, question: str, answer: str) -> int:
        """``N(question, answer)`` as it stands now."""
        return self.counts.get(question, {}).get(answer, 0)

    def compute(self, prompts=None, completions=None, **kwargs: Any) -> dict[str, np.ndarray]:
        """Score one step and add its answers to the counts.

        Returns float arrays, one value per local completion: ``value`` (what TRL receives),
        ``bonus`` (``b_ucb`` before baseline and ``c``) and ``count`` (the ``N`` it used; -1
        for a completion without an answer under ``"floor"``).
        """
        return self._run(prompts, completions, kwargs, update=True)

    def score(self, prompts=None, completions=None, **kwargs: Any) -> dict[str, np.ndarray]:
        """What :meth:`compute` would return for this batch, without counting its answers (the
        counts, ``calls`` and the logged metrics are left alone). ``memrl serve`` answers each
        request with this against the counts committed at the previous step."""
        return self._run(prompts, completions, kwargs, update=False)

    def _run(self, prompts, completions, kwargs: dict[str, Any], update: bool) -> dict[str, np.ndarray]:
        self._check_process()
        c = self.config
        questions, answers, everyone = self._step(prompts, completions, kwargs)
        step = Counter(pair for pair in everyone if pair[1] is not None)

        def n_of(q: str, a: str) -> int:
            return self.count(q, a) + (step[(q, a)] if c.outcome_explore_count_batch else 0)

        def bonus_of(pairs: list[tuple[str, str | None]]) -> tuple[np.ndarray, np.ndarray]:
            counts = np.array([-1 if a is None else n_of(q, a) for q, a in pairs], dtype=np.int64)
            # an unanswered completion gets b = 0, the limit of an answer seen infinitely often
            bonus = np.where(counts < 0, 0.0, ucb_bonus(np.maximum(counts, 0)))
            return counts, bonus

        local_counts, local_bonus = bonus_of(list(zip(questions, answers)))
        if c.outcome_explore_baseline == "mean":
            # UCB-Mean's baseline is the question's mean bonus over the whole step (all ranks).
            _, all_bonus = bonus_of(everyone)
            means = _group_means([q for q, _ in everyone], all_bonus)
            base = np.array([means[q] for q in questions], dtype=np.float64)
            value = c.outcome_explore_coef * (local_bonus - base)
        else:
            value = ucb_values(local_bonus, questions, c.outcome_explore_coef, c.outcome_explore_baseline,
                               c.outcome_explore_b0)

        result = {"value": value, "bonus": local_bonus, "count": local_counts.astype(np.float64)}
        if not update:
            return result
        # Metrics on the whole step, before the update (so "new" means unseen before this step).
        answered = [(q, a) for q, a in everyone if a is not None]
        new_frac = sum(self.count(q, a) == 0 for q, a in answered) / max(len(answered), 1)
        for (q, a), k in step.items():
            per_q = self.counts.setdefault(q, {})
            per_q[a] = per_q.get(a, 0) + k
        self.calls += 1
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric("outcome_explore/ucb_questions", float(len(self.counts)))
            log_metric("outcome_explore/ucb_answers", float(self.num_answers))
            log_metric("outcome_explore/ucb_new_answer_frac", float(new_frac))
            for name, v in self._step_metrics(everyone).items():
                log_metric(f"outcome_explore/{name}", float(v))
        return result

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """A JSON-able dict restoring the counts exactly (plus what they were keyed by)."""
        from memrl.version import __version__

        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "memrl_version": __version__,
            "key_column": self.config.outcome_explore_key_column,
            "answer_fn": _callable_name(self.answer_fn),
            "config": asdict(self.config),
            "calls": self.calls,
            "counts": {q: dict(a) for q, a in self.counts.items()},
        }

    def load_state_dict(self, state: Any, source: str = "state") -> None:
        """Replace the counts with ``state`` after checking all of it; on any error nothing
        changes. The live config (``c``, baseline, ...) is kept: only the counts are restored,
        and they must have been keyed by the same question column and answer function."""
        if not isinstance(state, dict):
            raise ExplorationStateError(f"{source} is not an outcome-count state (a {type(state).__name__})")
        if state.get("format") != FORMAT_NAME:
            raise ExplorationStateError(
                f"{source} is not a memrl outcome-count state (format {state.get('format')!r}, "
                f"expected {FORMAT_NAME!r})"
            )
        if state.get("version") != FORMAT_VERSION:
            raise ExplorationStateError(
                f"{source} has outcome-count format version {state.get('version')!r}; this memrl "
                f"reads version {FORMAT_VERSION}"
            )
        key_column = state.get("key_column")
        if key_column != self.config.outcome_explore_key_column:
            raise ExplorationStateError(
                f"{source} counts are keyed by column {key_column!r}, these rewards by "
                f"{self.config.outcome_explore_key_column!r}; every question would look new"
            )
        fn = state.get("answer_fn")
        if fn != _callable_name(self.answer_fn):
            raise ExplorationStateError(
                f"{source} counts answers normalised by {fn!r}, these rewards use "
                f"{_callable_name(self.answer_fn)!r}; the same answer could be counted twice"
            )
        counts, calls = state.get("counts"), state.get("calls", 0)
        if not isinstance(counts, dict):
            raise ExplorationStateError(f"{source}: 'counts' must map questions to answer counts")
        fresh: dict[str, dict[str, int]] = {}
        for q, per_q in counts.items():
            if not isinstance(per_q, dict):
                raise ExplorationStateError(f"{source}: counts of question {q!r:.60} are not a mapping")
            for a, k in per_q.items():
                if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                    raise ExplorationStateError(
                        f"{source}: count of answer {a!r:.40} for question {q!r:.60} must be an integer "
                        f">= 1, got {k!r}"
                    )
            fresh[str(q)] = {str(a): int(k) for a, k in per_q.items()}
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
            raise ExplorationStateError(f"{source}: 'calls' must be an integer >= 0, got {calls!r}")
        self.counts, self.calls = fresh, calls

    def save(self, path: str | os.PathLike) -> Path:
        """Write the counts to one JSON file, atomically (temp file + rename): an interrupted
        save never corrupts an existing file."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.state_dict(), ensure_ascii=False) + "\n")
        logger.info("saved %r to %s", self, path)
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Restore counts saved by :meth:`save`. A missing, truncated, foreign or incompatible
        file raises (``FileNotFoundError`` / :class:`ExplorationStateError`) and leaves this
        object untouched."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no outcome-count file at {path}")
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ExplorationStateError(f"{path} is truncated or not a JSON outcome-count file ({exc})") from None
        self.load_state_dict(state, source=str(path))


class OutcomeBatchReward(_OutcomeExploration):
    """Batch outcome exploration: ``−c · (1/n) Σ_{j≠i} 1{a_i = a_j}`` over the ``n`` completions
    of the same question in the step (gathered from every process). Stateless across steps.

    Args:
        config: :class:`OutcomeExplorationConfig` (or keyword overrides of it); uses
            ``outcome_explore_coef``, ``outcome_explore_missing`` and ``outcome_explore_key_column``.
        answer_fn: ``text -> normalised answer or None``; default memrl's ``extract_answer``.

    Example:
        >>> r = OutcomeBatchReward(outcome_explore_coef=1.0)
        >>> r(completions=["<answer>5</answer>", "5.0", "<answer>$5</answer>", "7"], question=["q"] * 4)
        [-0.5, -0.5, -0.5, 0.0]
    """

    __name__ = "outcome_batch_reward"

    def __repr__(self) -> str:
        return f"OutcomeBatchReward(c={self.config.outcome_explore_coef})"

    def compute(self, prompts=None, completions=None, **kwargs: Any) -> dict[str, np.ndarray]:
        """Score one step. Returns ``value`` (what TRL receives) and ``penalty`` (``b_batch``)."""
        questions, answers, everyone = self._step(prompts, completions, kwargs)
        penalty = _repeat_penalty(list(zip(questions, answers)), everyone)
        self.calls += 1
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for name, v in self._step_metrics(everyone).items():
                log_metric(f"outcome_explore/{name}", float(v))
        return {"value": self.config.outcome_explore_coef * penalty, "penalty": penalty}
