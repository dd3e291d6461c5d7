"""Memory-R / Memory-R+ intrinsic rewards (Le et al., 2025, arXiv 2504.02273) for TRL's GRPO.

Two episodic memories of past completions, keyed by question embeddings:

* success memory ``M_s`` (outcome reward > θ_s): **exploit** reward
  ``R_exploit = −‖Enc(a) − mean(B(M_s, q))‖₂`` pulls towards what worked on similar questions;
* failure memory ``M_f`` (outcome reward ≤ θ_f): **explore** reward
  ``R_explore = 1 − max_{b ∈ B(M_f, q)} cos(Enc(a), b)`` pushes away from what failed.

Each is min-max normalised over a running window and weighted (λ_s, λ_e); explore is off during
a warm-up. Memory-R = exploit only, Memory-R+ = both.

Semantics (``memory_semantics``: ``score_then_write``, the default, ``write_then_score``,
``group_loo``, ``reference``) decide what each completion is scored against and when the batch is
written; :mod:`memrl.rewards.semantics` holds one class per semantics, with what it rewards and
the options its preset fills. :class:`MemoryRPlus` holds the state they read and write.

Gate (``memory_gate``): ``zero_variance`` returns the intrinsic rewards only for the GRPO groups
(the completions of one question in the call) whose outcome does not vary, and 0.0 for every
completion of the other groups, so their reward is R1's alone; scoring, normalising and writing
are those of ``none``, so the memories and normalisers are the same with and without the gate.

Other choices:

* every completion is keyed by its **own** question unless ``memory_key_rule="first_prompt"``;
* each completion is encoded once per call although two reward functions read it: the first
  function called on a batch computes both rewards and writes the memory; the second returns the
  cached result.
* nothing retrieved (empty memory for that question's neighbourhood): exploit 0.0 ("no pull")
  and explore 1.0 ("everything is novel"), as the reference; these are not fed to the
  normaliser. Under ``score_then_write`` all completions of one question share the retrieval, so
  a neutral value is constant within the GRPO group and adds no advantage (under ``group_loo`` a
  question's only right answer can find nothing while its wrong answers find it).
* a flat normaliser window (spread ≤ ``memory_norm_tolerance``) gives the neutral normalised
  value 0.0 (``memory_norm_flat="neutral"``): with the batch normaliser it is the same for the
  whole call, so it adds no advantage inside a group, and it adds nothing to the reward's scale.
  Without it, rounding noise of a self-cosine (±1.2e-7) was stretched to 0–1.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from memrl.distributed import all_gather_objects, rank
from memrl.encoders import Encoder
from memrl.io import atomic_dir
from memrl.memory import EpisodicMemory
from memrl.rewards.common import check_lengths, completion_texts, question_keys, require_column
from memrl.rewards.memory_config import (
    EXPLOIT_EMPTY,
    EXPLORE_EMPTY,
    FLAT_NEUTRAL,
    GATE_NONE,
    MemoryRewardConfig,
    reasoning_span,
    reference_answer,
    reference_gold,
    reference_span,
    semantics_preset,
    stored_text,
)
from memrl.rewards.outcome import CorrectnessReward
from memrl.rewards.ownership import ProcessBound
from memrl.rewards.scoring import RunningMinMax, SequentialMinMax, outcome_varies
from memrl.rewards.semantics import SEMANTICS, semantics_named
from memrl.runtime import resolve_device

logger = logging.getLogger(__name__)

__all__ = ["MemoryRPlus", "MemoryRewardConfig", "reasoning_span", "reference_answer", "reference_gold",
           "reference_span", "semantics_preset", "stored_text"]

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


class MemoryRPlus(ProcessBound):
    """Memory-R / Memory-R+ rewards with their two episodic memories.

    Args:
        config: :class:`MemoryRewardConfig` (or keyword overrides of it).
        encoder: an :class:`~memrl.encoders.Encoder`; if None, built from ``config.memory_encoder`` on
            ``memory_encoder_device`` with ``memory_encoder_batch_size`` texts per forward pass.
        outcome: callable ``(prompts, completions, **kwargs) -> list[float]`` deciding success
            (``memory_success_rule="outcome"``); default GSM8K correctness on the ``answer``
            column. ``exact_answer`` reads the gold from the column named by its
            ``answer_column`` attribute (default ``answer``).

    Use ``reward_functions()`` as (part of) TRL's ``reward_funcs``:

    >>> rewards = MemoryRPlus(memory_top_k=1)                        # doctest: +SKIP
    >>> trainer = GRPOTrainer(model, reward_funcs=[correctness, *rewards.reward_functions()],
    ...                       args=grpo_config, train_dataset=ds)    # doctest: +SKIP
    """

    _state_name = "memory"  # ProcessBound: what a copy in another process would lose
    _copy_note = ", and it gets no trainer_state to count warm-up steps"

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
            config = config.replace(**overrides)
        self.config = config
        if encoder is None:
            resolve_device(config.memory_encoder_device, "memory_encoder_device")  # an unusable device fails here
            encoder = Encoder(config.memory_encoder, device=config.memory_encoder_device,
                              batch_size=config.memory_encoder_batch_size)
        self.encoder = encoder
        self.outcome = outcome if outcome is not None else CorrectnessReward()
        self.success_memory = self._new_memory()
        self.failure_memory = self._new_memory()
        self.exploit_norm = self._new_normalizer("exploit")
        self.explore_norm = self._new_normalizer("explore")
        self.exploit_reward = _MemoryRewardFunction(self, "exploit")
        self.explore_reward = _MemoryRewardFunction(self, "explore")
        self.calls = 0  # batches computed (stands in for the step count outside a trainer)
        self.timings = {"encode_s": 0.0, "memory_s": 0.0, "total_s": 0.0}
        self._last_key: str | None = None
        self._last_result: dict[str, np.ndarray] | None = None
        self.semantics = semantics_named(config.memory_semantics)
        self.semantics.check(config)
        self._bind_process()  # the process that saves this memory (see ProcessBound)

    def _new_memory(self) -> EpisodicMemory:
        c = self.config
        return EpisodicMemory(
            dim=self.encoder.dim, max_keys=c.memory_max_keys, max_values=c.memory_max_values,
            backend=c.memory_backend, dtype=c.memory_dtype, encoder_name=self.encoder.name,
        )

    def _new_normalizer(self, component: str) -> RunningMinMax:
        c = self.config
        # flat window: neutral 0.0; the reference returns its raw distance d for exploit (reward
        # 1 − d = 1 + memrl's raw −d) and 0.0 for explore
        value, slope = (1.0, 1.0) if c.memory_norm_flat == "reference" and component == "exploit" else (FLAT_NEUTRAL, 0.0)
        if c.memory_normalizer == "sequential":
            return SequentialMinMax(c.memory_norm_window, c.memory_norm_tolerance, value, slope)
        return RunningMinMax(c.memory_norm_window, c.memory_norm_eps, c.memory_norm_tolerance, value, slope)

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
        where nothing was retrieved or explore was off) and ``outcome`` (what decided success).
        """
        return self._run(prompts, completions, kwargs, write=True)

    def score(self, prompts=None, completions=None, **kwargs: Any) -> dict[str, np.ndarray]:
        """What :meth:`compute` would return for this batch, changing nothing: no memory write,
        no normaliser update, no call counted.

        The bounds are those :meth:`compute` would use (the window plus this batch's found
        values); the window itself is left as it is. Only a semantics that scores each completion
        alone (``score_then_write``), without micro-batches, is defined this way (every other
        order writes part of a call before scoring the rest of it); other settings raise
        ``ValueError``. ``memory_gate`` applies to the batch given. ``memrl serve`` answers each
        request with this against the memory committed at the previous step.
        """
        c = self.config
        if not self.semantics.scores_alone or c.memory_micro_batch_prompts:
            alone = ", ".join(repr(name) for name, sem in SEMANTICS.items() if sem.scores_alone)
            raise ValueError(
                f"MemoryRPlus.score (read-only scoring) needs memory_semantics in ({alone}) and "
                f"memory_micro_batch_prompts=0; got {c.memory_semantics!r} and {c.memory_micro_batch_prompts}: "
                "those orders write part of a call before scoring the rest of it")
        return self._run(prompts, completions, kwargs, write=False)

    def encode_inputs(self, prompts=None, completions=None, **kwargs: Any) -> int:
        """Encode, into the encoder's cache, the questions and stored texts that :meth:`compute`
        or :meth:`score` would encode for this batch (one batched pass); returns how many texts
        were asked for. A server that gathers many small requests calls it once for all of them,
        so the encoder sees one batch and the later per-request calls hit the cache."""
        self._check_process()
        batch = self._prepare(prompts, completions, kwargs)
        texts = batch["unique_q"] + batch["spans"]
        self.encoder.encode(texts)
        return len(texts)

    def _prepare(self, prompts, completions, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Per-call inputs: texts, question keys and key ids, stored spans, distinct questions."""
        texts = completion_texts(completions)
        n = len(texts)
        c = self.config
        questions = question_keys(prompts, n, kwargs, c.memory_key_column)
        key_ids = questions
        if c.memory_id_column:
            key_ids = question_keys(prompts, n, kwargs, c.memory_id_column)
        if prompts is not None:
            check_lengths(n, prompts=prompts)
        spans = [stored_text(t, c.memory_store, c.memory_style) for t in texts]
        unique_q = list(dict.fromkeys(questions))
        return {"texts": texts, "questions": questions, "key_ids": key_ids, "spans": spans, "unique_q": unique_q}

    def _run(self, prompts, completions, kwargs: dict[str, Any], write: bool) -> dict[str, np.ndarray]:
        self._check_process()
        t0 = time.perf_counter()
        batch = self._prepare(prompts, completions, kwargs)
        texts, questions, key_ids, spans, unique_q = (batch[k] for k in ("texts", "questions", "key_ids", "spans",
                                                                          "unique_q"))
        n = len(texts)
        c = self.config
        step = self._step(kwargs.get("trainer_state"))
        cache_key = self._batch_key(step, texts, key_ids)
        if write and cache_key == self._last_key and self._last_result is not None:
            return self._last_result

        q_index = {q: i for i, q in enumerate(unique_q)}
        q_of = np.array([q_index[q] for q in questions], dtype=np.int64)
        outcome = self._outcomes(prompts, completions, texts, kwargs)
        t1 = time.perf_counter()
        q_vecs = self.encoder.encode(unique_q)  # cached across steps (questions repeat G times)
        a_vecs = self.encoder.encode(spans)  # one batched pass, shared by exploit and explore
        t2 = time.perf_counter()
        # read-only scoring normalises with copies, so the windows stay as they are
        exploit_norm = self.exploit_norm if write else copy.deepcopy(self.exploit_norm)
        explore_norm = self.explore_norm if write else copy.deepcopy(self.explore_norm)

        ex_raw, xp_raw = np.full(n, np.nan), np.full(n, np.nan)
        exploit, explore = np.zeros(n), np.zeros(n)
        explore_on = np.zeros(n, dtype=bool)
        for lo, hi in self._chunks(questions):
            part = slice(lo, hi)
            if c.memory_key_rule == "first_prompt":  # the reference: the call's prompts[0] for all
                ids, chunk_q = [key_ids[lo]] * (hi - lo), np.zeros(hi - lo, dtype=np.int64) + q_of[lo]
            else:
                ids, chunk_q = key_ids[lo:hi], q_of[part]
            used, local_q = np.unique(chunk_q, return_inverse=True)
            er, xr, on = self.semantics.score(self, ids, q_vecs[used], local_q.reshape(-1), a_vecs[part],
                                              outcome[part], step, write)
            ex_raw[part], xp_raw[part], explore_on[part] = er, xr, on
            exploit[part] = self._normalize(er, exploit_norm, EXPLOIT_EMPTY) * c.memory_exploit_weight
            if c.memory_explore:
                xn = self._normalize(np.where(on, xr, np.nan), explore_norm, EXPLORE_EMPTY)
                explore[part] = np.where(on, xn * c.memory_explore_weight, 0.0)
        gated_frac = None
        if c.memory_gate != GATE_NONE:
            # after scoring and normalising, so memories and windows are those of the ungated run
            keep, gated_frac = self._zero_variance_groups(key_ids, outcome)
            exploit, explore = np.where(keep, exploit, 0.0), np.where(keep, explore, 0.0)
        t3 = time.perf_counter()
        result = {"exploit": exploit, "explore": explore, "exploit_raw": ex_raw, "explore_raw": xp_raw,
                  "outcome": outcome}
        if not write:
            return result

        self.calls += 1
        self.timings["encode_s"] += t2 - t1
        self.timings["memory_s"] += t3 - t2
        self.timings["total_s"] += time.perf_counter() - t0
        self._log(kwargs.get("log_metric"), result, bool(explore_on.any()), gated_frac)
        if kwargs.get("log_metric") is not None:
            # the spread the intrinsic rewards add inside a question's group, where GRPO compares
            # (a random control reward of the same spread tells signal from mere extra variance)
            total = exploit + explore
            kwargs["log_metric"]("memory/intrinsic_group_std",
                                 float(np.mean([total[q_of == j].std() for j in range(len(unique_q))])))
        self._last_key, self._last_result = cache_key, result
        return result

    def _outcomes(self, prompts, completions, texts: list[str], kwargs: dict[str, Any]) -> np.ndarray:
        """Per completion, the value compared with θ_s/θ_f: the outcome function's, or 1/0 for the
        reference's exact string match."""
        n = len(texts)
        if self.config.memory_success_rule == "exact_answer":
            column = getattr(self.outcome, "answer_column", "answer")
            golds = require_column(kwargs, column, n, "memory_success_rule='exact_answer'")
            return np.array([1.0 if reference_answer(t) == reference_gold(g) else 0.0 for t, g in zip(texts, golds)])
        outcome = np.asarray(self.outcome(prompts=prompts, completions=completions, **kwargs), dtype=np.float64)
        if outcome.shape != (n,):
            raise ValueError(f"outcome function returned {outcome.shape[0] if outcome.ndim else 'a scalar'} values for {n} completions")
        return outcome

    @staticmethod
    def _zero_variance_groups(key_ids: Sequence[str], outcome: np.ndarray) -> tuple[np.ndarray, float]:
        """``memory_gate="zero_variance"``: per completion, whether its group's outcome has zero
        variance (its intrinsic rewards are kept), and the fraction of groups gated off.

        A group is the completions of one question (its key id, as the memory files it) in the
        call, gathered from every process (a GRPO group may straddle ranks); the outcome is the
        value that decides success and failure (``memory_success_rule``). Sets, not positions,
        so the gate does not depend on the order of the batch.
        """
        parts = all_gather_objects((list(key_ids), np.asarray(outcome, np.float64)))
        every_id = [key for ids, _ in parts for key in ids]
        group = {key: j for j, key in enumerate(dict.fromkeys(every_id))}
        varies = outcome_varies(np.array([group[key] for key in every_id], np.int64),
                                np.concatenate([values for _, values in parts]))
        keep = ~varies[np.array([group[key] for key in key_ids], np.int64)]
        return keep, float(varies.mean()) if varies.size else 0.0

    def _chunks(self, questions: Sequence[str]) -> list[tuple[int, int]]:
        """``(start, stop)`` of each micro-batch: ``memory_micro_batch_prompts × G`` completions in
        call order (TRL 0.14 called the reward functions once per such micro-batch)."""
        n, prompts_per_chunk = len(questions), self.config.memory_micro_batch_prompts
        if not prompts_per_chunk or n == 0:
            return [(0, n)]
        g = self.config.memory_group_size
        if not g:
            g = 1
            while g < n and questions[g] == questions[0]:
                g += 1
            g = max(all_gather_objects(g))  # every process must cut the same number of chunks
        size = prompts_per_chunk * g
        return [(lo, min(lo + size, n)) for lo in range(0, n, size)]

    def explore_on(self, step: int) -> bool:
        """Whether the explore reward is past its warm-up (``memory_warmup_unit``)."""
        c = self.config
        if not c.memory_explore:
            return False
        if c.memory_warmup_unit == "failure_keys":
            return len(self.failure_memory) >= c.memory_explore_warmup_keys
        return step >= c.memory_explore_warmup_steps

    # ------------------------------------------------------------------ writing (what the semantics call)
    @staticmethod
    def local_part(key_ids, keys, values, outcome) -> dict[str, Any]:
        """This process's share of a write, in the form :meth:`write_parts` takes (gathered as is)."""
        return {"ids": list(key_ids), "keys": np.asarray(keys, np.float32), "values": np.asarray(values, np.float32),
                "outcome": np.asarray(outcome, np.float64)}

    def write(self, key_ids, keys, values, outcome) -> None:
        """Write the batch (gathered across processes so every rank holds the same memories)."""
        self.write_parts(all_gather_objects(self.local_part(key_ids, keys, values, outcome)))

    def write_parts(self, parts: Sequence[dict[str, Any]]) -> None:
        """Write gathered parts in rank order: outcome > θ_s to the success memory, ≤ θ_f to the
        failure memory (Memory-R+ only)."""
        c = self.config
        for part in parts:
            ok = part["outcome"] > c.memory_success_threshold
            bad = part["outcome"] <= c.memory_failure_threshold
            ids = np.array(part["ids"], dtype=object)
            if ok.any():
                self.success_memory.add(ids[ok].tolist(), part["keys"][ok], part["values"][ok])
            if c.memory_explore and bad.any():
                self.failure_memory.add(ids[bad].tolist(), part["keys"][bad], part["values"][bad])

    # ------------------------------------------------------------------ normalising
    @staticmethod
    def _normalize(raw: np.ndarray, norm: RunningMinMax, empty_value: float) -> np.ndarray:
        """Min-max normalise the found raw values (``memory_normalizer``).

        ``batch``: one pair of bounds over the window and the whole call's found values. Under
        several processes each holds a shard of the batch (a GRPO group may straddle ranks): the
        found values of every rank are gathered, so all ranks use the same bounds and keep the
        same window, as one process scoring the whole batch would. ``sequential``: every rank
        runs the gathered values through the window in (rank, position) order and keeps its own
        share. Every rank must take part in the gather, even one whose shard found nothing.
        """
        out = np.full(raw.shape, empty_value, dtype=np.float64)
        found = ~np.isnan(raw)
        parts = [np.asarray(part, np.float64) for part in all_gather_objects(raw[found])]
        everyone = np.concatenate(parts)
        if not everyone.size:
            return out
        if isinstance(norm, SequentialMinMax):
            start = sum(p.size for p in parts[: rank() if len(parts) > 1 else 0])
            out[found] = norm.update_and_normalize(everyone)[start : start + int(found.sum())]
        else:
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

    def _log(self, log_metric, result, explore_on, gated_frac=None) -> None:
        if log_metric is None:
            return
        if gated_frac is not None:  # memory_gate on: the share of groups whose reward was R1's alone
            log_metric("memory/gated_frac", gated_frac)
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
        exploit_norm, explore_norm = self._new_normalizer("exploit"), self._new_normalizer("explore")
        try:
            exploit_norm.load_state_dict(state["exploit_norm"])
            explore_norm.load_state_dict(state["explore_norm"])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc} (memory_normalizer={self.config.memory_normalizer!r})") from None
        self.success_memory, self.failure_memory = success, failure
        self.exploit_norm, self.explore_norm = exploit_norm, explore_norm
        self.calls = int(state.get("calls", 0))
        self._last_key = self._last_result = None
