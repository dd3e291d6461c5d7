"""Memory-R / Memory-R+ intrinsic rewards (Le et al., 2025, arXiv 2504.02273) for TRL's GRPO.

Two episodic memories of past completions, keyed by question embeddings:

* success memory ``M_s`` (outcome reward > θ_s): **exploit** reward
  ``R_exploit = −‖Enc(a) − mean(B(M_s, q))‖₂`` pulls towards what worked on similar questions;
* failure memory ``M_f`` (outcome reward ≤ θ_f): **explore** reward
  ``R_explore = 1 − max_{b ∈ B(M_f, q)} cos(Enc(a), b)`` pushes away from what failed.

Each is min-max normalised over a running window and weighted (λ_s, λ_e); explore is off during
a warm-up. Memory-R = exploit only, Memory-R+ = both.

Semantics (``memory_semantics``; the formulas are the same in all four, what is read when
differs, and with it what is rewarded):

* ``score_then_write`` (default): the whole batch is scored against the memory as it was before
  the batch, then written. Order-invariant within a step, and a wrong but novel answer earns
  explore reward. In one pass over the data the memory never holds the question being scored, so
  K = 1 reads the nearest *other* question: the rewards measure closeness to what worked, and
  distance from what failed, on similar questions. (Later steps can depend on order: the FIFO
  lists and the normalisers' windows keep the newest entries in completion order, which matters
  only when a batch overflows a list or a window.)
* ``write_then_score``: the reference code's *order* with memrl's other choices (own-question keys,
  one call per batch, memrl's success test, batch normaliser): each completion is inserted, then
  scored, in batch order. A completion is always inside its own pool, so a wrong answer always
  gets explore raw 0 and a right one is pulled by its own vector: the intrinsic rewards become
  almost a copy of correctness. Not order-invariant.
* ``group_loo`` (memrl's own): each completion is scored against the memory as it was before the
  batch *plus the batch's other completions* that the write rule stores (never itself), under
  their own questions and from every process. Order-invariant, like ``score_then_write``, and it
  keeps the consensus signal of ``write_then_score`` without self-inclusion: exploit is high for a
  completion close to the *other* right answers to its question, explore is high for one far from
  the *other* wrong answers. Capacity limits (N, L) apply at the write after scoring, not to the
  read. The normaliser window is fed the batch's found values, as in ``score_then_write``.
* ``reference``: the reference code (thaihungle/Memory-R @ a193f4f) reproduced, for replication.
  It is ``write_then_score``'s order plus a **preset** of the options below at the reference's
  values. Under several processes memrl still shares one memory across ranks (the reference
  kept one per process).

Options that ``memory_semantics`` presets (each can be set on its own to ablate one difference):

================================  ======================  ==================================
option                            memrl (other 3)         ``reference``
================================  ======================  ==================================
``memory_key_rule``               ``own``                 ``first_prompt`` (key bug)
``memory_micro_batch_prompts``    0 (the whole call)      2 (TRL 0.14: 2 prompts × G a call)
``memory_success_rule``           ``outcome``             ``exact_answer``
``memory_store``                  ``reasoning``           ``reference``
``memory_normalizer``             ``batch``               ``sequential``
``memory_norm_tolerance``         1e-6                    0.0 (only an exactly flat window)
``memory_norm_flat``              ``neutral``             ``reference``
``memory_warmup_unit``            ``steps``               ``failure_keys`` (500 keys)
``memory_max_keys``               7473 (GSM8K's size)     10,000
``memory_max_values``             100                     100 (Memory-R+), 1,000 (Memory-R)
================================  ======================  ==================================

Precedence: an option left unset (``None``) takes the preset's value when the config is built;
an option set explicitly always wins, so ``memory_semantics="reference", memory_key_rule="own"``
is the reference with only the key bug fixed. Built configs hold concrete values (``asdict``,
``resolved_config.json``). :meth:`MemoryRewardConfig.replace`, :meth:`MemoryRewardConfig.from_dict`
of a built config's ``__dict__`` and ``MemoryRPlus(config, **overrides)`` re-apply the preset to
the options it filled, so changing ``memory_semantics`` or ``memory_explore`` there is followed;
a dict from ``asdict`` counts every option as set.

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
    MemoryRewardConfig,
    reasoning_span,
    reference_answer,
    reference_gold,
    reference_span,
    semantics_preset,
    stored_text,
)
from memrl.rewards.outcome import CorrectnessReward
from memrl.rewards.scoring import RunningMinMax, SequentialMinMax, exploit_raw, explore_raw

logger = logging.getLogger(__name__)

__all__ = ["MemoryRPlus", "MemoryRewardConfig", "reasoning_span", "reference_answer", "reference_gold",
           "reference_span", "semantics_preset", "stored_text"]

def _max_cosine(probe: np.ndarray, pool: np.ndarray) -> float:
    """Highest cosine of ``probe`` with the rows of ``pool``, norms divided out as the reference
    does (float32)."""
    dots = pool @ probe
    return float(np.max(dots / (np.linalg.norm(pool, axis=1) * np.linalg.norm(probe))))


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
        outcome: callable ``(prompts, completions, **kwargs) -> list[float]`` deciding success
            (``memory_success_rule="outcome"``); default GSM8K correctness on the ``answer``
            column. ``exact_answer`` reads the gold from the column named by its
            ``answer_column`` attribute (default ``answer``).

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
            config = config.replace(**overrides)
        self.config = config
        self.encoder = encoder if encoder is not None else Encoder(config.memory_encoder)
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
        if config.memory_semantics == "reference":
            deviations = config.reference_deviations()
            if deviations:
                logger.warning("memory_semantics='reference' with options that differ from the reference code: %s",
                               ", ".join(f"{k}={v!r} (reference {r!r})" for k, (v, r) in deviations.items()))

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
        values); the window itself is left as it is. Only ``score_then_write`` without
        micro-batches is defined this way (every other order writes part of a call before
        scoring the rest of it); other settings raise ``ValueError``. ``memrl serve`` answers
        each request with this against the memory committed at the previous step.
        """
        c = self.config
        if c.memory_semantics != "score_then_write" or c.memory_micro_batch_prompts:
            raise ValueError(
                "MemoryRPlus.score (read-only scoring) needs memory_semantics='score_then_write' and "
                f"memory_micro_batch_prompts=0; got {c.memory_semantics!r} and {c.memory_micro_batch_prompts}: "
                "those orders write part of a call before scoring the rest of it")
        return self._run(prompts, completions, kwargs, write=False)

    def encode_inputs(self, prompts=None, completions=None, **kwargs: Any) -> int:
        """Encode, into the encoder's cache, the questions and stored texts that :meth:`compute`
        or :meth:`score` would encode for this batch (one batched pass); returns how many texts
        were asked for. A server that gathers many small requests calls it once for all of them,
        so the encoder sees one batch and the later per-request calls hit the cache."""
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
            er, xr, on = self._score_and_write(ids, q_vecs[used], local_q.reshape(-1), a_vecs[part],
                                               outcome[part], step, write)
            ex_raw[part], xp_raw[part], explore_on[part] = er, xr, on
            exploit[part] = self._normalize(er, exploit_norm, EXPLOIT_EMPTY) * c.memory_exploit_weight
            if c.memory_explore:
                xn = self._normalize(np.where(on, xr, np.nan), explore_norm, EXPLORE_EMPTY)
                explore[part] = np.where(on, xn * c.memory_explore_weight, 0.0)
        t3 = time.perf_counter()
        result = {"exploit": exploit, "explore": explore, "exploit_raw": ex_raw, "explore_raw": xp_raw,
                  "outcome": outcome}
        if not write:
            return result

        self.calls += 1
        self.timings["encode_s"] += t2 - t1
        self.timings["memory_s"] += t3 - t2
        self.timings["total_s"] += time.perf_counter() - t0
        self._log(kwargs.get("log_metric"), result, bool(explore_on.any()))
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

    def _explore_on(self, step: int) -> bool:
        c = self.config
        if not c.memory_explore:
            return False
        if c.memory_warmup_unit == "failure_keys":
            return len(self.failure_memory) >= c.memory_explore_warmup_keys
        return step >= c.memory_explore_warmup_steps

    def _score_and_write(self, key_ids, q_vecs, q_of, a_vecs, outcome, step, write=True):
        """One chunk under ``memory_semantics``: ``(exploit_raw, explore_raw, explore_on)``.

        ``q_vecs`` holds the chunk's distinct query questions and ``q_of`` each completion's row
        of it; ``key_ids`` are the write keys. ``write=False`` (``score_then_write`` only, see
        :meth:`score`) scores without writing.
        """
        n = len(q_of)
        semantics = self.config.memory_semantics
        if semantics in ("write_then_score", "reference"):
            return self._write_then_score(key_ids, q_vecs, q_of, a_vecs, outcome, step)
        on = self._explore_on(step)  # counted before the chunk is written
        if semantics == "group_loo":
            ex_raw, xp_raw = self._score_group_loo(key_ids, q_vecs, q_of, a_vecs, outcome, on)
        else:
            ex_raw, xp_raw = self._score(q_vecs, q_of, a_vecs, on)
            if write:
                self._write(key_ids, q_vecs[q_of], a_vecs, outcome)
        return ex_raw, xp_raw, np.full(n, on)

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

    @staticmethod
    def _local_part(key_ids, keys, values, outcome) -> dict[str, Any]:
        return {"ids": list(key_ids), "keys": np.asarray(keys, np.float32), "values": np.asarray(values, np.float32),
                "outcome": np.asarray(outcome, np.float64)}

    def _write(self, key_ids, keys, values, outcome) -> None:
        """Write the batch (gathered across processes so every rank holds the same memories)."""
        self._write_parts(all_gather_objects(self._local_part(key_ids, keys, values, outcome)))

    def _write_parts(self, parts: Sequence[dict[str, Any]]) -> None:
        c = self.config
        for part in parts:
            ok = part["outcome"] > c.memory_success_threshold
            bad = part["outcome"] <= c.memory_failure_threshold
            ids = np.array(part["ids"], dtype=object)
            if ok.any():
                self.success_memory.add(ids[ok].tolist(), part["keys"][ok], part["values"][ok])
            if c.memory_explore and bad.any():
                self.failure_memory.add(ids[bad].tolist(), part["keys"][bad], part["values"][bad])

    def _write_then_score(self, key_ids, q_vecs, q_of, a_vecs, outcome, step):
        """The reference's order: insert each completion, then score it, in batch order (exploit:
        insert if a success, then score; explore: insert if a failure, then score; the two
        memories are independent, so doing both per completion is the same). The failure-key
        warm-up is checked after each insert, as the reference does."""
        k = self.config.memory_top_k
        n = len(q_of)
        ex_raw, xp_raw = np.full(n, np.nan), np.full(n, np.nan)
        on = np.zeros(n, dtype=bool)
        for i in range(n):
            q = q_vecs[q_of[i] : q_of[i] + 1]
            self._write([key_ids[i]], q, a_vecs[i : i + 1], outcome[i : i + 1])
            if len(self.success_memory):
                cen, cnt = self.success_memory.centroids(q, k)
                if cnt[0]:
                    ex_raw[i] = exploit_raw(a_vecs[i : i + 1], cen[0])[0]
            on[i] = self._explore_on(step)
            if on[i] and len(self.failure_memory):
                pool = self.failure_memory.read(q, k)[0]
                if pool.shape[0]:
                    xp_raw[i] = 1.0 - np.float32(_max_cosine(np.asarray(a_vecs[i], np.float32), pool))
        return ex_raw, xp_raw, on

    # ------------------------------------------------------------------ group_loo
    def _score_group_loo(self, key_ids, q_vecs, q_of, a_vecs, outcome, explore_on):
        """Score each completion against the memory before the batch plus the batch's *other*
        completions that the write rule stores (from every process), then write the batch.

        Nothing is rebuilt or re-encoded per completion: the batch's values are summed per key
        once (exploit) and each distinct read builds one pool whose own row is masked (explore).
        Arithmetic is float64, so the result does not depend on the batch's order to ~1e-15.
        """
        c = self.config
        parts = all_gather_objects(self._local_part(key_ids, q_vecs[q_of], a_vecs, outcome))
        me = rank() if len(parts) > 1 else 0
        offset = sum(len(p["ids"]) for p in parts[:me])
        batch = {
            "ids": [i for p in parts for i in p["ids"]],
            "keys": np.concatenate([p["keys"] for p in parts]),
            "values": np.concatenate([p["values"] for p in parts]).astype(np.float64),
            "outcome": np.concatenate([p["outcome"] for p in parts]),
        }
        own = offset + np.arange(len(q_of))
        ok = batch["outcome"] > c.memory_success_threshold
        ex_raw = self._loo_read(self.success_memory, q_vecs, q_of, a_vecs, own, batch, ok, "exploit")
        xp_raw = np.full(len(q_of), np.nan)
        if explore_on:
            bad = batch["outcome"] <= c.memory_failure_threshold
            xp_raw = self._loo_read(self.failure_memory, q_vecs, q_of, a_vecs, own, batch, bad, "explore")
        self._write_parts(parts)
        return ex_raw, xp_raw

    def _loo_read(self, memory: EpisodicMemory, q_vecs, q_of, a_vecs, own, batch, written, component):
        """Raw exploit or explore values of the local completions against ``memory`` plus the
        batch rows ``written`` to it, each completion's own row left out."""
        k = self.config.memory_top_k
        n = len(q_of)
        out = np.full(n, np.nan)
        rows_of: dict[str, list[int]] = {}
        for r in np.flatnonzero(written):
            rows_of.setdefault(batch["ids"][r], []).append(int(r))
        if not len(memory) and not rows_of:
            return out
        # keys the batch would add, in an order that does not depend on the batch's order
        new_ids = sorted(i for i in rows_of if i not in memory)
        new_keys = np.array([batch["keys"][rows_of[i][0]] for i in new_ids], np.float32).reshape(
            len(new_ids), batch["keys"].shape[1])
        queries = np.asarray(q_vecs, np.float32)
        # top K + 1 of stored and new keys: only a completion's own key can drop out of its read
        stored_sims, stored_ids = memory.search(queries, k + 1) if len(memory) else (np.zeros((len(queries), 0)), [[] for _ in queries])
        new_sims = queries @ new_keys.T if new_ids else np.zeros((len(queries), 0), np.float32)
        candidates = []
        for j in range(len(queries)):
            merged = [(float(s), 0, t, key) for t, (s, key) in enumerate(zip(stored_sims[j], stored_ids[j]))]
            merged += [(float(s), 1, t, key) for t, (s, key) in enumerate(zip(new_sims[j], new_ids))]
            merged.sort(key=lambda x: (-x[0], x[1], x[2]))
            candidates.append([key for *_, key in merged[: k + 1]])
        own_id = [batch["ids"][g] for g in own]
        stored_cache: dict[str, np.ndarray] = {}

        def stored(key: str) -> np.ndarray:
            if key not in stored_cache:
                stored_cache[key] = (memory.values_of(key).astype(np.float64) if key in memory
                                     else np.zeros((0, batch["values"].shape[1])))
            return stored_cache[key]

        reads: dict[tuple[str, ...], list[int]] = {}
        for i in range(n):
            key, g = own_id[i], int(own[i])
            # a key that only this completion would write is not in the memory it is scored against
            alone = written[g] and key not in memory and len(rows_of.get(key, ())) == 1
            keys = tuple(x for x in candidates[q_of[i]] if not (alone and x == key))[:k]
            reads.setdefault(keys, []).append(i)
        for keys, members in reads.items():
            batch_rows = [r for key in keys for r in rows_of.get(key, ())]
            pool = np.concatenate([stored(key) for key in keys] + [batch["values"][batch_rows]])
            if not pool.shape[0]:
                continue
            probes = np.asarray(a_vecs[members], np.float64)
            self_col = dict(zip(batch_rows, range(len(pool) - len(batch_rows), len(pool))))
            if component == "exploit":
                total, count = pool.sum(axis=0), pool.shape[0]
                for m, i in zip(probes, members):
                    col = self_col.get(int(own[i]))
                    t, cnt = (total - pool[col], count - 1) if col is not None else (total, count)
                    if cnt:
                        out[i] = -float(np.linalg.norm(m - t / cnt))
            else:
                sims = probes @ pool.T
                for row, i in enumerate(members):
                    col = self_col.get(int(own[i]))
                    if col is not None:
                        sims[row, col] = -np.inf
                    best = sims[row].max()
                    if np.isfinite(best):
                        out[i] = 1.0 - float(best)
        return out

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
