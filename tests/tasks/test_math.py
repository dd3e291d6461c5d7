"""Math dataset loading: shared GSM8K/MATH-500/AIME files, local files, malformed rows, prompts."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from memrl.tasks.math import (
    DatasetSpec,
    exemplar_completion,
    load_rows,
    make_messages,
    normalize_rows,
    to_training_rows,
)


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


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_rows(DatasetSpec(name="nope"))
    with pytest.raises(ValueError, match="split"):
        load_rows(DatasetSpec(name="gsm8k", split="validation"))


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
