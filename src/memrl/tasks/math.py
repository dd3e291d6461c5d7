"""Math datasets for training and evaluation: prompts, loaders and per-dataset answer checkers.

Every loader returns plain rows ``{"question": str, "answer": str}`` (the answer is what the
shared checker in :mod:`memrl.rewards.outcome` compares with: a GSM8K solution with ``####``, a
plain number, or a LaTeX answer). :func:`to_training_rows` adds the chat ``prompt`` TRL needs.

Datasets (``name`` → source, answer checker):

* ``gsm8k``: ``../shared/data/gsm8k/<split>.jsonl`` when present, else hub ``openai/gsm8k``; numeric.
* ``numina-tir``: hub ``AI-MO/NuminaMath-TIR``, a seeded random subset (the paper's 2,000); math-verify.
* ``math500``: ``../shared/data/math_eval/math500/test.jsonl`` else hub ``HuggingFaceH4/MATH-500``; math-verify.
* ``aime24``: ``../shared/data/math_eval/aime24/test.jsonl`` else hub ``HuggingFaceH4/aime_2024``; math-verify.
* ``arith``: the procedural task in :mod:`memrl.tasks.arith`; numeric.
* a path to a local ``.jsonl``/``.json``/``.csv``/``.parquet`` file with a question and an answer
  column (names configurable); numeric unless ``checker="math"``.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memrl.names import CHECKERS
from memrl.names import PROMPT_STYLES as STYLES
from memrl.paths import data_dir, resolve_data_path
from memrl.tasks.files import TABLE_SUFFIXES as LOCAL_SUFFIXES
from memrl.tasks.files import read_table

logger = logging.getLogger(__name__)

BUILTIN = ("gsm8k", "numina-tir", "math500", "aime24", "arith")

# System prompts. "think" is the paper's, "reasoning" the reference code's (GSM8K). Both spell
# out the exact layout the format rewards check (tags on their own lines).
SYSTEM_PROMPTS = {
    "think": (
        "A conversation between User and Assistant. The user asks a question, and the Assistant "
        "solves it. The Assistant first thinks about the reasoning process in the mind and then "
        "provides the user with the answer. Respond in the following format:\n"
        "<think>\n...\n</think>\n<answer>\n...\n</answer>"
    ),
    "reasoning": (
        "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"
    ),
}


@dataclass
class DatasetSpec:
    """Where a dataset comes from and how its answers are checked.

    Args:
        name: a built-in name (``gsm8k``, ``numina-tir``, ``math500``, ``aime24``, ``arith``) or a
            local file path.
        split: ``train`` or ``test`` (built-ins); ignored for local files.
        question_column: column with the question (local files; auto for built-ins).
        answer_column: column with the gold answer (local files; auto for built-ins).
        limit: keep at most this many rows (after the seeded shuffle when ``shuffle``).
        seed: seed of the subset / shuffle.
        shuffle: shuffle before ``limit`` (a seeded random subset); else the first rows.
        skip_bad_rows: skip malformed rows and count them instead of raising.
        checker: ``numeric``/``math``; ``None`` picks the dataset's default.
    """

    name: str = field(default="arith", metadata={"help": "Dataset name or local file path."})
    split: str = field(default="train", metadata={"help": "train or test."})
    question_column: str = field(default="question", metadata={"help": "Question column of a local file."})
    answer_column: str = field(default="answer", metadata={"help": "Answer column of a local file."})
    limit: int | None = field(default=None, metadata={"help": "Most rows kept."})
    seed: int = field(default=0, metadata={"help": "Seed for subsets and arith generation."})
    shuffle: bool = field(default=False, metadata={"help": "Seeded random subset before limit."})
    skip_bad_rows: bool = field(default=False, metadata={"help": "Skip (and count) malformed rows."})
    checker: str | None = field(default=None, metadata={"help": "numeric or math; default per dataset."})
    arith_level: int = field(default=1, metadata={"help": "arith difficulty 1..4."})


def default_checker(name: str) -> str:
    """``numeric`` for GSM8K-style data and arith, ``math`` (math-verify) for MATH-like sets."""
    return "math" if name in ("numina-tir", "math500", "aime24") else "numeric"


# ----------------------------------------------------------------------------- prompts
def system_prompt(style: str) -> str:
    if style not in SYSTEM_PROMPTS:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {STYLES}")
    return SYSTEM_PROMPTS[style]


def gold_final(answer: str) -> str:
    """The short final answer of a gold field (the part after ``####`` for GSM8K solutions)."""
    text = str(answer)
    return text.split("####")[-1].strip().replace(",", "") if "####" in text else text.strip()


def exemplar_completion(answer: str, style: str) -> str:
    """A worked exemplar in the prompt's format: GSM8K's solution steps (calculator annotations
    removed) as the reasoning, its final number as the answer."""
    text = str(answer)
    if "####" in text:
        steps = re.sub(r"<<[^>]*>>", "", text.split("####")[0]).strip()
    else:
        steps = f"The answer is {text.strip()}."
    return f"<{style}>\n{steps}\n</{style}>\n<answer>\n{gold_final(text)}\n</answer>"


def make_messages(question: str, style: str = "think",
                  exemplars: Sequence[dict[str, str]] = ()) -> list[dict[str, str]]:
    """Chat messages for one question: system prompt, optional k-shot exemplars as earlier
    user/assistant turns, then the question.

    Args:
        question: the question text.
        style: ``think`` or ``reasoning``.
        exemplars: rows with ``question`` and ``answer`` shown as worked examples.
    """
    messages = [{"role": "system", "content": system_prompt(style)}]
    for ex in exemplars:
        messages.append({"role": "user", "content": ex["question"]})
        messages.append({"role": "assistant", "content": exemplar_completion(ex["answer"], style)})
    messages.append({"role": "user", "content": question})
    return messages


def to_training_rows(rows: Sequence[dict[str, Any]], style: str = "think", shots: int = 0,
                     exemplar_pool: Sequence[dict[str, Any]] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Add a chat ``prompt`` to each row (TRL's conversational format).

    With ``shots > 0`` each prompt gets ``shots`` worked exemplars drawn (seeded) from
    ``exemplar_pool`` (default: the rows themselves), never the row's own question — the paper's
    one-shot Llama setting uses "a random worked exemplar".
    """
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    pool = list(exemplar_pool if exemplar_pool is not None else rows)
    if shots and len(pool) <= shots:
        raise ValueError(f"shots={shots} needs more than {shots} exemplar rows, got {len(pool)}")
    rng = random.Random(seed)
    if shots:
        # distinct pool rows per question: a row can only draw exemplars with another question,
        # and with too few of those the draw below would never finish
        distinct = {json.dumps(ex, sort_keys=True, default=str): ex["question"] for ex in pool}
        per_question = Counter(distinct.values())
    out = []
    for i, row in enumerate(rows):
        available = len(distinct) - per_question.get(row["question"], 0) if shots else 0
        if available < shots:
            raise ValueError(f"row {i}: shots={shots} needs {shots} distinct exemplars with another question; "
                             f"the pool has {available}")
        exemplars: list[dict[str, Any]] = []
        while len(exemplars) < shots:
            ex = pool[rng.randrange(len(pool))]
            if ex["question"] != row["question"] and ex not in exemplars:
                exemplars.append(ex)
        out.append({**row, "prompt": make_messages(row["question"], style, exemplars)})
    return out


# ----------------------------------------------------------------------------- loaders
def normalize_rows(raw: Sequence[dict[str, Any]], source: str, question_column: str, answer_column: str,
                   skip_bad_rows: bool = False) -> tuple[list[dict[str, str]], int]:
    """Map raw rows to ``{"question", "answer"}``, validating every row.

    Returns ``(rows, skipped)``. Without ``skip_bad_rows`` all problems are collected and one
    ``ValueError`` lists the first few, each as ``<source> row <n>: ...`` (1-based rows).
    """
    rows: list[dict[str, str]] = []
    problems: list[str] = []
    for i, row in enumerate(raw, 1):
        if not isinstance(row, dict):
            problems.append(f"{source} row {i}: not an object")
            continue
        missing = [c for c in (question_column, answer_column) if c not in row]
        if missing:
            problems.append(f"{source} row {i}: field {missing[0]!r} missing (found: {', '.join(map(str, row))})")
            continue
        q, a = row[question_column], row[answer_column]
        bad = [c for c, v in ((question_column, q), (answer_column, a)) if v is None or not str(v).strip()
               or (isinstance(v, float) and v != v)]
        if bad:
            problems.append(f"{source} row {i}: field {bad[0]!r} is empty")
            continue
        rows.append({"question": str(q).strip(), "answer": str(a).strip()})
    if problems and not skip_bad_rows:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError("; ".join(problems[:5]) + more + ". Fix the rows or pass --skip-bad-rows.")
    if problems:
        logger.warning("%s: skipped %d malformed row(s), e.g. %s", source, len(problems), problems[0])
    return rows, len(problems)


def _shared(*parts: str) -> Path | None:
    root = data_dir(required=False)
    if root is None:
        return None
    p = root.joinpath(*parts)
    return p if p.is_file() else None


def _hub_rows(hub_id: str, split: str, config: str | None = None) -> list[dict[str, Any]]:
    try:
        from datasets import load_dataset

        ds = load_dataset(hub_id, config, split=split) if config else load_dataset(hub_id, split=split)
    except Exception as exc:  # network or missing dataset: say what to do instead
        raise RuntimeError(
            f"could not load {hub_id} ({split}) from the hub ({type(exc).__name__}: {str(exc)[:200]}). "
            f"Point --dataset at a local JSONL/CSV/parquet file instead, or set MEMRL_DATA_DIR."
        ) from exc
    return [dict(r) for r in ds]


def load_rows(spec: DatasetSpec) -> tuple[list[dict[str, str]], str]:
    """Load ``spec`` as ``(rows, checker)``; rows are ``{"question", "answer"}`` dicts.

    Raises ``ValueError`` for an unknown name, a bad split, or malformed rows (unless skipped).
    """
    name = spec.name
    if spec.split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {spec.split!r}")
    checker = spec.checker or default_checker(name)
    if checker not in CHECKERS:
        raise ValueError(f"checker must be 'numeric' or 'math', got {checker!r}")
    if name == "arith":
        from memrl.tasks.arith import generate_problems

        n = spec.limit or (1000 if spec.split == "train" else 200)
        return generate_problems(n, level=spec.arith_level, seed=spec.seed, split=spec.split), checker
    qcol, acol = "question", "answer"
    if name == "gsm8k":
        local = _shared("gsm8k", f"{spec.split}.jsonl")
        raw, source = (read_table(local), str(local)) if local else (_hub_rows("openai/gsm8k", spec.split, "main"), "openai/gsm8k")
    elif name == "numina-tir":
        raw, source = _hub_rows("AI-MO/NuminaMath-TIR", spec.split), "AI-MO/NuminaMath-TIR"
        qcol, acol = "problem", "solution"  # math-verify finds the \boxed{} answer in the solution
    elif name in ("math500", "aime24"):
        local = _shared("math_eval", name, "test.jsonl")
        hub = {"math500": "HuggingFaceH4/MATH-500", "aime24": "HuggingFaceH4/aime_2024"}[name]
        raw, source = (read_table(local), str(local)) if local else (_hub_rows(hub, "train" if name == "aime24" else "test"), hub)
        qcol, acol = "problem", "answer"
    else:
        path = Path(name)
        if path.suffix.lower() not in LOCAL_SUFFIXES:
            raise ValueError(f"unknown dataset {name!r}: use one of {BUILTIN} or a path to a "
                             f"{'/'.join(LOCAL_SUFFIXES)} file")
        path = resolve_data_path(path)
        raw, source = read_table(path), str(path)
        qcol, acol = spec.question_column, spec.answer_column
    rows, skipped = normalize_rows(raw, source, qcol, acol, spec.skip_bad_rows)
    if spec.shuffle:
        random.Random(spec.seed).shuffle(rows)
    if spec.limit is not None:
        rows = rows[: spec.limit]
    if not rows:
        raise ValueError(f"{source}: no usable rows")
    logger.info("loaded %d rows from %s (%d skipped)", len(rows), source, skipped)
    return rows, checker
