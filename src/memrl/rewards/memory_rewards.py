"""Memory-R / Memory-R+ intrinsic rewards (Le et al., 2025, arXiv 2504.02273) for TRL's GRPO.

Two episodic memories of past completions, keyed by question embeddings:

* success memory ``M_s`` (outcome reward > θ_s): **exploit** reward
  ``R_exploit = −‖Enc(a) − mean(B(M_s, q))‖₂`` pulls towards what worked on similar questions;
* failure memory ``M_f`` (outcome reward ≤ θ_f): **explore** reward
  ``R_explore = 1 − max_{b ∈ B(M_f, q)} cos(Enc(a), b)`` pushes away from what failed.

Each is min-max normalised over a running window and weighted (λ_s, λ_e); explore is off during
a warm-up counted in optimizer steps. Memory-R = exploit only, Memory-R+ = both.

Semantics (fixing the reference code, see the spec):

* every completion is keyed by its **own** question (the reference used ``prompts[0]``);
* ``score_then_write`` (default): the whole batch is scored against the memory as it was before
  the batch, then written. A step's rewards do not depend on completion order, and a wrong but
  novel answer earns explore reward. (Later steps can: the memories' FIFO lists and the
  normalisers' windows keep the newest entries in completion order, which matters only when a
  batch overflows a list or a window.) ``write_then_score`` reproduces the reference: each completion is
  inserted, then scored, in order (a wrong answer then always gets explore 0).
* each completion is encoded once per step although two reward functions read it: the first
  function called on a batch computes both rewards and writes the memory; the second returns the
  cached result.

Neutral values when nothing is retrieved (empty memory for that question's neighbourhood):
exploit 0.0 ("no pull") and explore 1.0 ("everything is novel", as the reference); these are not
fed to the normaliser, so they do not stretch its bounds. All completions of one question share
the retrieval, so a neutral value is constant within the GRPO group and adds no advantage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from memrl.distributed import all_gather_objects
from memrl.encoders import DEFAULT_ENCODER, Encoder
from memrl.io import atomic_dir
from memrl.memory import EpisodicMemory
from memrl.names import MEMORY_SEMANTICS as SEMANTICS
from memrl.names import PROMPT_STYLES as STYLES
from memrl.options import check_field_types
from memrl.rewards.common import check_lengths, completion_texts, question_keys
from memrl.rewards.outcome import CorrectnessReward
from memrl.rewards.scoring import RunningMinMax, exploit_raw, explore_raw

logger = logging.getLogger(__name__)

STORE_MODES = ("reasoning", "completion")
EXPLOIT_EMPTY = 0.0
EXPLORE_EMPTY = 1.0


@dataclass
class MemoryRewardConfig:
    """Memory-R / Memory-R+ settings; defaults are the paper's GSM8K ones.

    Field names carry a ``memory_`` prefix so they can share one command-line namespace with
    TRL's ``GRPOConfig`` (TRL-style ``metadata["help"]`` feeds ``--help`` and YAML configs).
    """

    memory_explore: bool = field(default=True, metadata={"help": "Memory-R+ (True) or Memory-R, exploit only (False)."})
    memory_top_k: int = field(default=1, metadata={"help": "K stored questions read per query (paper: 1 on GSM8K, 20 on AI-MO)."})
    memory_max_keys: int = field(default=7473, metadata={"help": "N, most questions kept per memory (paper: |D|; FIFO eviction)."})
    memory_max_values: int = field(default=100, metadata={"help": "L, most responses kept per question (oldest dropped)."})
    memory_norm_window: int = field(default=100, metadata={"help": "w, raw values in the running min-max window."})
    memory_norm_eps: float = field(default=1e-8, metadata={"help": "ε in (R − min)/(max − min + ε)."})
    memory_explore_warmup_steps: int = field(default=50, metadata={"help": "Optimizer steps with explore off (paper: 50)."})
    memory_exploit_weight: float = field(default=1.0, metadata={"help": "λ_s, weight of the normalised exploit reward."})
    memory_explore_weight: float = field(default=1.0, metadata={"help": "λ_e, weight of the normalised explore reward."})
    memory_success_threshold: float = field(default=0.5, metadata={"help": "θ_s: outcome > θ_s goes to the success memory."})
    memory_failure_threshold: float = field(default=0.5, metadata={"help": "θ_f: outcome ≤ θ_f goes to the failure memory."})
    memory_store: str = field(default="reasoning", metadata={"help": "What is encoded and stored: 'reasoning' (the <think>/<reasoning> span, else the whole completion) or 'completion'."})
    memory_style: str = field(default="think", metadata={"help": "Tag style of the reasoning span: 'think' or 'reasoning'."})
    memory_semantics: str = field(default="score_then_write", metadata={"help": "'score_then_write' (order-invariant) or 'write_then_score' (reference code)."})
    memory_key_column: str = field(default="question", metadata={"help": "Dataset column holding the question text (falls back to the prompt's last user turn)."})
    memory_id_column: str | None = field(default=None, metadata={"help": "Optional dataset column with a question id used as the memory key id."})
    memory_backend: str = field(default="exact", metadata={"help": "kNN backend: 'exact' (numpy) or 'faiss'."})
    memory_dtype: str = field(default="float32", metadata={"help": "Vector storage: 'float32' or 'float16'."})
    memory_encoder: str = field(default=DEFAULT_ENCODER, metadata={"help": "sentence-transformers encoder for questions and responses."})

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("memory_top_k", "memory_max_keys", "memory_max_values", "memory_norm_window"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.memory_explore_warmup_steps < 0:
            raise ValueError("memory_explore_warmup_steps must be >= 0")
        choices = {"memory_store": STORE_MODES, "memory_style": STYLES, "memory_semantics": SEMANTICS,
                   "memory_backend": ("exact", "faiss"), "memory_dtype": ("float32", "float16")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {allowed}")
        if self.memory_failure_threshold > self.memory_success_threshold:
            raise ValueError(
                "memory_failure_threshold must be <= memory_success_threshold, otherwise a completion "
                "could be stored as both a success and a failure"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MemoryRewardConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown memory reward option(s) {unknown}; valid: {sorted(known)}")
        return cls(**values)


def reasoning_span(text: str, style: str = "think") -> str:
    """The text inside the first ``<think>``/``<reasoning>`` block; the whole text if there is none
    (tiny models often skip the tags, and their output is still what they tried)."""
    start, end = f"<{style}>", f"</{style}>"
    i = text.find(start)
    if i < 0:
        return text
    j = text.find(end, i + len(start))
    span = text[i + len(start) : j if j >= 0 else len(text)].strip()
    return span or text


class _MemoryRewardFunction:
    """One TRL reward function (exploit or explore) reading its share of a shared computation."""

    def __init__(self, owner: MemoryRPlus, component: str) -> None:
        self.owner = owner
        self.component = component
        self.__name__ = f"memory_{component}_reward"

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float]:
        result = self.owner.compute(prompts=prompts, completions=completions, **kwargs)
        return result[self.component].tolist()

    def __repr__(self) -> str:
        return f"<{self.__name__} of {self.owner!r}>"


class MemoryRPlus:
    """Memory-R / Memory-R+ rewards with their two episodic memories.

    Args:
        config: :class:`MemoryRewardConfig` (or keyword overrides of it).
        encoder: an :class:`~memrl.encoders.Encoder`; built from ``config.memory_encoder`` if None.
        outcome: callable ``(prompts, completions, **kwargs) -> list[float]`` deciding success;
            default GSM8K correctness on the ``answer`` column.

    Use ``reward_functions()`` as (part of) TRL's ``reward_funcs``:

    >>> rewards = MemoryRPlus(memory_top_k=1)                        # doctest: +SKIP
    >>> trainer = GRPOTrainer(model, reward_funcs=[correctness, *rewards.reward_functions()],
    ...                       args=grpo_config, train_dataset=ds)    # doctest: +SKIP
    """

    def __init__(
        self,
        config: MemoryRewardConfig | None = None,
        *,
        encoder: Encoder | None = None,
        outcome: Callable[..., Sequence[float]] | None = None,
        **overrides: Any,
    ) -> None:
        if config is None:
            config = MemoryRewardConfig.from_dict(overrides)
        elif overrides:
            config = MemoryRewardConfig.from_dict({**asdict(config), **overrides})
        self.config = config
        self.encoder = encoder if encoder is not None else Encoder(config.memory_encoder)
        self.outcome = outcome if outcome is not None else CorrectnessReward()
        self.success_memory = self._new_memory()
        self.failure_memory = self._new_memory()
        self.exploit_norm = RunningMinMax(config.memory_norm_window, config.memory_norm_eps)
        self.explore_norm = RunningMinMax(config.memory_norm_window, config.memory_norm_eps)
        self.exploit_reward = _MemoryRewardFunction(self, "exploit")
        self.explore_reward = _MemoryRewardFunction(self, "explore")
        self.calls = 0  # batches computed (stands in for the step count outside a trainer)
        self.timings = {"encode_s": 0.0, "memory_s": 0.0, "total_s": 0.0}
        self._last_key: str | None = None
        self._last_result: dict[str, np.ndarray] | None = None

    def _new_memory(self) -> EpisodicMemory:
        c = self.config
        return EpisodicMemory(
            dim=self.encoder.dim, max_keys=c.memory_max_keys, max_values=c.memory_max_values,
            backend=c.memory_backend, dtype=c.memory_dtype, encoder_name=self.encoder.name,
        )

    def __repr__(self) -> str:
        kind = "Memory-R+" if self.config.memory_explore else "Memory-R"
        return (f"MemoryRPlus({kind}, K={self.config.memory_top_k}, success={len(self.success_memory)} keys/"
                f"{self.success_memory.num_values} values, failure={len(self.failure_memory)} keys/"
                f"{self.failure_memory.num_values} values)")

    def reward_functions(self) -> list[_MemoryRewardFunction]:
        """``[exploit]`` for Memory-R, ``[exploit, explore]`` for Memory-R+."""
        if self.config.memory_explore:
            return [self.exploit_reward, self.explore_reward]
        return [self.exploit_reward]

    # ------------------------------------------------------------------ core
    def compute(self, prompts=None, completions=None, **kwargs: Any) -> dict[str, np.ndarray]:
        """Score a batch and (once per batch) write it to the memories.

        Returns a dict of float arrays, one value per completion: ``exploit`` and ``explore``
        (normalised and weighted; what TRL receives), ``exploit_raw`` and ``explore_raw`` (NaN
        where nothing was retrieved) and ``outcome``.
        """
        texts = completion_texts(completions)
        n = len(texts)
        c = self.config
        questions = question_keys(prompts, n, kwargs, c.memory_key_column)
        key_ids = questions
        if c.memory_id_column:
            key_ids = question_keys(prompts, n, kwargs, c.memory_id_column)
        if prompts is not None:
            check_lengths(n, prompts=prompts)
        step = self._step(kwargs.get("trainer_state"))
        cache_key = self._batch_key(step, texts, key_ids)
        if cache_key == self._last_key and self._last_result is not None:
            return self._last_result

        t0 = time.perf_counter()
        spans = texts if c.memory_store == "completion" else [reasoning_span(t, c.memory_style) for t in texts]
        unique_q = list(dict.fromkeys(questions))
        q_index = {q: i for i, q in enumerate(unique_q)}
        q_of = np.array([q_index[q] for q in questions], dtype=np.int64)
        outcome = np.asarray(
            self.outcome(prompts=prompts, completions=completions, **kwargs),
            dtype=np.float64,
        )
        if outcome.shape != (n,):
            raise ValueError(f"outcome function returned {outcome.shape[0] if outcome.ndim else 'a scalar'} values for {n} completions")
        t1 = time.perf_counter()
        q_vecs = self.encoder.encode(unique_q)  # cached across steps (questions repeat G times)
        a_vecs = self.encoder.encode(spans)  # one batched pass, shared by exploit and explore
        t2 = time.perf_counter()

        explore_on = c.memory_explore and step >= c.memory_explore_warmup_steps
        if c.memory_semantics == "score_then_write":
            ex_raw, xp_raw = self._score(q_vecs, q_of, a_vecs, explore_on)
            self._write(key_ids, q_vecs[q_of], a_vecs, outcome)
        else:
            ex_raw, xp_raw = self._write_then_score(key_ids, q_vecs, q_of, a_vecs, outcome, explore_on)
        t3 = time.perf_counter()

        exploit = self._normalize(ex_raw, self.exploit_norm, EXPLOIT_EMPTY) * c.memory_exploit_weight
        if explore_on:
            explore = self._normalize(xp_raw, self.explore_norm, EXPLORE_EMPTY) * c.memory_explore_weight
        else:
            explore = np.zeros(n)
        self.calls += 1
        self.timings["encode_s"] += t2 - t1
        self.timings["memory_s"] += t3 - t2
        self.timings["total_s"] += time.perf_counter() - t0
        result = {"exploit": exploit, "explore": explore, "exploit_raw": ex_raw, "explore_raw": xp_raw,
                  "outcome": outcome}
        self._log(kwargs.get("log_metric"), result, explore_on)
        self._last_key, self._last_result = cache_key, result
        return result

    def _score(self, q_vecs, q_of, a_vecs, explore_on) -> tuple[np.ndarray, np.ndarray]:
        """Score every completion against the memories as they are now (no writes)."""
        n, k = len(q_of), self.config.memory_top_k
        ex_raw = np.full(n, np.nan)
        xp_raw = np.full(n, np.nan)
        groups = [np.flatnonzero(q_of == j) for j in range(len(q_vecs))]
        if len(self.success_memory):
            centroids, counts = self.success_memory.centroids(q_vecs, k)
            for j, idx in enumerate(groups):
                if counts[j]:
                    ex_raw[idx] = exploit_raw(a_vecs[idx], centroids[j])
        if explore_on and len(self.failure_memory):
            max_cos = self.failure_memory.max_similarity(q_vecs, k, [a_vecs[idx] for idx in groups])
            for idx, mc in zip(groups, max_cos):
                xp_raw[idx] = explore_raw(mc)
        return ex_raw, xp_raw

    def _write(self, key_ids, keys, values, outcome) -> None:
        """Write the batch (gathered across processes so every rank holds the same memories)."""
        c = self.config
        local = {"ids": list(key_ids), "keys": keys.astype(np.float32), "values": values.astype(np.float32),
                 "outcome": outcome}
        for part in all_gather_objects(local):
            ok = part["outcome"] > c.memory_success_threshold
            bad = part["outcome"] <= c.memory_failure_threshold
            ids = np.array(part["ids"], dtype=object)
            if ok.any():
                self.success_memory.add(ids[ok].tolist(), part["keys"][ok], part["values"][ok])
            if c.memory_explore and bad.any():
                self.failure_memory.add(ids[bad].tolist(), part["keys"][bad], part["values"][bad])

    def _write_then_score(self, key_ids, q_vecs, q_of, a_vecs, outcome, explore_on):
        """Reference-code semantics: insert each completion, then score it, in batch order."""
        c = self.config
        n = len(q_of)
        ex_raw = np.full(n, np.nan)
        xp_raw = np.full(n, np.nan)
        for i in range(n):
            q = q_vecs[q_of[i] : q_of[i] + 1]
            self._write([key_ids[i]], q, a_vecs[i : i + 1], outcome[i : i + 1])
            if len(self.success_memory):
                cen, cnt = self.success_memory.centroids(q, c.memory_top_k)
                if cnt[0]:
                    ex_raw[i] = exploit_raw(a_vecs[i : i + 1], cen[0])[0]
            if explore_on and len(self.failure_memory):
                mc = self.failure_memory.max_similarity(q, c.memory_top_k, [a_vecs[i : i + 1]])[0]
                xp_raw[i] = explore_raw(mc)[0]
        return ex_raw, xp_raw

    @staticmethod
    def _normalize(raw: np.ndarray, norm: RunningMinMax, empty_value: float) -> np.ndarray:
        """Min-max normalise the found raw values over the window and the whole step's batch.

        Under several processes each holds a shard of the batch (a GRPO group may straddle
        ranks): the found values of every rank are gathered, so all ranks use the same bounds and
        keep the same window, as one process scoring the whole batch would. Every rank must take
        part in the gather, even one whose shard found nothing.
        """
        out = np.full(raw.shape, empty_value, dtype=np.float64)
        found = ~np.isnan(raw)
        everyone = np.concatenate([np.asarray(part, np.float64) for part in all_gather_objects(raw[found])])
        if everyone.size:
            out[found] = norm.update_and_normalize(raw[found], batch=everyone)
        return out

    def _step(self, trainer_state: Any) -> int:
        # Warm-up counts optimizer steps (trainer_state.global_step); outside a trainer, batches.
        if trainer_state is not None and getattr(trainer_state, "global_step", None) is not None:
            return int(trainer_state.global_step)
        return self.calls

    @staticmethod
    def _batch_key(step: int, texts: Sequence[str], keys: Sequence[str]) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(str(step).encode())
        for t, k in zip(texts, keys):
            h.update(k.encode("utf-8", "replace") + b"\x00" + t.encode("utf-8", "replace") + b"\x01")
        return h.hexdigest()

    def _log(self, log_metric, result, explore_on) -> None:
        if log_metric is None:
            return
        log_metric("memory/success_keys", float(len(self.success_memory)))
        log_metric("memory/success_values", float(self.success_memory.num_values))
        log_metric("memory/failure_keys", float(len(self.failure_memory)))
        log_metric("memory/failure_values", float(self.failure_memory.num_values))
        for name in ("exploit", "explore"):
            raw = result[f"{name}_raw"]
            if name == "explore" and not explore_on:
                continue
            found = raw[~np.isnan(raw)]
            log_metric(f"memory/{name}_retrieved_frac", float(found.size / max(raw.size, 1)))
            if found.size:
                log_metric(f"memory/{name}_raw_mean", float(found.mean()))
            log_metric(f"memory/{name}_norm_mean", float(np.mean(result[name])))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Save both memories, the normalisers and the config to folder ``path`` (atomically)."""
        path = Path(path)
        state = {
            "config": asdict(self.config),
            "encoder": self.encoder.name,
            "calls": self.calls,
            "exploit_norm": self.exploit_norm.state_dict(),
            "explore_norm": self.explore_norm.state_dict(),
        }
        with atomic_dir(path) as tmp:
            self.success_memory.save(tmp / "success.npz")
            self.failure_memory.save(tmp / "failure.npz")
            (tmp / "state.json").write_text(json.dumps(state, indent=2))
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Restore memories and normalisers saved by :meth:`save`. Everything is read and checked
        before anything is replaced, so a bad folder leaves this object untouched."""
        path = Path(path)
        state_file = path / "state.json"
        if not state_file.is_file():
            raise FileNotFoundError(f"{path} is not a saved Memory-R+ state (no state.json)")
        state = json.loads(state_file.read_text())
        if state.get("encoder") != self.encoder.name:
            raise ValueError(
                f"{path} was built with encoder {state.get('encoder')!r}; these rewards use "
                f"{self.encoder.name!r}"
            )
        success = EpisodicMemory.load(path / "success.npz", encoder_name=self.encoder.name,
                                      backend=self.config.memory_backend)
        failure = EpisodicMemory.load(path / "failure.npz", encoder_name=self.encoder.name,
                                      backend=self.config.memory_backend)
        exploit_norm, explore_norm = RunningMinMax(), RunningMinMax()
        exploit_norm.load_state_dict(state["exploit_norm"])
        explore_norm.load_state_dict(state["explore_norm"])
        self.success_memory, self.failure_memory = success, failure
        self.exploit_norm, self.explore_norm = exploit_norm, explore_norm
        self.calls = int(state.get("calls", 0))
        self._last_key = self._last_result = None
