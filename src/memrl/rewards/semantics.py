"""Memory-R+ semantics: when a batch is read and when it is written, one class per
``memory_semantics``.

The formulas (:mod:`memrl.rewards.scoring`) are the same under every semantics; what a
completion is scored against differs, and with it what is rewarded. Each semantics here says
what it reads, what it writes, whether it is order-invariant, which ``memrl serve --respond``
modes it allows and its preset, and scores one chunk of a reward call against the memories of a
:class:`~memrl.rewards.memory_rewards.MemoryRPlus` (which holds the state: memories,
normalisers, gathering across processes, persistence).

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
an option set explicitly always wins (see :class:`~memrl.rewards.memory_config.MemoryRewardConfig`).

Adding a semantics is one subclass here, registered with :func:`register`, plus its test: the
config's choices, its ``--help`` and ``memrl serve``'s checks read this registry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from memrl.distributed import all_gather_objects, rank
from memrl.rewards.scoring import exploit_raw, explore_raw, max_cosine

logger = logging.getLogger(__name__)

# The values memrl's semantics give the options left unset (the table above, middle column).
MEMRL_PRESET: dict[str, Any] = {
    "memory_key_rule": "own", "memory_micro_batch_prompts": 0, "memory_success_rule": "outcome",
    "memory_store": "reasoning", "memory_normalizer": "batch", "memory_norm_tolerance": 1e-6,
    "memory_norm_flat": "neutral", "memory_warmup_unit": "steps", "memory_max_keys": 7473,
    "memory_max_values": 100}


class MemoryState(Protocol):
    """What a semantics reads and writes: the state a :class:`~memrl.rewards.memory_rewards.MemoryRPlus`
    holds (its config, the two memories) and its gathered writes."""

    config: Any
    success_memory: Any
    failure_memory: Any

    def explore_on(self, step: int) -> bool: ...

    def write(self, key_ids: Sequence[str], keys: np.ndarray, values: np.ndarray, outcome: np.ndarray) -> None: ...

    def write_parts(self, parts: Sequence[dict[str, Any]]) -> None: ...

    def local_part(self, key_ids: Sequence[str], keys: np.ndarray, values: np.ndarray,
                   outcome: np.ndarray) -> dict[str, Any]: ...


Scores = tuple[np.ndarray, np.ndarray, np.ndarray]  # (exploit_raw, explore_raw, explore_on), one per completion


class MemorySemantics:
    """One ``memory_semantics``: what a completion is scored against, and when the batch is written.

    Subclasses set the class attributes and implement :meth:`score`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # one phrase for --help
    reads: ClassVar[str]  # what a completion is scored against
    writes: ClassVar[str]  # when the batch enters the memories
    order_invariant: ClassVar[bool]  # the values do not depend on the order of the batch
    # a completion's values need only the memory committed before its step and the completion
    # itself: then MemoryRPlus.score can answer without writing, and `memrl serve` per request
    scores_alone: ClassVar[bool] = False
    not_alone: ClassVar[str] = ""  # why it cannot be answered per request (when not scores_alone)

    @property
    def serve_modes(self) -> tuple[str, ...]:
        """The ``memrl serve --respond`` modes that give this semantics' values."""
        return ("immediate", "commit") if self.scores_alone else ("commit",)

    def preset(self, explore: bool = True) -> dict[str, Any]:
        """The values this semantics gives the options left unset."""
        return dict(MEMRL_PRESET)

    def check(self, config: Any) -> None:
        """Warn about settings that contradict this semantics (called when the rewards are built)."""

    def score(self, state: MemoryState, key_ids: Sequence[str], q_vecs: np.ndarray, q_of: np.ndarray,
              a_vecs: np.ndarray, outcome: np.ndarray, step: int, write: bool = True) -> Scores:
        """Raw values of one chunk: ``(exploit_raw, explore_raw, explore_on)`` per completion
        (NaN where nothing was retrieved or explore was off), writing the chunk to ``state``.

        ``q_vecs`` holds the chunk's distinct query questions and ``q_of`` each completion's row
        of it; ``key_ids`` are the write keys. ``write=False`` is asked only of a semantics that
        ``scores_alone``: score without writing.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<memory semantics {self.name!r}>"


SEMANTICS: dict[str, MemorySemantics] = {}


def register(cls: type[MemorySemantics]) -> type[MemorySemantics]:
    """Class decorator: add a semantics to :data:`SEMANTICS` under its ``name``."""
    if cls.name in SEMANTICS:
        raise ValueError(f"memory semantics {cls.name!r} is registered twice")
    SEMANTICS[cls.name] = cls()
    return cls


def semantics_named(name: str) -> MemorySemantics:
    """The registered semantics ``name`` (``ValueError`` naming the valid ones otherwise)."""
    try:
        return SEMANTICS[name]
    except (KeyError, TypeError):
        raise ValueError(f"memory_semantics={name!r} is not one of {', '.join(SEMANTICS)}") from None


def read_memories(state: MemoryState, q_vecs: np.ndarray, q_of: np.ndarray, a_vecs: np.ndarray,
                  explore_on: bool) -> tuple[np.ndarray, np.ndarray]:
    """Raw exploit and explore values of every completion against the memories as they are now
    (no writes); all completions of one question share its retrieval."""
    n, k = len(q_of), state.config.memory_top_k
    ex_raw = np.full(n, np.nan)
    xp_raw = np.full(n, np.nan)
    groups = [np.flatnonzero(q_of == j) for j in range(len(q_vecs))]
    if len(state.success_memory):
        centroids, counts = state.success_memory.centroids(q_vecs, k)
        for j, idx in enumerate(groups):
            if counts[j]:
                ex_raw[idx] = exploit_raw(a_vecs[idx], centroids[j])
    if explore_on and len(state.failure_memory):
        max_cos = state.failure_memory.max_similarity(q_vecs, k, [a_vecs[idx] for idx in groups])
        for idx, mc in zip(groups, max_cos):
            xp_raw[idx] = explore_raw(mc)
    return ex_raw, xp_raw


@register
class ScoreThenWrite(MemorySemantics):
    name = "score_then_write"
    summary = "order-invariant"
    reads = "the memories as they were before the batch"
    writes = "the whole batch, after scoring it"
    order_invariant = True
    scores_alone = True

    def score(self, state, key_ids, q_vecs, q_of, a_vecs, outcome, step, write=True) -> Scores:
        on = state.explore_on(step)  # counted before the chunk is written
        ex_raw, xp_raw = read_memories(state, q_vecs, q_of, a_vecs, on)
        if write:
            state.write(key_ids, q_vecs[q_of], a_vecs, outcome)
        return ex_raw, xp_raw, np.full(len(q_of), on)


@register
class WriteThenScore(MemorySemantics):
    name = "write_then_score"
    summary = "the reference's order"
    reads = "the memories after the completion's own insert, in batch order"
    writes = "each completion before scoring it"
    order_invariant = False
    not_alone = "depends on the order of completions"

    def score(self, state, key_ids, q_vecs, q_of, a_vecs, outcome, step, write=True) -> Scores:
        """The reference's order: insert each completion, then score it, in batch order (exploit:
        insert if a success, then score; explore: insert if a failure, then score; the two
        memories are independent, so doing both per completion is the same). The failure-key
        warm-up is checked after each insert, as the reference does."""
        k = state.config.memory_top_k
        n = len(q_of)
        ex_raw, xp_raw = np.full(n, np.nan), np.full(n, np.nan)
        on = np.zeros(n, dtype=bool)
        for i in range(n):
            q = q_vecs[q_of[i] : q_of[i] + 1]
            state.write([key_ids[i]], q, a_vecs[i : i + 1], outcome[i : i + 1])
            if len(state.success_memory):
                cen, cnt = state.success_memory.centroids(q, k)
                if cnt[0]:
                    ex_raw[i] = exploit_raw(a_vecs[i : i + 1], cen[0])[0]
            on[i] = state.explore_on(step)
            if on[i] and len(state.failure_memory):
                pool = state.failure_memory.read(q, k)[0]
                if pool.shape[0]:
                    xp_raw[i] = explore_raw(max_cosine(np.asarray(a_vecs[i], np.float32), pool))
        return ex_raw, xp_raw, on


@register
class GroupLeaveOneOut(MemorySemantics):
    name = "group_loo"
    summary = "order-invariant, scored with the batch's other completions"
    reads = "the memories before the batch plus the batch's other completions that the write rule stores"
    writes = "the whole batch, after scoring it"
    order_invariant = True
    not_alone = "scores each completion against the other completions of its step"

    def score(self, state, key_ids, q_vecs, q_of, a_vecs, outcome, step, write=True) -> Scores:
        """Score each completion against the memory before the batch plus the batch's *other*
        completions that the write rule stores (from every process), then write the batch.

        Nothing is rebuilt or re-encoded per completion: the batch's values are summed per key
        once (exploit) and each distinct read builds one pool whose own row is masked (explore).
        Arithmetic is float64, so the result does not depend on the batch's order to ~1e-15.
        """
        c = state.config
        on = state.explore_on(step)  # counted before the chunk is written
        parts = all_gather_objects(state.local_part(key_ids, q_vecs[q_of], a_vecs, outcome))
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
        ex_raw = self._read(state, state.success_memory, q_vecs, q_of, a_vecs, own, batch, ok, "exploit")
        xp_raw = np.full(len(q_of), np.nan)
        if on:
            bad = batch["outcome"] <= c.memory_failure_threshold
            xp_raw = self._read(state, state.failure_memory, q_vecs, q_of, a_vecs, own, batch, bad, "explore")
        state.write_parts(parts)
        return ex_raw, xp_raw, np.full(len(q_of), on)

    @staticmethod
    def _read(state, memory, q_vecs, q_of, a_vecs, own, batch, written, component) -> np.ndarray:
        """Raw exploit or explore values of the local completions against ``memory`` plus the
        batch rows ``written`` to it, each completion's own row left out."""
        k = state.config.memory_top_k
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
                        out[i] = float(exploit_raw(m, t / cnt, np.float64))
            else:
                sims = probes @ pool.T
                for row, i in enumerate(members):
                    col = self_col.get(int(own[i]))
                    if col is not None:
                        sims[row, col] = -np.inf
                    best = sims[row].max()
                    if np.isfinite(best):
                        out[i] = float(explore_raw(best, np.float64))
        return out


@register
class Reference(WriteThenScore):
    name = "reference"
    summary = "the reference reproduced: its order plus a preset of the options marked 'preset'"
    reads = WriteThenScore.reads
    writes = WriteThenScore.writes

    def preset(self, explore: bool = True) -> dict[str, Any]:
        return {"memory_key_rule": "first_prompt", "memory_micro_batch_prompts": 2,
                "memory_success_rule": "exact_answer", "memory_store": "reference",
                "memory_normalizer": "sequential", "memory_norm_tolerance": 0.0,
                "memory_norm_flat": "reference", "memory_warmup_unit": "failure_keys",
                "memory_max_keys": 10_000, "memory_max_values": 100 if explore else 1000}

    def check(self, config: Any) -> None:
        deviations = config.reference_deviations()
        if deviations:
            logger.warning("memory_semantics='reference' with options that differ from the reference code: %s",
                           ", ".join(f"{k}={v!r} (reference {r!r})" for k, (v, r) in deviations.items()))
