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
     "step": 12,                               # optional: the client's step (see the engine)
     "eval": true}                             # optional: score read-only (evaluation samples)

The response of a sample is ``query[i]`` with ``prompts[i]`` removed from its front (OpenRLHF
decodes prompt and response tokens together, so the prompt is a prefix of the query; a prompt
truncated from the left, as OpenRLHF does for long prompts, is matched by its longest tail that
starts the query), then the end-of-text markers of ``strip`` removed from its end (OpenRLHF
decodes with ``skip_special_tokens=False``, TRL's completions have none).

The question a sample is keyed by: ``questions[i]``, else ``labels[i]["question"]``, else taken
from the prompt: the last user message of a chat prompt; for a string prompt the first group of
``question_regex``, by default the last user turn of a ChatML, Llama 3, Gemma or DeepSeek chat
template, and the whole prompt when none matches.

Evaluation samples are scored read-only (nothing joins a step): a request with ``"eval": true``,
one sent to ``/get_reward_eval``, or one whose label objects all carry ``"eval": true`` (the way
an OpenRLHF evaluation dataset can say so, since OpenRLHF posts evaluation samples to the training
URL with the same three fields).

Bounds, so that no body can cost more than its size suggests: JSON nested at most
:data:`MAX_NESTING` levels and integers of at most :data:`MAX_INT_DIGITS` digits (checked before
and while parsing, so neither reaches Python's recursion or integer-conversion limits), every text
at most ``max_text_chars`` characters (413), no lone surrogate (``"\\ud800"`` is valid JSON but not
text: the encoder and the snapshot files could not take it).

Every error is a :class:`RequestError` naming the field (``labels[3]``) with HTTP status 400, or
413 for a request over the sample limit or a text over the length limit.
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
# a request is a flat record (the deepest legal one, a chat prompt, is 4 levels); 64 leaves room
# for extra fields and stays far below the recursion limit of Python's JSON parser (about 1,000)
MAX_NESTING = 64
# gold answers and steps are short numbers; Python refuses to convert integers over 4,300 digits
# (a ValueError, not a JSON error), and converting long ones costs quadratic time
MAX_INT_DIGITS = 100
# the sentence encoder reads at most 256 word pieces (about 1,000 characters of English); the
# rewards read the whole completion, so texts are not cut, but one text may be at most 256
# characters per word piece: room for any real prompt + completion (a 16k-token completion is
# about 64k characters), and a bound on what one request can cost the single worker
DEFAULT_MAX_TEXT_CHARS = 256 * 256
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


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
    eval: bool = False  # read-only: scored against the committed state, never joins a step


@dataclass
class ProtocolOptions:
    max_samples: int = 4096
    strip: list[str] = field(default_factory=list)
    question_regex: str | None = None
    id_columns: tuple[str, ...] = ()  # columns every sample must carry (labels[i][column])
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS

    def __post_init__(self) -> None:
        self._regex = re.compile(self.question_regex, re.S) if self.question_regex else None


def _fail(name: str, message: str, status: int = 400) -> RequestError:
    return RequestError(status, name, message)


class LongInteger:
    """Stands for an integer literal of more than :data:`MAX_INT_DIGITS` digits (it is never
    converted), so that the field holding it is refused by name like any other wrong type."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits>"


def _parse_int(literal: str) -> int | LongInteger:
    digits = len(literal) - literal.startswith("-")
    return int(literal) if digits <= MAX_INT_DIGITS else LongInteger(digits)


def _type_name(value: Any) -> str:
    if isinstance(value, LongInteger):
        return f"an integer of {value.digits} digits (this server reads at most {MAX_INT_DIGITS})"
    return "null" if value is None else type(value).__name__


def nesting_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``body`` (brackets inside strings are
    skipped), or, for a body with at most :data:`MAX_NESTING` brackets in all, that count (it
    cannot nest deeper, and counting is all the common case costs)."""
    opens = body.count(b"[") + body.count(b"{")
    if opens <= MAX_NESTING:  # no deeper than the number of brackets, strings included
        return opens
    import numpy as np  # here: memrl.serve.client (standard library only) imports this module's config

    chars = np.frombuffer(_JSON_STRING.sub(b"", body), np.uint8)
    steps = (chars == ord("[")).astype(np.int32) + (chars == ord("{")) - (chars == ord("]")) - (chars == ord("}"))
    return int(np.cumsum(steps).max(initial=0))


def _text(value: str, name: str, options: ProtocolOptions) -> str:
    """``value`` if it is text this server takes: not over the length limit, no lone surrogate."""
    if len(value) > options.max_text_chars:
        raise _fail(name, f"{len(value)} characters; this server takes at most {options.max_text_chars} per text "
                          "(--max-text-chars)", 413)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(name, f"holds a lone surrogate (U+{ord(value[exc.start]):04X} at character {exc.start}), "
                          "which is not text: send UTF-8 text (a JSON \\ud800-style escape must be one half of "
                          "a pair)") from None
    return value


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


def _scalar_text(value: Any, name: str, options: ProtocolOptions) -> str:
    if isinstance(value, str):
        return _text(value, name, options)
    if _is_number(value):
        if isinstance(value, float) and value != value:
            raise _fail(name, "must not be NaN")
        return str(value)
    raise _fail(name, f"must be a string or a number, got {_type_name(value)}")


def _prompt(value: Any, name: str, options: ProtocolOptions) -> Any:
    if isinstance(value, str):
        return _text(value, name, options)
    if isinstance(value, list) and value:
        for j, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str) \
                    or not isinstance(message.get("role", ""), str):
                raise _fail(f"{name}[{j}]", "a chat message must be an object with string 'role' and 'content'")
            for key, part in message.items():  # every text a reward or the sort key may read
                _text(key, f"{name}[{j}]", options)
                if isinstance(part, str):
                    _text(part, f"{name}[{j}].{key}", options)
        return value
    raise _fail(name, f"must be a string or a non-empty list of chat messages, got {_type_name(value)}")


def _label(value: Any, name: str, options: ProtocolOptions) -> tuple[dict[str, Any], bool]:
    """The dataset columns of one label, and whether it marks an evaluation sample."""
    is_eval = False
    if isinstance(value, dict):
        if "answer" not in value:
            raise _fail(name, "an object label needs an 'answer' key (the gold answer)")
        value = dict(value)
        if "eval" in value:
            is_eval = value.pop("eval")
            if not isinstance(is_eval, bool):
                raise _fail(f"{name}.eval", f"must be true or false, got {_type_name(is_eval)}")
        for key in value:
            _text(key, name, options)
        columns = {k: _scalar_text(v, f"{name}.{k}", options) for k, v in value.items()}
    else:
        columns = {"answer": _scalar_text(value, name, options)}
    for column in options.id_columns:
        if column not in columns:
            raise _fail(name, f"needs the key {column!r} (memory_id_column): send labels as objects "
                              f"{{\"answer\": ..., {column!r}: ...}}")
    return columns, is_eval


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
    depth = nesting_depth(body)
    if depth > MAX_NESTING:
        raise _fail("body", f"JSON nested {depth} levels deep; this server reads at most {MAX_NESTING}")
    try:
        data = json.loads(body.decode("utf-8"), parse_int=_parse_int) if body else None
    except UnicodeDecodeError as exc:
        raise _fail("body", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise _fail("body", f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # the bounds above should make these unreachable
        raise _fail("body", f"not readable JSON ({type(exc).__name__}: {str(exc):.200})") from None
    if not isinstance(data, dict):
        raise _fail("body", f"must be a JSON object, got {_type_name(data) if data is not None else 'nothing'}")
    return data


def _step(data: dict[str, Any]) -> int | None:
    step = data.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        got = _type_name(step) if isinstance(step, LongInteger) else repr(step)
        raise _fail("step", f"must be an integer >= 0, got {got:.80}")
    return step


def parse_reward_request(body: bytes, options: ProtocolOptions, *, eval_route: bool = False) -> RewardRequest:
    """Validate a ``/get_reward`` body completely and return its samples (or raise RequestError).
    ``eval_route``: the body came to ``/get_reward_eval`` (read-only, whatever its fields say)."""
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
    step = _step(data)
    flagged = data.get("eval", False)
    if not isinstance(flagged, bool):
        raise _fail("eval", f"must be true or false, got {_type_name(flagged)}")

    samples, marks = [], []
    for i in range(n):
        prompt = _prompt(prompts[i], f"prompts[{i}]", options)
        if responses is not None:
            if not isinstance(responses[i], str):
                raise _fail(f"responses[{i}]", f"must be a string, got {_type_name(responses[i])}")
            response = _text(responses[i], f"responses[{i}]", options)
        else:
            if not isinstance(queries[i], str):
                raise _fail(f"query[{i}]", f"must be a string, got {_type_name(queries[i])}")
            _text(queries[i], f"query[{i}]", options)
            if not isinstance(prompt, str):
                raise _fail(f"query[{i}]", "prompts[i] is a list of chat messages, so it cannot be cut from the "
                                           "query: send 'responses' instead of 'query'")
            response = split_query(queries[i], prompt)
            if response is None:
                raise _fail(f"query[{i}]", "does not contain prompts[i] (the query must be the prompt followed "
                                           "by the response)")
        response = strip_markers(response, options.strip)
        columns, marked = _label(labels[i], f"labels[{i}]", options)
        marks.append(marked)
        if questions is not None:
            if not isinstance(questions[i], str) or not questions[i]:
                raise _fail(f"questions[{i}]", f"must be a non-empty string, got {_type_name(questions[i])}")
            columns["question"] = _text(questions[i], f"questions[{i}]", options)
        elif "question" not in columns:
            columns["question"] = question_of(prompt, options._regex)
        token_ids = None
        if ids is not None:
            token_ids = ids[i]
            if not isinstance(token_ids, list) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                          for t in token_ids):
                raise _fail(f"completion_ids[{i}]", "must be a list of integer token ids")
        samples.append(Sample(prompt, response, columns, token_ids))
    if any(marks) and not all(marks):
        i = marks.index(not marks[0])
        raise _fail(f"labels[{i}]", f"{'marks' if marks[i] else 'does not mark'} an evaluation sample (\"eval\": true) "
                                    f"but labels[0] {'does not' if marks[i] else 'does'}: send evaluation samples in "
                                    "requests of their own")
    return RewardRequest(samples, step, eval=eval_route or flagged or all(marks))


def parse_commit_request(body: bytes) -> int | None:
    """``POST /commit``: an optional ``{"step": n}`` (the step that now opens); an empty body is fine."""
    if not body.strip():
        return None
    return _step(parse_body(body))
