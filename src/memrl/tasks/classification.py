"""Few-shot text classification tasks: the registry, data loading, templates and verbalizers.

Data layouts (read at run time from the shared data folder, ``memrl.paths.data_dir()``):

* **LM-BFF** ``few_shot_classification/lm-bff/k-shot/<Task>/16-<seed>/{train,dev}.*`` plus one
  ``<Task>/test.*`` (the official LM-BFF splits, md5-checked). Preferred where it exists: sst2
  (test = the 872-row GLUE dev set, as in LM-BFF), mr, sst5, subj, trec, and the GLUE pair tasks
  rte, qnli, mrpc and cola.
* **RLPrompt** ``few_shot_classification/rlprompt/16-shot/<task>/16-<seed>/{train,dev}.tsv`` plus
  ``<task>/test.tsv``. Used for agnews (not in LM-BFF) and available for every task under the
  ``-rlprompt`` suffix (``sst2-rlprompt`` tests on the 1821-row SST-2 test set).
* **SuperGLUE** ``superglue_nli/{cb,rte}/{train,val}.jsonl``: ``cb`` and ``rte-superglue``; the
  16-shot train/dev splits are seeded samples of 16 examples per class from ``train.jsonl``
  (there is no official k-shot split) and the test set is ``val.jsonl``.
* **Local files** (:func:`load_local_task`): CSV/TSV/JSONL with text and label columns.

Prompt format: plain text, not the chat template. A demonstration is rendered as
``"Review: <text>\\nSentiment: great\\n\\n"`` and a query as ``"Review: <text>\\nSentiment:"``;
labels are scored as the continuation ``" great"``. The verbalizers are short common English
words that SmolLM2-135M-Instruct scores sensibly; all are configurable per task.
"""

from __future__ import annotations

import csv
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from memrl.paths import data_dir, resolve_data_path
from memrl.tasks.fewshot import Example, FewShotTask, PromptTemplate
from memrl.tasks.files import iter_jsonl, read_table, require_fields

logger = logging.getLogger(__name__)

SEEDS = (13, 21, 42, 87, 100)


# ---------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class TaskSpec:
    """Where a registered task lives and how it is prompted."""

    layout: str  # "lm-bff" | "rlprompt" | "superglue"
    folder: str
    ext: str  # "tsv-header" | "csv-label-first" | "glue-pair" | "cola" | "mrpc" | "jsonl-nli"
    label_names: tuple[str, ...]
    verbalizer: tuple[str, ...]
    template: PromptTemplate
    text_columns: tuple[str, ...] = ("sentence",)
    notes: str = ""


_SENTIMENT = PromptTemplate(input="Review: {text}\nSentiment:")
_NLI = PromptTemplate(input="{text}\nQuestion: {text_b} True or False?\nAnswer:")

TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec("lm-bff", "SST-2", "tsv-header", ("0", "1"), ("terrible", "great"), _SENTIMENT),
    "mr": TaskSpec("lm-bff", "mr", "csv-label-first", ("0", "1"), ("terrible", "great"), _SENTIMENT),
    "sst5": TaskSpec(
        "lm-bff", "sst-5", "csv-label-first", ("0", "1", "2", "3", "4"),
        ("terrible", "bad", "okay", "good", "great"), _SENTIMENT,
    ),
    "subj": TaskSpec(
        "lm-bff", "subj", "csv-label-first", ("0", "1"), ("subjective", "objective"),
        PromptTemplate(input="Text: {text}\nThis text is:"),
    ),
    "trec": TaskSpec(
        "lm-bff", "trec", "csv-label-first", ("0", "1", "2", "3", "4", "5"),
        ("description", "entity", "abbreviation", "person", "location", "number"),
        PromptTemplate(input="Question: {text}\nAnswer type:"),
        notes="LM-BFF label order: Description, Entity, Expression (abbreviation), Human, Location, Number",
    ),
    "rte": TaskSpec(
        "lm-bff", "RTE", "glue-pair", ("entailment", "not_entailment"), ("True", "False"), _NLI,
        text_columns=("sentence1", "sentence2"),
    ),
    "qnli": TaskSpec(
        "lm-bff", "QNLI", "glue-pair", ("entailment", "not_entailment"), ("Yes", "No"),
        PromptTemplate(input="Question: {text}\nSentence: {text_b}\nDoes the sentence answer the question?"),
        text_columns=("question", "sentence"),
    ),
    "mrpc": TaskSpec(
        "lm-bff", "MRPC", "mrpc", ("0", "1"), ("No", "Yes"),
        PromptTemplate(input="{text}\n{text_b}\nSame meaning?"),
    ),
    "cola": TaskSpec(
        "lm-bff", "CoLA", "cola", ("0", "1"), ("No", "Yes"),
        PromptTemplate(input="Sentence: {text}\nGrammatical?"),
    ),
    "agnews": TaskSpec(
        "rlprompt", "agnews", "tsv-header", ("0", "1", "2", "3"),
        ("World", "Sports", "Business", "Technology"),
        PromptTemplate(input="Article: {text}\nTopic:"), text_columns=("text", "sentence"),
    ),
    "cb": TaskSpec(
        "superglue", "cb", "jsonl-nli", ("entailment", "contradiction", "neutral"),
        ("True", "False", "Neither"), _NLI,
    ),
    "rte-superglue": TaskSpec(
        "superglue", "rte", "jsonl-nli", ("entailment", "not_entailment"), ("True", "False"), _NLI,
    ),
}
for _name, _folder in {"sst2": "sst-2", "mr": "mr", "sst5": "sst-5", "subj": "subj", "trec": "trec"}.items():
    _base = TASKS[_name]
    TASKS[f"{_name}-rlprompt"] = replace(
        _base, layout="rlprompt", folder=_folder, ext="tsv-header", text_columns=("sentence", "text")
    )


def task_names() -> list[str]:
    return sorted(TASKS)


def load_task(
    name: str,
    seed: int = 13,
    *,
    template: PromptTemplate | None = None,
    verbalizer: Sequence[str] | None = None,
) -> FewShotTask:
    """Load a registered classification task (or a multiple-choice one, see
    :mod:`memrl.tasks.multiple_choice`) with its 16-shot split for ``seed``.

    Args:
        name: a name from :func:`task_names` (or :data:`memrl.tasks.multiple_choice.MC_TASKS`).
        seed: data seed, one of 13, 21, 42, 87, 100.
        template, verbalizer: override the task's prompt.

    Raises:
        ValueError: unknown task or seed (listing the valid ones), or a malformed data row.
        FileNotFoundError: the shared data folder or a split file is missing.
    """
    from memrl.tasks import multiple_choice

    if name in multiple_choice.MC_TASKS:
        task = multiple_choice.load_mc_task(name, seed)
        return task.with_prompt(template, None) if template else task
    if name not in TASKS:
        valid = sorted(TASKS) + sorted(multiple_choice.MC_TASKS)
        raise ValueError(f"unknown task {name!r}; choose one of {valid}")
    if seed not in SEEDS:
        raise ValueError(f"unknown data seed {seed}; the 16-shot splits exist for seeds {list(SEEDS)}")
    spec = TASKS[name]
    if spec.layout == "superglue":
        train, dev, test, source = _load_superglue(spec, seed)
    else:
        root = data_dir() / "few_shot_classification"
        root = root / ("lm-bff/k-shot" if spec.layout == "lm-bff" else "rlprompt/16-shot") / spec.folder
        suffix = {"csv-label-first": ".csv"}.get(spec.ext, ".tsv")
        seed_dir = root / f"16-{seed}"
        train = _read_split(seed_dir / f"train{suffix}", spec)
        dev_name = "dev_matched" if (seed_dir / "dev_matched.tsv").exists() else "dev"
        dev = _read_split(seed_dir / f"{dev_name}{suffix}", spec)
        test = _read_split(root / f"test{suffix}", spec)
        source = f"{spec.layout}:{root}"
    task = FewShotTask(
        name=name, seed=seed, source=source, train=train, dev=dev, test=test,
        label_names=spec.label_names, template=spec.template, verbalizer=spec.verbalizer,
    )
    return task.with_prompt(template, verbalizer)


# ---------------------------------------------------------------------------- readers
def _label_index(raw: str, spec_labels: Sequence[str], path: Path, row: int, field_name: str) -> int:
    raw = str(raw).strip()
    if raw not in spec_labels:
        raise ValueError(
            f"{path}, row {row}: unknown label {raw!r} in field {field_name!r}; "
            f"expected one of {list(spec_labels)}"
        )
    return list(spec_labels).index(raw)


def _read_split(path: Path, spec: TaskSpec) -> list[Example]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; is the shared data folder complete? (set MEMRL_DATA_DIR)"
        )
    out: list[Example] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        if spec.ext == "csv-label-first":
            for i, rec in enumerate(csv.reader(fh), start=1):
                if len(rec) < 2:
                    raise ValueError(f"{path}, row {i}: expected 'label,sentence', got {rec!r}")
                label = _label_index(rec[0], spec.label_names, path, i, "label")
                out.append(_example(",".join(rec[1:]), label, None, path, i))
            return out
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        if spec.ext == "cola":  # GLUE CoLA: no header; source, label, original label, sentence
            for i, rec in enumerate(reader, start=1):
                if len(rec) < 4:
                    raise ValueError(f"{path}, row {i}: expected 4 CoLA columns, got {len(rec)}")
                out.append(_example(rec[3], _label_index(rec[1], spec.label_names, path, i, "label"), None, path, i))
            return out
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty (no header row)")
        header = [h.strip() for h in header]
        if spec.ext == "mrpc":  # Quality, #1 ID, #2 ID, #1 String, #2 String
            for i, rec in enumerate(reader, start=2):
                if len(rec) < 5:
                    raise ValueError(f"{path}, row {i}: expected 5 MRPC columns, got {len(rec)}")
                out.append(_example(rec[3], _label_index(rec[0], spec.label_names, path, i, "Quality"), rec[4], path, i))
            return out
        cols = {h: j for j, h in enumerate(header)}
        if "label" not in cols:
            raise ValueError(f"{path}: no 'label' column in header {header}")
        text_cols = [c for c in spec.text_columns if c in cols]
        if not text_cols:
            raise ValueError(f"{path}: none of the text columns {list(spec.text_columns)} in header {header}")
        pair = spec.ext == "glue-pair"
        for i, rec in enumerate(reader, start=2):
            if len(rec) < len(header):
                raise ValueError(f"{path}, row {i}: {len(rec)} fields, header has {len(header)}")
            label = _label_index(rec[cols["label"]], spec.label_names, path, i, "label")
            if pair:
                out.append(_example(rec[cols[spec.text_columns[0]]], label, rec[cols[spec.text_columns[1]]], path, i))
            else:
                out.append(_example(rec[cols[text_cols[0]]], label, None, path, i))
    return out


def _example(text: str, label: int, text_b: str | None, path: Path, row: int) -> Example:
    text = (text or "").strip()
    if not text:
        raise ValueError(f"{path}, row {row}: empty text")
    return Example(text=text, label=label, text_b=text_b.strip() if text_b is not None else None)


def _load_superglue(spec: TaskSpec, seed: int) -> tuple[list[Example], list[Example], list[Example], str]:
    root = data_dir() / "superglue_nli" / spec.folder
    pool = _read_jsonl_nli(root / "train.jsonl", spec.label_names)
    test = _read_jsonl_nli(root / "val.jsonl", spec.label_names)
    rng = random.Random(seed)
    train, dev = [], []
    for label in range(len(spec.label_names)):  # 16 per class, as the LM-BFF protocol
        members = [ex for ex in pool if ex.label == label]
        rng.shuffle(members)
        train += members[:16]
        dev += members[16:32]
    return train, dev, test, f"superglue:{root} (16/class seeded sample of train.jsonl)"


def _read_jsonl_nli(path: Path, label_names: Sequence[str]) -> list[Example]:
    out = []
    for i, rec in iter_jsonl(path):
        require_fields(rec, ("premise", "hypothesis", "label"), path, i)
        label = _label_index(rec["label"], label_names, path, i, "label")
        out.append(_example(rec["premise"], label, rec["hypothesis"], path, i))
    return out


# ---------------------------------------------------------------------------- local files
def _rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a local task file; an empty file is an error naming it."""
    rows = read_table(resolve_data_path(path))
    if not rows:
        raise ValueError(f"{path}: the file has no rows")
    return rows


def _field(row: Any, column: str, path: str | Path, i: int) -> Any:
    """``row[column]``, or a ValueError naming the file, row and field when it is absent or empty
    (``None`` from a short CSV row or a JSON null, NaN from parquet): ``str()`` would turn those
    into the text "None"/"nan" and, for labels, into a class of their own."""
    if not isinstance(row, dict):
        raise ValueError(f"{path}, row {i}: expected an object with fields, got {type(row).__name__}")
    if column not in row:
        raise ValueError(f"{path}, row {i}: missing field {column!r} (fields: {sorted(row)})")
    value = row[column]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{path}, row {i}: missing value in field {column!r}")
    return value


def load_local_task(
    train_path: str | Path,
    test_path: str | Path,
    *,
    name: str = "local",
    text_column: str = "text",
    label_column: str = "label",
    text_b_column: str | None = None,
    labels: Sequence[str] | None = None,
    verbalizer: Sequence[str] | None = None,
    template: PromptTemplate | None = None,
    dev_path: str | Path | None = None,
) -> FewShotTask:
    """A task from users' own files with text and label columns.

    Args:
        train_path, test_path, dev_path: CSV/TSV (with header) or JSONL files.
        text_column, label_column, text_b_column: column names.
        labels: the label values in verbalizer order; default: the sorted labels of the train file.
        verbalizer: answer word per label; default: the label values themselves.
        template: prompt template; default ``"Input: {text}\\nLabel:"``.

    Raises:
        ValueError: naming the file, row and field, for a missing column, an empty text, or a
            label (in any file) that is not in ``labels``.
    """
    train_rows = _rows(train_path)
    if labels is None:
        for i, r in enumerate(train_rows, start=1):
            _field(r, label_column, train_path, i)
        labels = sorted({str(r[label_column]).strip() for r in train_rows})
    labels = tuple(str(x) for x in labels)
    verbalizer = tuple(verbalizer) if verbalizer is not None else labels
    if len(verbalizer) != len(labels):
        raise ValueError(f"verbalizer has {len(verbalizer)} words for {len(labels)} labels {list(labels)}")

    def convert(path: str | Path, rows: list[dict[str, Any]]) -> list[Example]:
        out = []
        for i, r in enumerate(rows, start=1):
            text = _field(r, text_column, path, i)
            label = _label_index(_field(r, label_column, path, i), labels, Path(path), i, label_column)
            text_b = str(_field(r, text_b_column, path, i)) if text_b_column else None
            out.append(_example(str(text), label, text_b, Path(path), i))
        return out

    train = convert(train_path, train_rows)
    test = convert(test_path, _rows(test_path))
    dev = convert(dev_path, _rows(dev_path)) if dev_path else []
    if template is None:
        template = PromptTemplate(input="Input: {text}\nLabel:" if not text_b_column else "Input: {text}\n{text_b}\nLabel:")
    return FewShotTask(
        name=name, seed=None, source=f"local:{train_path}", train=train, dev=dev, test=test,
        label_names=labels, template=template, verbalizer=verbalizer,
    )
