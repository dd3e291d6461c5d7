"""TRL reward functions served by ``memrl serve``: Memory-R / Memory-R+ whose memory lives in a service.

Why: TRL's ``AsyncGRPOTrainer`` (TRL >= 1.16, ``trl.experimental.async_grpo``) computes rewards in a
*spawned*, CUDA-free child process (``AsyncRolloutWorker`` pickles ``reward_funcs`` into it). A
:class:`~memrl.rewards.MemoryRPlus` passed there is copied into the child: the child's copy fills up,
the trainer's copy stays empty, so checkpoints save an empty memory; and the child's scoring call
gets no ``trainer_state``, so a step-based warm-up cannot count. Here the memory, its snapshots and
the step count live in one ``memrl serve`` process, and the trainer (or its child) only holds a
small, picklable HTTP client.

Usage (``memrl serve --config gsm8k-qwen2.5-0.5b --method memory-r+ --commit-every 256`` running)::

    from memrl.integrations.remote import RemoteMemoryReward
    from memrl.rewards.registry import build_rewards

    remote = RemoteMemoryReward("http://127.0.0.1:5000")        # the exploit and explore rewards
    r1, _ = build_rewards("r1", ...)                             # pure rewards can stay local
    trainer = AsyncGRPOTrainer(model=..., reward_funcs=[*r1, *remote.reward_functions()], ...)

Each reward function has TRL's signature ``(prompts, completions, **columns)`` (``trainer_state``
and ``completion_ids`` when TRL passes them) and returns one value per completion: the service's
value of the reward of that name (``extra_logs`` of its answer; ``"total"`` names the service's
weighted sum of every reward it serves). The functions of one :class:`RemoteMemoryReward` share
one request per batch: the first of them called on a batch sends it (``POST /get_reward``), the
others take their share of that answer, so the service sees each completion once even when TRL
calls the functions concurrently (``AsyncRolloutWorker`` runs them in threads).

Reasoning split off by TRL: the async worker turns each generated turn into a chat message with
TRL's response parser, which for Qwen2.5/Qwen3-style templates moves a ``<think>`` block out of
``content`` into ``reasoning_content``. memrl's rewards read the reasoning (the memory stores it,
the format rewards check its tags), so the completion text sent is rebuilt as
``<think>\n{reasoning_content}\n</think>\n{content}``; with ``tokenizer`` given, it is instead the
completion's own tokens decoded (``completion_ids``, special tokens skipped, as ``GRPOTrainer``
decodes), which keeps the model's exact whitespace.

What is sent per completion: the prompt (a string or chat messages), the completion text, the gold
answer from the ``answer_column`` (an object with ``id_column`` too when the service keys its
memory by an id), the question from ``question_column`` when the batch has that column (else the
service takes the prompt's last user turn), the token ids when TRL passes ``completion_ids``, and
the trainer's step (``trainer_state.global_step``) when TRL passes one (``GRPOTrainer`` does, the
async worker does not; then set ``--commit-every`` on the service, see docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from typing import Any

from memrl.rewards.common import check_lengths, completion_text
from memrl.serve.client import RewardClient

MEMORY_REWARDS = ("memory_exploit_reward", "memory_explore_reward")
TOTAL = "total"  # the service's weighted sum of every reward it serves (its `rewards` field)
MAX_PENDING = 8  # answers kept for functions that have not taken their share yet


class RemoteRewardFunction:
    """One TRL reward function: the value named ``name`` of its owner's request for the batch."""

    def __init__(self, owner: RemoteMemoryReward, name: str) -> None:
        self.owner = owner
        self.name = name
        self.__name__ = name  # what TRL logs it as (trl.trainer.utils.get_callable_name)

    def __call__(self, prompts: Any = None, completions: Any = None, **kwargs: Any) -> list[float | None]:
        return self.owner.take(self.name, prompts, completions, kwargs)

    def __repr__(self) -> str:
        return f"<{self.name} served by {self.owner.url}>"


class RemoteMemoryReward:
    """TRL reward functions computed by a ``memrl serve`` instance (see the module docstring).

    Args:
        url: the service (``http://host:port``, or its ``/get_reward`` URL).
        names: rewards to return, each as one TRL reward function, in this order: names the service
            serves (``memory_exploit_reward``, ``memory_explore_reward``, ``correctness_reward``, ...)
            or ``"total"``. Default: the two memory rewards, for a Memory-R+ service.
        token: bearer token (default ``$MEMRL_SERVE_TOKEN`` in the process that sends).
        answer_column, question_column, id_column: dataset columns sent as the gold answer, the
            memory key and the memory id (``memory_id_column`` of the service; None: none).
        send_step: send ``trainer_state.global_step`` when TRL passes it, so the service commits a
            step when the trainer starts the next one.
        tokenizer: the policy's tokenizer (a local path, or a tokenizer): completions are then sent as
            their ``completion_ids`` decoded with special tokens skipped; None: the messages' text,
            reasoning restored with ``think_tag``.
        think_tag: the tag put around reasoning TRL's parser split off (memrl's ``think`` prompt style).
        timeout: seconds to wait for an answer (never retried after a timeout: the service may
            have counted the request).

    The object pickles as its settings only; each process opens its own connections.
    """

    def __init__(self, url: str, names: Sequence[str] = MEMORY_REWARDS, *, token: str | None = None,
                 answer_column: str = "answer", question_column: str = "question", id_column: str | None = None,
                 send_step: bool = True, tokenizer: Any = None, think_tag: str = "think",
                 timeout: float = 180.0) -> None:
        names = list(names)
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"names must be distinct, non-empty reward names, got {names!r}")
        RewardClient(url)  # refuse a malformed URL here, in the trainer, not later in a worker process
        self.url, self.names, self.token = url, names, token
        self.answer_column, self.question_column, self.id_column = answer_column, question_column, id_column
        self.send_step, self.timeout = send_step, timeout
        self.tokenizer, self.think_tag = tokenizer, think_tag
        self._functions = [RemoteRewardFunction(self, name) for name in names]
        self._local_state()

    def _local_state(self) -> None:
        # per process: the connection pool, and the answer of the batch being shared out
        self._client: RewardClient | None = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[dict[str, list[Any]], set[str]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_client", "_tokenizer", "_lock", "_pending"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local_state()

    def __repr__(self) -> str:
        return f"RemoteMemoryReward({self.url!r}, names={self.names!r})"

    def reward_functions(self) -> list[RemoteRewardFunction]:
        """The TRL reward functions, one per name, in ``names`` order."""
        return list(self._functions)

    @property
    def client(self) -> RewardClient:
        if self._client is None:
            self._client = RewardClient(self.url, token=self.token, timeout=self.timeout)
        return self._client

    # ------------------------------------------------------------------ one request per batch
    def take(self, name: str, prompts: Any, completions: Any, kwargs: dict[str, Any]) -> list[float | None]:
        """Reward ``name`` of this batch. The first function to ask sends the batch; each other
        function takes the same answer once; a function asking again (the next batch, even one
        with the same texts) sends anew."""
        payload = self.payload(prompts, completions, kwargs)
        key = hashlib.blake2b(json.dumps(payload, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()
        with self._lock:  # held through the request: a concurrent function on the same batch waits for it
            entry = self._pending.get(key)
            if entry is None or name not in entry[1]:
                entry = (self.values(self.client.get_reward(**payload)), set(self.names))
            entry[1].discard(name)
            self._pending.pop(key, None)
            if entry[1]:
                self._pending[key] = entry  # newest last
                while len(self._pending) > MAX_PENDING:  # functions the trainer never calls: drop the oldest
                    self._pending.pop(next(iter(self._pending)))
            return entry[0][name]

    def texts(self, completions: Any, completion_ids: Any) -> list[str]:
        """The completions' texts (see the class docstring for where they come from)."""
        if completions is None or isinstance(completions, str):
            raise TypeError("completions must be a list (one entry per completion)")
        if self.tokenizer is not None and completion_ids is not None:
            if self._tokenizer is None:  # loaded once per process
                from transformers import AutoTokenizer

                self._tokenizer = (AutoTokenizer.from_pretrained(self.tokenizer) if isinstance(self.tokenizer, str)
                                   else self.tokenizer)
            check_lengths(len(completions), completion_ids=completion_ids)
            return self._tokenizer.batch_decode([list(ids) for ids in completion_ids], skip_special_tokens=True)
        return [completion_text(c, i, self.think_tag) for i, c in enumerate(completions)]

    def payload(self, prompts: Any, completions: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The ``/get_reward`` fields for TRL's call (see :mod:`memrl.serve.protocol`)."""
        texts = self.texts(completions, kwargs.get("completion_ids"))
        n = len(texts)
        if prompts is None:
            raise ValueError("the memrl reward service needs the prompts of the completions (TRL passes them)")
        check_lengths(n, prompts=prompts)
        answers = kwargs.get(self.answer_column)
        if answers is None:
            columns = sorted(k for k in kwargs if k not in ("trainer_state", "log_metric", "log_extra"))
            raise ValueError(f"the memrl reward service needs the gold answers: dataset column "
                             f"{self.answer_column!r} is missing (columns passed: {columns})")
        check_lengths(n, **{self.answer_column: answers})
        labels: list[Any] = [_json_value(a) for a in answers]
        if self.id_column is not None:
            ids = kwargs.get(self.id_column)
            if ids is None:
                raise ValueError(f"id_column {self.id_column!r} is not a column of the batch")
            check_lengths(n, **{self.id_column: ids})
            labels = [{"answer": a, self.id_column: _json_value(i)} for a, i in zip(labels, ids)]
        payload: dict[str, Any] = {"prompts": [_json_value(p) for p in prompts], "responses": texts, "labels": labels}
        questions = kwargs.get(self.question_column)
        if questions is not None:
            check_lengths(n, **{self.question_column: questions})
            payload["questions"] = [str(q) for q in questions]
        ids = kwargs.get("completion_ids")
        if ids is not None:
            payload["completion_ids"] = [[int(t) for t in row] for row in ids]
        state = kwargs.get("trainer_state")
        if self.send_step and getattr(state, "global_step", None) is not None:
            payload["step"] = int(state.global_step)
        return payload

    def values(self, answer: dict[str, Any]) -> dict[str, list[Any]]:
        """Each requested reward of a service answer, by name (a value of None: not finite there)."""
        served = answer.get("extra_logs") or {}
        missing = [n for n in self.names if n != TOTAL and n not in served]
        if missing:
            raise ValueError(f"the reward service at {self.url} serves {sorted(served)} (and 'total'), not "
                             f"{missing}: start it with the method whose rewards you ask for (memory-r+ for both "
                             "memory rewards)")
        return {n: list(answer["rewards"] if n == TOTAL else served[n]) for n in self.names}


def _json_value(value: Any) -> Any:
    """A value of a dataset column as JSON (numpy scalars and arrays become Python values)."""
    return value.tolist() if hasattr(value, "tolist") else value
