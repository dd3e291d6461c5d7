"""The wire format of ``POST /get_reward``: parsing and full validation of a request body into
samples, before anything touches the reward state.

The request is OpenRLHF's remote reward protocol (``--reward.remote_url``; OpenRLHF's
``SingleTurnAgentExecutor._fetch_rewards_via_http`` posts it with one sample per request, its
older ``remote_rm_fn`` with a micro-batch), extended by optional fields memrl's own clients send::

    {"query":   ["<prompt><response>", ...],   # OpenRLHF: the decoded prompt + response tokens
     "prompts": ["<prompt>", ...],             # the prompt string (or a list of chat messages)
     "labels":  ["42", ...],                   # the gold answer, or an object {"answer": ..., ...}
     "responses": [...],                       # optional: the responses themselves (then no query)
     "questions": [...],                       # optional: the memory key of each sample
     "completion_ids": [[...], ...],           # optional: token ids (the cosine reward counts them)
     "step": 12}                               # optional: the client's step (see the engine)

The response of a sample is ``query[i]`` with ``prompts[i]`` removed from its front (OpenRLHF
decodes prompt and response tokens together, so the prompt is a prefix of the query; a prompt
truncated from the left, as OpenRLHF does for long prompts, is matched by its longest tail that
starts the query), then the end-of-text markers of ``strip`` removed from its end (OpenRLHF
decodes with ``skip_special_tokens=False``, TRL's completions have none).

The question a sample is keyed by: ``questions[i]``, else ``labels[i]["question"]``, else taken
from the prompt: the last user message of a chat prompt; for a string prompt the first group of
``question_regex``, by default the last user turn of a ChatML, Llama 3, Gemma or DeepSeek chat
template, and the whole prompt when none matches.

Every error is a :class:`RequestError` naming the field (``labels[3]``) with HTTP status 400, or
413 for a request over the sample limit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# the user turn of common chat templates, as a decoded prompt string shows them
CHAT_TEMPLATES = (
    re.compile(r"<\|im_start\|>user\s*\n(.*?)<\|im_end\|>", re.S),  # ChatML (Qwen, SmolLM)
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\s*(.*?)<\|eot_id\|>", re.S),  # Llama 3
    re.compile(r"<start_of_turn>user\s*\n(.*?)<end_of_turn>", re.S),  # Gemma
    re.compile(r"<｜User｜>(.*?)<｜Assistant｜>", re.S),  # DeepSeek R1
)
_TAIL_PROBE = 64  # last characters of a prompt looked for in a query whose prompt was cut from the left


class RequestError(ValueError):
    """A request that is refused as a whole: ``status`` (400, 401, 409, 413), the ``field`` at fault."""

    def __init__(self, status: int, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}" if field_name else message)
        self.status = status
        self.field = field_name
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field}


@dataclass
class Sample:
    """One completion to reward, with the dataset columns its rewards read."""

    prompt: Any  # the prompt string, or chat messages
    completion: str
    columns: dict[str, Any]  # at least "answer" and "question"
    completion_ids: list[int] | None = None

    def sort_key(self) -> tuple[str, str, str, str]:
        """Canonical order of a step's samples (see the engine): question, prompt, response, columns."""
        prompt = self.prompt if isinstance(self.prompt, str) else json.dumps(self.prompt, sort_keys=True)
        return (str(self.columns["question"]), prompt, self.completion,
                json.dumps(self.columns, sort_keys=True, default=str))


@dataclass
class RewardRequest:
    samples: list[Sample]
    step: int | None = None


@dataclass
class ProtocolOptions:
    max_samples: int = 4096
    strip: list[str] = field(default_factory=list)
    question_regex: str | None = None
    id_columns: tuple[str, ...] = ()  # columns every sample must carry (labels[i][column])

    def __post_init__(self) -> None:
        self._regex = re.compile(self.question_regex, re.S) if self.question_regex else None


def _fail(name: str, message: str, status: int = 400) -> RequestError:
    return RequestError(status, name, message)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _list_field(data: dict[str, Any], name: str, required: bool) -> list[Any] | None:
    if name not in data or data[name] is None:
        if required:
            raise _fail(name, "missing (a list with one entry per sample)")
        return None
    value = data[name]
    if not isinstance(value, list):
        raise _fail(name, f"must be a list, got {_type_name(value)}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar_text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if _is_number(value):
        if isinstance(value, float) and value != value:
            raise _fail(name, "must not be NaN")
        return str(value)
    raise _fail(name, f"must be a string or a number, got {_type_name(value)}")


def _prompt(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        for j, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str) \
                    or not isinstance(message.get("role", ""), str):
                raise _fail(f"{name}[{j}]", "a chat message must be an object with string 'role' and 'content'")
        return value
    raise _fail(name, f"must be a string or a non-empty list of chat messages, got {_type_name(value)}")


def _label(value: Any, name: str, id_columns: tuple[str, ...]) -> dict[str, Any]:
    if isinstance(value, dict):
        if "answer" not in value:
            raise _fail(name, "an object label needs an 'answer' key (the gold answer)")
        columns = {str(k): _scalar_text(v, f"{name}.{k}") for k, v in value.items()}
    else:
        columns = {"answer": _scalar_text(value, name)}
    for column in id_columns:
        if column not in columns:
            raise _fail(name, f"needs the key {column!r} (memory_id_column): send labels as objects "
                              f"{{\"answer\": ..., {column!r}: ...}}")
    return columns


def split_query(query: str, prompt: str) -> str | None:
    """The response in ``query`` = prompt + response, or None when the prompt cannot be found.

    >>> split_query("<|im_start|>user\\nQ<|im_end|>\\n<|im_start|>assistant\\nA", "<|im_start|>user\\nQ<|im_end|>\\n<|im_start|>assistant\\n")
    'A'
    >>> split_query("ser\\nQ?A", "<|im_start|>user\\nQ?")  # the prompt was truncated from the left
    'A'
    """
    if query.startswith(prompt):
        return query[len(prompt):]
    at = query.find(prompt) if prompt else -1
    if at >= 0:  # something (a BOS text) before the prompt
        return query[at + len(prompt):]
    # left-truncated prompt: the query starts with a tail of the prompt, so the prompt's last
    # characters occur in the query where that tail ends
    m = min(_TAIL_PROBE, len(prompt) - 1)
    while m >= 1:  # a shorter probe for a prompt cut to fewer characters than the probe
        end = prompt[-m:]
        pos, best = query.find(end), None
        while 0 <= pos < len(prompt):
            if prompt.endswith(query[: pos + m]):
                best = pos + m  # the longest such head: the prompt's tail, not a coincidence in the response
            pos = query.find(end, pos + 1)
        if best is not None:
            return query[best:]
        m //= 4
    return None


def strip_markers(text: str, markers: list[str]) -> str:
    """``text`` without any run of ``markers`` at its end (``"A<|im_end|><|endoftext|>"`` -> ``"A"``)."""
    changed = True
    while changed and markers:
        changed = False
        for marker in markers:
            if text.endswith(marker):
                text = text[: -len(marker)]
                changed = True
    return text


def question_of(prompt: Any, regex: re.Pattern | None) -> str:
    """The question a prompt asks (see the module docstring)."""
    if not isinstance(prompt, str):
        users = [m["content"] for m in prompt if m.get("role") == "user"]
        return users[-1] if users else prompt[-1]["content"]
    patterns = (regex,) if regex is not None else CHAT_TEMPLATES
    for pattern in patterns:
        matches = list(pattern.finditer(prompt))
        if matches:
            m = matches[-1]
            text = m.group("question") if "question" in pattern.groupindex else (m.group(1) if pattern.groups else m.group(0))
            return text.strip()
    return prompt


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body (400 naming ``body`` otherwise)."""
    try:
        data = json.loads(body.decode("utf-8")) if body else None
    except UnicodeDecodeError as exc:
        raise _fail("body", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise _fail("body", f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise _fail("body", f"must be a JSON object, got {_type_name(data) if data is not None else 'nothing'}")
    return data


def parse_reward_request(body: bytes, options: ProtocolOptions) -> RewardRequest:
    """Validate a ``/get_reward`` body completely and return its samples (or raise RequestError)."""
    data = parse_body(body)
    prompts = _list_field(data, "prompts", True)
    labels = _list_field(data, "labels", True)
    responses = _list_field(data, "responses", False)
    queries = _list_field(data, "query", responses is None)
    questions = _list_field(data, "questions", False)
    ids = _list_field(data, "completion_ids", False)
    n = len(prompts)
    if n == 0:
        raise _fail("prompts", "is empty: send at least one sample")
    if n > options.max_samples:
        raise _fail("prompts", f"{n} samples in one request; this server takes at most {options.max_samples} "
                               "(--max-samples)", 413)
    for name, values in (("labels", labels), ("query", queries), ("responses", responses),
                         ("questions", questions), ("completion_ids", ids)):
        if values is not None and len(values) != n:
            raise _fail(name, f"has {len(values)} entries but prompts has {n}")
    step = data.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        raise _fail("step", f"must be an integer >= 0, got {step!r:.40}")

    samples = []
    for i in range(n):
        prompt = _prompt(prompts[i], f"prompts[{i}]")
        if responses is not None:
            if not isinstance(responses[i], str):
                raise _fail(f"responses[{i}]", f"must be a string, got {_type_name(responses[i])}")
            response = responses[i]
        else:
            if not isinstance(queries[i], str):
                raise _fail(f"query[{i}]", f"must be a string, got {_type_name(queries[i])}")
            if not isinstance(prompt, str):
                raise _fail(f"query[{i}]", "prompts[i] is a list of chat messages, so it cannot be cut from the "
                                           "query: send 'responses' instead of 'query'")
            response = split_query(queries[i], prompt)
            if response is None:
                raise _fail(f"query[{i}]", "does not contain prompts[i] (the query must be the prompt followed "
                                           "by the response)")
        response = strip_markers(response, options.strip)
        columns = _label(labels[i], f"labels[{i}]", options.id_columns)
        if questions is not None:
            if not isinstance(questions[i], str) or not questions[i]:
                raise _fail(f"questions[{i}]", f"must be a non-empty string, got {_type_name(questions[i])}")
            columns["question"] = questions[i]
        elif "question" not in columns:
            columns["question"] = question_of(prompt, options._regex)
        token_ids = None
        if ids is not None:
            token_ids = ids[i]
            if not isinstance(token_ids, list) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                          for t in token_ids):
                raise _fail(f"completion_ids[{i}]", "must be a list of integer token ids")
        samples.append(Sample(prompt, response, columns, token_ids))
    return RewardRequest(samples, step)


def parse_commit_request(body: bytes) -> int | None:
    """``POST /commit``: an optional ``{"step": n}`` (the step that now opens); an empty body is fine."""
    if not body.strip():
        return None
    data = parse_body(body)
    step = data.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        raise _fail("step", f"must be an integer >= 0, got {step!r:.40}")
    return step
