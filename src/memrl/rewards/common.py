"""Input handling shared by every reward: TRL passes plain strings or chat messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# keys TRL's response parsers put a message's reasoning under (trl/chat_template_utils.py)
REASONING_KEYS = ("reasoning_content", "thinking")
REASONING_TAG = "think"


def completion_text(completion: Any, index: int = 0, reasoning_tag: str = REASONING_TAG) -> str:
    """Text of one completion as the model wrote it: a string, or TRL's conversational
    ``[{"role": "assistant", "content": ...}]`` (the assistant turns are joined). Reasoning that
    TRL's response parser moved out of ``content`` (``reasoning_content`` / ``thinking``) is put
    back in front, inside ``<reasoning_tag>`` ... ``</reasoning_tag>``, so format rewards and the
    memories see it.

    An empty completion is a real model output and is returned as ``""``; ``None`` or any other
    type is a caller bug and raises ``TypeError`` naming the index.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)):
        parts = []
        for message in completion:
            if not isinstance(message, dict) or "content" not in message:
                raise TypeError(
                    f"completions[{index}] is a list but not of chat messages with 'content': {message!r:.80}"
                )
            content = message["content"]
            reasoning = next((message[k] for k in REASONING_KEYS if message.get(k)), None)
            if content is None and isinstance(reasoning, str):
                content = ""  # all of the message was reasoning
            if not isinstance(content, str):
                raise TypeError(f"completions[{index}] has non-string content: {type(content).__name__}")
            if message.get("role", "assistant") == "assistant":
                if isinstance(reasoning, str):
                    content = f"<{reasoning_tag}>\n{reasoning}\n</{reasoning_tag}>\n{content}"
                parts.append(content)
        return "".join(parts)
    raise TypeError(
        f"completions[{index}] must be a string or a list of chat messages, got {type(completion).__name__}"
    )


def completion_texts(completions: Sequence[Any]) -> list[str]:
    if completions is None or isinstance(completions, str):
        raise TypeError("completions must be a list (one entry per completion)")
    return [completion_text(c, i) for i, c in enumerate(completions)]


def prompt_question(prompt: Any, index: int = 0) -> str:
    """The question a prompt asks: a plain prompt as is, or the last user message of a chat."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users and isinstance(users[-1], str):
            return users[-1]
    raise TypeError(f"prompts[{index}] must be a string or a list of chat messages with a user turn")


def question_keys(prompts: Sequence[Any] | None, n: int, kwargs: dict[str, Any], column: str | None) -> list[str]:
    """Per-completion memory key: the dataset column ``column`` when present (e.g. a question id
    or the raw question), else the question text of the completion's **own** prompt (the reference
    code keyed every completion by ``prompts[0]``, filing other questions under the first)."""
    if column and column in kwargs and kwargs[column] is not None:
        values = list(kwargs[column])
        check_lengths(n, **{column: values})
        return [str(v) for v in values]
    if prompts is None:
        raise ValueError(f"need prompts or a {column!r} column to know each completion's question")
    check_lengths(n, prompts=prompts)
    return [prompt_question(p, i) for i, p in enumerate(prompts)]


def check_lengths(n: int, **columns: Sequence[Any] | None) -> None:
    """Raise ``ValueError`` naming every column whose length is not ``n``."""
    bad = {name: len(col) for name, col in columns.items() if col is not None and len(col) != n}
    if bad:
        listed = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise ValueError(f"got {n} completions but mismatched lengths: {listed}")


def require_column(kwargs: dict[str, Any], column: str, n: int, reward_name: str) -> list[Any]:
    """Fetch a dataset column TRL forwarded as a keyword, with a clear error when it is absent."""
    if column not in kwargs or kwargs[column] is None:
        present = sorted(k for k in kwargs if k not in ("trainer_state", "log_metric", "log_extra"))
        raise ValueError(
            f"{reward_name} needs the dataset column {column!r} (the gold answer); columns passed: "
            f"{present or 'none'}. Rename your answer column or pass answer_column=..."
        )
    values = list(kwargs[column])
    check_lengths(n, **{column: values})
    return values
