"""Calling the reward functions on a list of samples, the way TRL calls them on a batch.

This module owns the translation from the service's samples to the reward functions' keywords
(``prompts``, ``completions``, the dataset columns ``answer`` and ``question``, ``completion_ids``,
``trainer_state``) and back to per-sample values, in two flavours:

* :meth:`BatchScorer.commit`: every reward function called once on the whole batch, exactly as
  TRL's ``GRPOTrainer`` does (the two memory rewards share one :meth:`MemoryRPlus.compute`, which
  scores and writes the memory; outcome-ucb counts the answers): the step's commit;
* :meth:`BatchScorer.preview`: the same values computed without changing any state
  (:meth:`MemoryRPlus.score`, :meth:`OutcomeUCBReward.score`; the other rewards are pure): a
  request answered against the committed state.

No reward arithmetic lives here: every number comes from the reward objects of
:func:`memrl.rewards.registry.build_rewards`. The total is TRL's: the weighted sum of the rewards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from memrl.rewards.baselines import CosineLengthReward
from memrl.rewards.common import completion_texts, question_keys
from memrl.rewards.exploration import OutcomeBatchReward, OutcomeUCBReward
from memrl.serve.config import RewardSpec
from memrl.serve.protocol import RequestError, Sample

RAW_KEYS = ("exploit_raw", "explore_raw")


@dataclass
class Scored:
    """Per-sample values of one batch: each reward by name, memory raw values, and the total."""

    values: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    total: np.ndarray

    def take(self, index: Sequence[int]) -> Scored:
        idx = np.asarray(index, dtype=np.int64)
        return Scored({k: v[idx] for k, v in self.values.items()}, {k: v[idx] for k, v in self.raw.items()},
                      self.total[idx])

    def response(self, names: Sequence[str], **extra: Any) -> dict[str, Any]:
        """The ``/get_reward`` answer: OpenRLHF's ``rewards``/``scores``/``extra_logs`` plus memrl's own."""
        return {
            "rewards": _floats(self.total),
            "scores": _floats(self.values[names[0]]),  # the outcome reward (correctness or cosine)
            "extra_logs": {name: _floats(self.values[name]) for name in names},
            "memrl": {**extra, "raw": {k: _floats(v) for k, v in self.raw.items()}},
        }


def _floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, np.float64)]


class BatchScorer:
    """The reward functions of ``spec`` applied to batches of :class:`Sample`."""

    def __init__(self, spec: RewardSpec, *, has_tokenizer: bool = False) -> None:
        self.spec = spec
        self.memory = spec.memory
        self.weights = np.asarray(spec.weights, np.float64)
        self.needs_ids = any(isinstance(f, CosineLengthReward) and getattr(f, "tokenizer", None) is None
                             for f in spec.funcs) and not has_tokenizer
        key_columns = set()
        if self.memory is not None:
            key_columns.add(self.memory.config.memory_key_column)
        for f in spec.funcs:
            if isinstance(f, (OutcomeUCBReward, OutcomeBatchReward)):
                key_columns.add(f.config.outcome_explore_key_column)
        self.key_columns = sorted(key_columns - {"question"})

    def check(self, samples: Sequence[Sample], first: int = 0) -> None:
        """Requirements of these rewards a sample must meet (400 naming the field otherwise)."""
        if self.needs_ids:
            for i, s in enumerate(samples):
                if s.completion_ids is None:
                    raise RequestError(400, f"completion_ids[{first + i}]", "--method cosine counts completion "
                                       "tokens: send completion_ids, or start the server with --tokenizer")

    def kwargs(self, samples: Sequence[Sample], step: int,
               log_metric: Callable[[str, float], None] | None = None) -> dict[str, Any]:
        names = sorted({k for s in samples for k in s.columns})
        kwargs: dict[str, Any] = {name: [s.columns.get(name) for s in samples] for name in names}
        for column in self.key_columns:  # a configured question column the client did not name
            if column not in kwargs:
                kwargs[column] = kwargs["question"]
        if all(s.completion_ids is not None for s in samples):
            kwargs["completion_ids"] = [s.completion_ids for s in samples]
        kwargs["prompts"] = [s.prompt for s in samples]
        kwargs["completions"] = [s.completion for s in samples]
        kwargs["trainer_state"] = SimpleNamespace(global_step=step)
        if log_metric is not None:
            kwargs["log_metric"] = log_metric
        return kwargs

    def encode(self, samples: Sequence[Sample], step: int) -> int:
        """Encode what the memory rewards will read, in one batched pass (0 without a memory)."""
        if self.memory is None or not samples:
            return 0
        return self.memory.encode_inputs(**self.kwargs(samples, step))

    def _scored(self, values: dict[str, np.ndarray], raw: dict[str, np.ndarray]) -> Scored:
        table = np.stack([values[name] for name in self.spec.names])
        return Scored(values, raw, np.nansum(table * self.weights[:, None], axis=0))

    def commit(self, samples: Sequence[Sample], step: int,
               log_metric: Callable[[str, float], None] | None = None) -> Scored:
        """Every reward function on the whole batch, as TRL calls them (writes the state)."""
        kwargs = self.kwargs(samples, step, log_metric)
        raw: dict[str, np.ndarray] = {}
        if self.memory is not None:
            result = self.memory.compute(**kwargs)  # the memory rewards below return this same result
            raw = {k: np.asarray(result[k], np.float64) for k in RAW_KEYS}
        values = {name: np.asarray(f(**kwargs), np.float64) for name, f in zip(self.spec.names, self.spec.funcs)}
        return self._scored(values, raw)

    def preview(self, samples: Sequence[Sample], step: int) -> Scored:
        """The batch's values against the state as it is, changing nothing."""
        kwargs = self.kwargs(samples, step)
        raw: dict[str, np.ndarray] = {}
        memory_result = None
        if self.memory is not None:
            memory_result = self.memory.score(**kwargs)
            raw = {k: np.asarray(memory_result[k], np.float64) for k in RAW_KEYS}
        values = {}
        for name, f in zip(self.spec.names, self.spec.funcs):
            if memory_result is not None and f is self.memory.exploit_reward:
                values[name] = np.asarray(memory_result["exploit"], np.float64)
            elif memory_result is not None and f is self.memory.explore_reward:
                values[name] = np.asarray(memory_result["explore"], np.float64)
            elif isinstance(f, OutcomeUCBReward):
                values[name] = np.asarray(f.score(**kwargs)["value"], np.float64)
            elif isinstance(f, OutcomeBatchReward):
                raise RuntimeError("outcome-batch has no per-request answer (check_respond_mode refuses it)")
            else:
                values[name] = np.asarray(f(**kwargs), np.float64)
        return self._scored(values, raw)

    def validate(self, samples: Sequence[Sample], step: int) -> None:
        """Run every input check the commit will run, without changing state (respond=commit):
        the pure rewards are computed and dropped, the stateful ones parse their inputs."""
        kwargs = self.kwargs(samples, step)
        if self.memory is not None:
            self.memory.encode_inputs(**kwargs)
        for f in self.spec.funcs:
            if isinstance(f, OutcomeUCBReward):
                f.score(**kwargs)
            elif isinstance(f, OutcomeBatchReward):  # stateless; its inputs are the texts and questions
                texts = completion_texts(kwargs["completions"])
                question_keys(kwargs["prompts"], len(texts), kwargs, f.config.outcome_explore_key_column)
            elif self.memory is None or f not in (self.memory.exploit_reward, self.memory.explore_reward):
                f(**kwargs)
