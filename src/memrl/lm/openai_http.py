"""Scoring through an OpenAI-compatible ``/v1/completions`` endpoint that echoes prompt log-probabilities (vLLM).

The server must support *prompt* log-probabilities: ``echo=true, logprobs=1, max_tokens=0``
returns, for every prompt token, its log-probability and character offset. A continuation's
score is the sum over the prompt tokens that start at or after the continuation's first
character (tokens past the prompt's end, which some servers generate anyway, are not counted).

Only the standard library is used (``urllib``), so the backend works wherever Python does.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from memrl.lm.base import ContinuationScores, as_choice_lists

logger = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LogprobsUnavailableError(RuntimeError):
    """The server answered but gave no prompt log-probabilities (``echo``/``logprobs`` unsupported)."""


class OpenAICompletionsScorer:
    """Score continuations with a remote OpenAI-compatible completions server.

    Args:
        base_url: server root, e.g. ``http://127.0.0.1:8000/v1`` (``/completions`` is appended).
        model: model name sent in each request; also the LM identity unless ``identity`` is set.
        api_key: bearer token, if the server needs one.
        timeout: seconds per HTTP request.
        max_retries: extra attempts after a connection error, timeout, 429 or 5xx.
        backoff: first retry delay in seconds; doubled after each failure.
        batch_size: prompts per request (each (query, choice) pair is one prompt string).
        identity: override for the LM identity saved with POEM memories.

    Example:
        >>> scorer = OpenAICompletionsScorer("http://127.0.0.1:8080/v1", "smollm2")  # doctest: +SKIP
        >>> scorer.score("", ["Review: fun.\\nSentiment:"], [" terrible", " great"])  # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        batch_size: int = 32,
        identity: str | None = None,
    ) -> None:
        if max_retries < 0 or timeout <= 0 or batch_size < 1:
            raise ValueError(
                f"need max_retries >= 0, timeout > 0, batch_size >= 1; got {max_retries}, "
                f"{timeout}, {batch_size}"
            )
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.batch_size = batch_size
        self.identity = identity or f"openai-completions:{model}"
        self.calls = 0
        self.requests = 0  # HTTP requests sent, retries included

    def score(
        self,
        prefix: str,
        suffixes: Sequence[str],
        continuations: Sequence[str] | Sequence[Sequence[str]],
    ) -> ContinuationScores:
        """Sum log-probability of each continuation after ``prefix + suffix`` (``(m, C)``)."""
        m = len(suffixes)
        if m == 0:
            return ContinuationScores(np.zeros((0, 0)), np.zeros((0, 0), np.int64))
        choices = as_choice_lists(continuations, m)
        C = len(choices[0])
        prompts, starts = [], []
        for i, suffix in enumerate(suffixes):
            context = prefix + suffix
            for c in range(C):
                prompts.append(context + choices[i][c])
                starts.append(len(context))
        logprob = np.zeros(m * C, np.float64)
        num_tokens = np.zeros(m * C, np.int64)
        for lo in range(0, len(prompts), self.batch_size):
            batch = prompts[lo : lo + self.batch_size]
            body = {
                "model": self.model,
                "prompt": batch,
                "max_tokens": 0,
                "echo": True,
                "logprobs": 1,
                "temperature": 0.0,
            }
            reply = self._post(body)
            got = sorted(reply.get("choices") or [], key=lambda ch: ch.get("index", 0))
            if len(got) != len(batch):
                raise RuntimeError(
                    f"{self.url}: asked for {len(batch)} prompts, server returned {len(got)} choices"
                )
            for j, choice in enumerate(got):
                lp, nt = _continuation_logprob(choice, starts[lo + j], self.url, end=len(batch[j]))
                logprob[lo + j] = lp
                num_tokens[lo + j] = nt
        self.calls += m
        return ContinuationScores(logprob.reshape(m, C), num_tokens.reshape(m, C))

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        delay = self.backoff
        for attempt in range(self.max_retries + 1):
            self.requests += 1
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:300]
                if exc.code not in _RETRY_STATUS or attempt == self.max_retries:
                    raise RuntimeError(
                        f"{self.url} answered HTTP {exc.code} after {attempt + 1} attempt(s): {detail}"
                    ) from None
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.max_retries:
                    raise RuntimeError(
                        f"could not reach {self.url} after {attempt + 1} attempt(s) "
                        f"(timeout {self.timeout}s): {exc}"
                    ) from None
                reason = type(exc).__name__
            logger.warning("%s: %s, retrying in %.2fs", self.url, reason, delay)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def _continuation_logprob(choice: dict[str, Any], start: int, url: str, end: int | None = None) -> tuple[float, int]:
    """Sum the echoed log-probabilities of the prompt tokens starting in ``[start, end)``.

    ``end`` is the prompt's length: a token a server generates despite ``max_tokens=0`` starts
    there and is not part of the continuation. A reply whose tokens all start at or after
    ``start`` did not echo the prompt (a server giving log-probabilities of generated tokens
    only): its numbers would look plausible and mean nothing, so it is an error.
    """
    lp = choice.get("logprobs")
    if not lp or lp.get("token_logprobs") is None or lp.get("text_offset") is None:
        raise LogprobsUnavailableError(
            f"{url} returned no prompt log-probabilities. POEM needs a completions endpoint that "
            "supports echo=true with logprobs (vLLM does; llama.cpp's server has rejected or ignored "
            "echo in several versions; chat-only APIs cannot score labels)."
        )
    offsets = lp["text_offset"]
    if not offsets or min(offsets) >= start:
        raise LogprobsUnavailableError(
            f"{url} did not echo the prompt's tokens (first offset {min(offsets) if offsets else None}, "
            f"continuation at {start}); POEM needs log-probabilities of prompt tokens (echo=true)")
    total, count = 0.0, 0
    for value, offset in zip(lp["token_logprobs"], offsets):
        if offset >= start and (end is None or offset < end):
            if value is None:  # only the very first prompt token may lack a log-probability
                raise LogprobsUnavailableError(f"{url}: continuation token without a log-probability")
            total += float(value)
            count += 1
    if count == 0:
        raise RuntimeError(f"{url}: no echoed tokens fall inside the continuation (offset {start})")
    return total, count
