"""Math datasets for training and evaluation: the dataset registry, prompts, loaders.

Every loader returns plain rows ``{"question": str, "answer": str}`` (the answer is what the
shared checker in :mod:`memrl.rewards.outcome` compares with: a GSM8K solution with ``####``, a
plain number, or a LaTeX answer). :func:`to_training_rows` adds the chat ``prompt`` TRL needs.

A dataset is either a name in :data:`DATASETS` (each entry says where each split comes from,
which columns hold the question and the answer, and which checker grades it; a new benchmark is
one entry there, and the CLI choices, help texts and loaders all read the registry) or a path to
a local ``.jsonl``/``.json``/``.csv``/``.parquet`` file with a question and an answer column
(names configurable; numeric unless ``checker="math"``).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memrl.names import CHECKERS
from memrl.names import PROMPT_STYLES as STYLES
from memrl.paths import data_dir, resolve_data_path
from memrl.tasks.arith import generate_problems
from memrl.tasks.files import TABLE_SUFFIXES as LOCAL_SUFFIXES
from memrl.tasks.files import read_table

logger = logging.getLogger(__name__)

# Splits a local data file may be asked for (the file is the whole dataset whichever is named).
FILE_SPLITS = ("train", "test")

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
        name: a name in :data:`DATASETS` or a local file path.
        split: a split the registered dataset declares (``train``/``test``); for a local file
            ``train`` or ``test``, both meaning the whole file.
        question_column: column with the question (local files; registered datasets declare theirs).
        answer_column: column with the gold answer (local files; registered datasets declare theirs).
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


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class SharedOrHubSplit:
    """One split read from a file under the shared data folder when it is there, else from a
    Hugging Face hub dataset.

    Args:
        shared_file: path under :func:`memrl.paths.data_dir` (``gsm8k/test.jsonl``); None: hub only.
        hub_id: hub dataset id; None: the shared file only.
        hub_split: the hub's name of this split (None: the same name); ``HuggingFaceH4/aime_2024``
            ships its test problems as ``train``.
        hub_config: the hub dataset's configuration (``openai/gsm8k``: ``main``).
    """

    shared_file: str | None = None
    hub_id: str | None = None
    hub_split: str | None = None
    hub_config: str | None = None

    def read(self, split: str) -> tuple[list[dict[str, Any]], str]:
        """The split's raw rows and where they came from (a file path or the hub id)."""
        local = _shared(*Path(self.shared_file).parts) if self.shared_file else None
        if local is not None:
            return read_table(local), str(local)
        if self.hub_id is None:
            root = data_dir(required=False)
            raise FileNotFoundError(f"{self.shared_file} not found under the shared data folder "
                                    f"({root or 'none found'}); set MEMRL_DATA_DIR to the folder that holds it")
        return _hub_rows(self.hub_id, self.hub_split or split, self.hub_config), self.hub_id


@dataclass(frozen=True)
class GeneratedSplit:
    """One split of a procedural dataset: ``generate(spec, n)`` makes the rows, ``n`` being
    ``spec.limit`` or ``default_size``. Generated rows are already clean, so they skip the row
    checks, the shuffle and the limit a read split goes through."""

    generate: Callable[[DatasetSpec, int], list[dict[str, str]]]
    default_size: int


@dataclass(frozen=True)
class MathDataset:
    """A registered math dataset: where each split comes from, its columns and its checker.

    Args:
        description: one line on what it is (docs, ``--help``).
        splits: split name -> where that split comes from; asking for another split is an error
            that names these.
        checker: ``numeric`` (GSM8K-style numbers) or ``math`` (math-verify, LaTeX answers).
        question_column: the raw rows' question column.
        answer_column: the raw rows' gold answer column (the checker finds the answer in it).
        random_subset: training takes a seeded random subset, not the first ``dataset_limit``
            rows (NuminaMath-TIR: the paper's 2,000 problems of 72k).
    """

    description: str
    splits: Mapping[str, SharedOrHubSplit | GeneratedSplit]
    checker: str = "numeric"
    question_column: str = "question"
    answer_column: str = "answer"
    random_subset: bool = False

    def __post_init__(self) -> None:
        if self.checker not in CHECKERS:
            raise ValueError(f"checker must be one of {CHECKERS}, got {self.checker!r}")
        if not self.splits:
            raise ValueError("a dataset needs at least one split")

    @property
    def generated(self) -> bool:
        """Are the rows made by a generator (their count an option) rather than read?"""
        return any(isinstance(source, GeneratedSplit) for source in self.splits.values())


def _arith_rows(spec: DatasetSpec, n: int) -> list[dict[str, str]]:
    return generate_problems(n, level=spec.arith_level, seed=spec.seed, split=spec.split)


DATASETS: dict[str, MathDataset] = {
    "gsm8k": MathDataset(
        "GSM8K grade-school word problems (answers end with '#### <number>')",
        {split: SharedOrHubSplit(f"gsm8k/{split}.jsonl", "openai/gsm8k", hub_config="main")
         for split in ("train", "test")},
    ),
    "numina-tir": MathDataset(
        "NuminaMath-TIR competition problems (hub only; the answer is the \\boxed{} of the solution)",
        {split: SharedOrHubSplit(hub_id="AI-MO/NuminaMath-TIR") for split in ("train", "test")},
        checker="math", question_column="problem", answer_column="solution", random_subset=True,
    ),
    "math500": MathDataset(
        "MATH-500 test problems",
        {"test": SharedOrHubSplit("math_eval/math500/test.jsonl", "HuggingFaceH4/MATH-500")},
        checker="math", question_column="problem",
    ),
    "aime24": MathDataset(
        "AIME 2024 problems (30)",
        {"test": SharedOrHubSplit("math_eval/aime24/test.jsonl", "HuggingFaceH4/aime_2024", hub_split="train")},
        checker="math", question_column="problem",
    ),
    "arith": MathDataset(
        "procedural arithmetic word problems (memrl.tasks.arith; levels 1-4, train/test disjoint)",
        {"train": GeneratedSplit(_arith_rows, 1000), "test": GeneratedSplit(_arith_rows, 200)},
    ),
}


def dataset_names(split: str | None = None) -> list[str]:
    """The registered datasets (those that have ``split`` when given), in registry order."""
    return [name for name, entry in DATASETS.items() if split is None or split in entry.splits]


def default_checker(name: str) -> str:
    """The registered dataset's checker; ``numeric`` for a local file."""
    return DATASETS[name].checker if name in DATASETS else "numeric"


def trains_on_random_subset(name: str) -> bool:
    """Does training take a seeded random subset of ``name`` by default (see :class:`MathDataset`)?"""
    return name in DATASETS and DATASETS[name].random_subset


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

    Raises ``ValueError`` for an unknown name (listing the registered ones), a split the dataset
    does not have, or malformed rows (unless skipped).
    """
    name = spec.name
    entry = DATASETS.get(name)  # a registered name first; anything else must be a data file
    if entry is None and Path(name).suffix.lower() not in LOCAL_SUFFIXES:
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)} or a path to a "
                         f"{'/'.join(LOCAL_SUFFIXES)} file")
    splits = tuple(entry.splits) if entry else FILE_SPLITS
    if spec.split not in splits:
        raise ValueError(f"{name} has no split {spec.split!r}; its splits: {', '.join(splits)}")
    checker = spec.checker or default_checker(name)
    if checker not in CHECKERS:
        raise ValueError(f"checker must be 'numeric' or 'math', got {checker!r}")
    if entry is None:
        path = resolve_data_path(Path(name))
        raw, source = read_table(path), str(path)
        qcol, acol = spec.question_column, spec.answer_column
    else:
        split_source = entry.splits[spec.split]
        if isinstance(split_source, GeneratedSplit):
            return split_source.generate(spec, spec.limit or split_source.default_size), checker
        raw, source = split_source.read(spec.split)
        qcol, acol = entry.question_column, entry.answer_column
    rows, skipped = normalize_rows(raw, source, qcol, acol, spec.skip_bad_rows)
    if spec.shuffle:
        random.Random(spec.seed).shuffle(rows)
    if spec.limit is not None:
        rows = rows[: spec.limit]
    if not rows:
        raise ValueError(f"{source}: no usable rows")
    logger.info("loaded %d rows from %s (%d skipped)", len(rows), source, skipped)
    return rows, checker
