"""Math dataset loading: the registry, shared GSM8K/MATH-500/AIME files, local files, malformed rows, prompts."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from memrl.tasks.arith import generate_problems
from memrl.tasks.files import read_table
from memrl.tasks.math import (
    DATASETS,
    DatasetSpec,
    GeneratedSplit,
    MathDataset,
    SharedOrHubSplit,
    dataset_names,
    default_checker,
    exemplar_completion,
    load_rows,
    make_messages,
    normalize_rows,
    to_training_rows,
    trains_on_random_subset,
)

REGISTERED_SPLITS = [(name, split) for name, entry in DATASETS.items() for split in entry.splits]


def test_gsm8k_test_from_shared_data(shared_data):
    rows, checker = load_rows(DatasetSpec(name="gsm8k", split="test", limit=5))
    assert checker == "numeric" and len(rows) == 5
    assert rows[0]["question"].startswith("Janet")  # first GSM8K test problem
    assert rows[0]["answer"].rstrip().endswith("#### 18")


@pytest.mark.parametrize("name,n", [("math500", 500), ("aime24", 30)])
def test_math_eval_sets(shared_data, name, n):
    rows, checker = load_rows(DatasetSpec(name=name, split="test"))
    assert checker == "math" and len(rows) == n
    assert all(r["question"] and r["answer"] for r in rows)


def test_local_jsonl_csv_parquet_with_custom_columns(tmp_path):
    data = [{"problem": "What is 2 + 2?", "final": "4"}, {"problem": "What is 3 + 5?", "final": 8}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    pd.DataFrame(data).astype(str).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(data).astype(str).to_parquet(tmp_path / "d.parquet")
    for suffix in ("jsonl", "csv", "parquet"):
        spec = DatasetSpec(name=str(tmp_path / f"d.{suffix}"), question_column="problem", answer_column="final")
        rows, checker = load_rows(spec)
        assert rows == [{"question": "What is 2 + 2?", "answer": "4"}, {"question": "What is 3 + 5?", "answer": "8"}]
        assert checker == "numeric"


def test_malformed_rows_name_file_row_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "ok?", "answer": "1"}) + "\n"
                    + json.dumps({"question": "no answer"}) + "\n"
                    + json.dumps({"question": "", "answer": "3"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl row 2: field 'answer' missing .*bad.jsonl row 3: field 'question' is empty"):
        load_rows(DatasetSpec(name=str(path)))
    rows, _ = load_rows(DatasetSpec(name=str(path), skip_bad_rows=True))
    assert rows == [{"question": "ok?", "answer": "1"}]
    _, skipped = normalize_rows([{"q": 1}], "x", "question", "answer", skip_bad_rows=True)
    assert skipped == 1


def test_invalid_json_line_reports_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{oops\n')
    with pytest.raises(ValueError, match="broken.jsonl, row 2: invalid JSON"):
        load_rows(DatasetSpec(name=str(path)))


def test_unknown_dataset_and_split_name_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'nope': use one of gsm8k, numina-tir, math500, aime24, "
                                         "arith or a path to a .jsonl/.json/.csv/.tsv/.parquet file"):
        load_rows(DatasetSpec(name="nope"))
    with pytest.raises(ValueError, match="gsm8k has no split 'validation'; its splits: train, test"):
        load_rows(DatasetSpec(name="gsm8k", split="validation"))
    # a benchmark that is only a test set is never silently read as training data
    with pytest.raises(ValueError, match="math500 has no split 'train'; its splits: test"):
        load_rows(DatasetSpec(name="math500", split="train"))


@pytest.mark.parametrize("name,split", REGISTERED_SPLITS)
def test_every_registered_split_loads_with_its_declared_columns(shared_data, name, split):
    entry = DATASETS[name]
    source = entry.splits[split]
    if isinstance(source, SharedOrHubSplit):
        if source.shared_file is None:
            pytest.skip(f"{name} is on the hub only (offline here)")
        # the declared columns are the ones the shared file has
        raw = read_table(shared_data / source.shared_file)[:3]
        assert all({entry.question_column, entry.answer_column} <= set(r) for r in raw)
    rows, checker = load_rows(DatasetSpec(name=name, split=split, limit=3))
    assert checker == entry.checker == default_checker(name)
    assert len(rows) == 3 and all(set(r) == {"question", "answer"} and r["question"] and r["answer"] for r in rows)
    if isinstance(source, SharedOrHubSplit):
        assert rows == [{"question": str(r[entry.question_column]).strip(), "answer": str(r[entry.answer_column]).strip()}
                        for r in raw]


def test_registry_defaults_match_the_datasets():
    assert dataset_names() == list(DATASETS) == ["gsm8k", "numina-tir", "math500", "aime24", "arith"]
    assert dataset_names("train") == ["gsm8k", "numina-tir", "arith"]
    assert dataset_names("test") == list(DATASETS)
    assert [n for n in DATASETS if DATASETS[n].generated] == ["arith"]
    assert [n for n in DATASETS if trains_on_random_subset(n)] == ["numina-tir"]  # the paper's 2,000 of 72k
    assert not trains_on_random_subset("train.jsonl") and default_checker("train.jsonl") == "numeric"
    # the arith entry is memrl.tasks.arith's generator: its default sizes, its levels and seeds
    rows, _ = load_rows(DatasetSpec(name="arith", split="test", arith_level=2, seed=4))
    assert len(rows) == 200 and rows == generate_problems(200, level=2, seed=4, split="test")
    assert len(load_rows(DatasetSpec(name="arith"))[0]) == 1000
    with pytest.raises(ValueError, match="checker"):
        MathDataset("bad", {"test": SharedOrHubSplit("x.jsonl")}, checker="exact")


def test_a_new_dataset_is_one_registry_entry(tmp_path, monkeypatch):
    """An entry added to the registry loads through the normal path: shared folder, its columns,
    its splits, its checker, its generator."""
    (tmp_path / "toy").mkdir()
    data = [{"problem": f"What is {i} + {i}?", "final": str(2 * i)} for i in range(4)]
    (tmp_path / "toy" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    monkeypatch.setenv("MEMRL_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(DATASETS, "toy", MathDataset(
        "a toy benchmark", {"test": SharedOrHubSplit("toy/test.jsonl")}, checker="math",
        question_column="problem", answer_column="final"))
    rows, checker = load_rows(DatasetSpec(name="toy", split="test", limit=3))
    assert checker == "math"
    assert rows == [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(3)]
    assert "toy" in dataset_names("test") and "toy" not in dataset_names("train")
    with pytest.raises(ValueError, match="toy has no split 'train'; its splits: test"):
        load_rows(DatasetSpec(name="toy", split="train"))
    # without the file and without a hub id the error says where it looked
    monkeypatch.setenv("MEMRL_DATA_DIR", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(FileNotFoundError, match="toy/test.jsonl not found under the shared data folder"):
        load_rows(DatasetSpec(name="toy", split="test"))
    # a generated dataset is one entry too
    monkeypatch.setitem(DATASETS, "countdown", MathDataset("counting", {"train": GeneratedSplit(
        lambda spec, n: [{"question": f"What comes after {i}?", "answer": str(i + 1)} for i in range(n)], 5)}))
    rows, checker = load_rows(DatasetSpec(name="countdown"))
    assert checker == "numeric" and len(rows) == 5 and rows[4] == {"question": "What comes after 4?", "answer": "5"}


@pytest.mark.parametrize("style", ["think", "reasoning"])
def test_prompts_and_exemplars(style):
    gsm = {"question": "Q1?", "answer": "Half is <<4/2=2>>2.\n#### 2"}
    text = exemplar_completion(gsm["answer"], style)
    # the exemplar shows the exact format the format rewards check, without calculator notes
    assert text == f"<{style}>\nHalf is 2.\n</{style}>\n<answer>\n2\n</answer>"
    msgs = make_messages("Q2?", style, [gsm])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert f"<{style}>" in msgs[0]["content"] and msgs[-1]["content"] == "Q2?"


def test_k_shot_never_uses_own_question():
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(5)]
    out = to_training_rows(rows, shots=2, seed=1)
    for row in out:
        shown = [m["content"] for m in row["prompt"][1:-1:2]]
        assert len(shown) == 2 and row["question"] not in shown and len(set(shown)) == 2
    with pytest.raises(ValueError, match="shots"):
        to_training_rows(rows[:2], shots=2)
    # three rows, but two share a question: that question has a single possible exemplar, so
    # a 2-shot draw for it can never finish; it must be an error naming the row, not a hang
    dup = [{"question": "a", "answer": "1"}, {"question": "a", "answer": "1 "}, {"question": "b", "answer": "2"}]
    with pytest.raises(ValueError, match=r"row 0: shots=2 needs 2 distinct exemplars with another question; the pool has 1"):
        to_training_rows(dup, shots=2)
