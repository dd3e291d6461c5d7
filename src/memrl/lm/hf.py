"""Label / choice scoring with a transformers causal LM, with a KV cache of the shared prefix.

Why a prefix cache: on CPU, scoring is compute-bound (~100 forward tokens/s for the 135M model
on 2 cores), and with ``n`` demonstrations the prefix is most of every prompt. POEM scores many
queries under the same demonstration order (during ``fit``, and when grouping test queries by
chosen order), so the prefix of each distinct order is run once and every query pays only for
its own suffix.

Partial reuse: when no cached prefix matches exactly, the cached prefix sharing the longest run of
leading tokens is copied, cut back to that run and extended with the rest, so prompts that start
alike (one input's demonstrations in different orders, as in a ``examples="knn"`` POEM fit) pay
only for where they differ. The KV of a token depends only on the tokens before it, so this is
the same computation split in two forwards (equal to float rounding; tested).

Tokenisation boundary: prefix, suffix and continuations are tokenised **separately** and the
model sees their concatenated ids, in both the cached and the full-prompt path. Both paths
therefore see identical tokens and give the same log-probabilities (to float rounding).
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from memrl.lm.base import ContinuationScores, as_choice_lists

logger = logging.getLogger(__name__)


MIN_SHARED_TOKENS = 8  # fewer shared leading tokens than this: compute the prefix from scratch


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def longest_shared_start(
    cached_keys: Iterable[Sequence[int]], key: Sequence[int], min_shared: int = MIN_SHARED_TOKENS
) -> tuple[Sequence[int] | None, int]:
    """The cached prefix sharing the most leading tokens with ``key``, and how many (at most
    ``len(key)``); ``(None, 0)`` when none shares at least ``min_shared`` (reusing so little would
    cost more in copying than it saves). The first of equally long matches wins.

    >>> longest_shared_start([(1, 2, 3, 4), (1, 2, 9)], (1, 2, 3, 7), min_shared=2)
    ((1, 2, 3, 4), 3)
    >>> longest_shared_start([(1, 2, 3, 4)], (1, 2), min_shared=2)   # key is a start of a cached prefix
    ((1, 2, 3, 4), 2)
    >>> longest_shared_start([(5, 6)], (1, 2), min_shared=1)
    (None, 0)
    """
    best, shared = None, 0
    for cached_key in cached_keys:
        n = common_prefix_length(cached_key, key)
        if n > shared:
            best, shared = cached_key, n
    shared = min(shared, len(key))
    if best is None or shared < min_shared:
        return None, 0
    return best, shared


class HFScorer:
    """Score continuations with a transformers causal LM (default: offline SmolLM2-135M-Instruct).

    Args:
        model: a loaded causal LM (``memrl.lm.loading.load_model``), in eval mode.
        tokenizer: its tokenizer.
        identity: stable LM name saved with POEM memories (``memrl.lm.loading.model_identity``).
        batch_size: suffix rows per forward pass.
        prefix_cache: reuse the KV cache of the shared prefix (default) or score full prompts.
        max_cached_prefixes: prefixes whose KV cache is kept (LRU); ~9 MB each for 200 tokens.
        partial_prefix_reuse: build a new prefix's KV from the cached prefix sharing its longest
            start (default; the same scores to float rounding); off, every new prefix is computed in
            full, as memrl 0.1.0 did.

    Example:
        >>> scorer = HFScorer.from_name("smollm2-135m")                     # doctest: +SKIP
        >>> s = scorer.score("Review: dull.\\nSentiment: terrible\\n\\n",     # doctest: +SKIP
        ...                  ["Review: a joy.\\nSentiment:"], [" terrible", " great"])
        >>> s.logprob.shape                                                   # doctest: +SKIP
        (1, 2)
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        identity: str,
        batch_size: int = 16,
        prefix_cache: bool = True,
        max_cached_prefixes: int = 24,
        partial_prefix_reuse: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.identity = identity
        self.batch_size = batch_size
        self.prefix_cache = prefix_cache
        self.max_cached_prefixes = max_cached_prefixes
        self.partial_prefix_reuse = partial_prefix_reuse
        self.calls = 0
        self.forward_tokens = 0  # tokens actually run through the model (cost measure)
        self._kv: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._tok_cache: dict[str, list[int]] = {}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad_id = int(pad if pad is not None else 0)

    @classmethod
    def from_name(cls, name: str = "smollm2-135m", **kwargs: Any) -> HFScorer:
        """Load ``name`` with :func:`memrl.lm.loading.load_model` and wrap it."""
        from memrl.lm.loading import load_model, model_identity

        model, tokenizer = load_model(name)
        return cls(model, tokenizer, identity=model_identity(name), **kwargs)

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (memoised: prefixes repeat a lot)."""
        ids = self._tok_cache.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(self._tok_cache) < 200_000:
                self._tok_cache[text] = ids
        return ids

    # ------------------------------------------------------------------ public
    def score(
        self,
        prefix: str,
        suffixes: Sequence[str],
        continuations: Sequence[str] | Sequence[Sequence[str]],
    ) -> ContinuationScores:
        """Log-probability of each continuation after ``prefix + suffix`` (see :class:`Scorer`).

        Returns :class:`ContinuationScores` with ``(m, C)`` arrays; ``m = len(suffixes)``.
        """
        m = len(suffixes)
        choices = as_choice_lists(continuations, m) if m else []
        if m == 0:
            return ContinuationScores(np.zeros((0, 0)), np.zeros((0, 0), np.int64))
        prefix_ids = self.tokenize(prefix)
        suffix_ids = [self.tokenize(s) for s in suffixes]
        for i, ids in enumerate(suffix_ids):
            if not ids:
                raise ValueError(f"suffix {i} is empty; the query template must render some text")
        cont_ids = [[self.tokenize(c) for c in row] for row in choices]
        for i, row in enumerate(cont_ids):
            for c, ids in enumerate(row):
                if not ids:
                    raise ValueError(f"continuation {choices[i][c]!r} of query {i} has no tokens")
        C = len(choices[0])
        logprob = np.zeros((m, C), np.float64)
        num_tokens = np.array([[len(ids) for ids in row] for row in cont_ids], np.int64)

        # Row layout. Single-token continuations (the usual verbalizers) need no extra forward:
        # every choice is read off the next-token distribution at the suffix's last position, so
        # one row per query. Otherwise one row per (query, choice) holding suffix + choice.
        rows: list[list[int]] = []
        targets: list[list[tuple[int, int, int, int]]] = []  # (pos, token, query, choice)
        if int(num_tokens.max()) == 1:
            for i, ids in enumerate(suffix_ids):
                last = len(ids) - 1
                rows.append(ids)
                targets.append([(last, cont_ids[i][c][0], i, c) for c in range(C)])
        else:
            for i, ids in enumerate(suffix_ids):
                for c in range(C):
                    cont = cont_ids[i][c]
                    rows.append(ids + cont[:-1])
                    targets.append(
                        [(len(ids) - 1 + j, tok, i, c) for j, tok in enumerate(cont)]
                    )
        for b, lp in enumerate(self._row_logprobs(prefix_ids, rows, targets)):
            for (_, _, i, c), value in zip(targets[b], lp):
                logprob[i, c] += value
        self.calls += m
        return ContinuationScores(logprob, num_tokens)

    # ------------------------------------------------------------------ internals
    def _row_logprobs(
        self,
        prefix_ids: list[int],
        rows: list[list[int]],
        targets: list[list[tuple[int, int, int, int]]],
    ) -> list[np.ndarray]:
        """Log-probabilities of each row's target tokens, ``[(len(targets[b]),) per row]``."""
        import torch

        out: list[np.ndarray | None] = [None] * len(rows)
        # Length-sorted batches waste less compute on padding.
        order = sorted(range(len(rows)), key=lambda b: len(rows[b]))
        use_cache = self.prefix_cache and len(prefix_ids) > 0
        base_cache = self._prefix_kv(prefix_ids) if use_cache else None
        P = len(prefix_ids)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                if use_cache:
                    seqs = [rows[b] for b in idx]
                    offset = 0  # target positions are relative to the suffix row
                else:
                    seqs = [prefix_ids + rows[b] for b in idx]
                    offset = P
                B, S = len(seqs), max(len(s) for s in seqs)
                ids = torch.full((B, S), self._pad_id, dtype=torch.long)
                mask = torch.zeros((B, S), dtype=torch.long)
                for r, s in enumerate(seqs):  # right padding: real tokens keep positions 0..len-1
                    ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
                    mask[r, : len(s)] = 1
                kwargs: dict[str, Any] = {}
                if use_cache:
                    cache = copy.deepcopy(base_cache)  # forward() extends the cache in place
                    cache.batch_repeat_interleave(B)
                    mask = torch.cat([torch.ones((B, P), dtype=torch.long), mask], dim=1)
                    positions = (P + torch.arange(S)).unsqueeze(0).expand(B, S)
                    kwargs.update({self._cache_kw: cache, "position_ids": positions, "use_cache": True})
                else:
                    kwargs.update(
                        position_ids=torch.arange(S).unsqueeze(0).expand(B, S), use_cache=False
                    )
                hidden = self._decoder(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
                self.forward_tokens += int(sum(len(s) for s in seqs))
                # Project only the positions we need through the LM head (V = 49k: the full
                # (B, S, V) logits would dominate memory and time).
                rsel, psel, tsel, owner = [], [], [], []
                for r, b in enumerate(idx):
                    for pos, tok, _, _ in targets[b]:
                        rsel.append(r)
                        psel.append(pos + offset)
                        tsel.append(tok)
                        owner.append(b)
                h = hidden[torch.tensor(rsel), torch.tensor(psel)]
                logits = self._final_logits(self._head(h).float())
                lp = torch.log_softmax(logits, dim=-1)[torch.arange(len(tsel)), torch.tensor(tsel)]
                lp_np = lp.double().cpu().numpy()
                k = 0
                for b in idx:
                    n = len(targets[b])
                    out[b] = lp_np[k : k + n]
                    k += n
        return out  # type: ignore[return-value]

    @functools.cached_property
    def _cache_kw(self) -> str:
        # transformers 5.x renamed the argument (``past_key_values`` is deprecated there).
        params = inspect.signature(self._decoder.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    @property
    def _decoder(self) -> Any:
        return self.model.get_decoder()

    @property
    def _head(self) -> Any:
        return self.model.get_output_embeddings()

    def _final_logits(self, logits: Any) -> Any:
        """What the model's own forward applies after the output embedding, since scoring
        projects hidden states itself: a logit scale (Cohere) and final soft-capping (Gemma 2/3).
        SmolLM2, Llama and Qwen have neither (the soft-capping path is tested on SmolLM2 with the
        setting switched on)."""
        import torch

        cfg = getattr(self.model.config, "get_text_config", lambda: self.model.config)()
        scale = getattr(cfg, "logit_scale", None)
        if isinstance(scale, (int, float)) and scale != 1:
            logits = logits * scale
        cap = getattr(cfg, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _prefix_kv(self, prefix_ids: list[int]) -> Any:
        """KV cache of ``prefix_ids`` at batch size 1 (LRU-cached across calls; built from the
        cached prefix with the longest shared start when there is one)."""
        import torch
        from transformers import DynamicCache

        key = tuple(prefix_ids)
        cached = self._kv.get(key)
        if cached is not None:
            self._kv.move_to_end(key)
            return cached
        with torch.inference_mode():
            cache, start = self._shared_start(key)
            if cache is None:
                cache, start = DynamicCache(config=self.model.config), 0
            if start < len(prefix_ids):
                self._decoder(
                    input_ids=torch.tensor([prefix_ids[start:]], dtype=torch.long),
                    attention_mask=torch.ones((1, len(prefix_ids)), dtype=torch.long),
                    position_ids=torch.arange(start, len(prefix_ids)).unsqueeze(0),
                    use_cache=True,
                    **{self._cache_kw: cache},
                )
        self.forward_tokens += len(prefix_ids) - start
        self._kv[key] = cache
        while len(self._kv) > self.max_cached_prefixes:
            self._kv.popitem(last=False)
        return cache

    def _shared_start(self, key: tuple[int, ...]) -> tuple[Any, int]:
        """A copy of the cached KV whose prefix shares the most leading tokens with ``key``, cut
        back to those ``shared`` tokens, and ``shared``; ``(None, 0)`` when no cached prefix shares
        at least :data:`MIN_SHARED_TOKENS` (a copy would cost more than it saves) or the cache
        type cannot be cut back (e.g. a sliding-window layer past its window)."""
        if not self.partial_prefix_reuse:
            return None, 0
        best, shared = longest_shared_start(self._kv, key)
        if best is None:
            return None, 0
        cache = copy.deepcopy(self._kv[best])
        drop = len(best) - shared
        if drop:
            try:
                cache.crop(-drop)  # a negative count removes tokens from the end, in every transformers version
            except Exception as exc:  # noqa: BLE001 - fall back to computing the prefix in full
                logger.debug("prefix KV cannot be cut back (%s); computing it in full", exc)
                return None, 0
        self._kv.move_to_end(best)
        return cache, shared

    def clear_cache(self) -> None:
        """Drop cached prefix KV states (frees memory)."""
        self._kv.clear()
