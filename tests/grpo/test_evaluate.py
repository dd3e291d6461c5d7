"""`memrl eval`: real SmolLM2 on a handful of GSM8K / arith problems, run directories, measures."""

from __future__ import annotations

import json
import math

import pytest

from memrl.cli import main
from memrl.grpo.evaluate import (
    EvalConfig,
    aggregate,
    expand_targets,
    has_self_verification,
    lexical_diversity,
    mean_pairwise_cosine,
    run_eval,
    unique_run_names,
)
from memrl.rewards.outcome import is_correct_numeric
from memrl.tasks.math import DATASETS, MathDataset, SharedOrHubSplit, dataset_names


def test_diversity_measures():
    assert lexical_diversity(["the cat sat", "the cat sat"]) == pytest.approx(0.0, abs=1e-9)
    assert lexical_diversity(["apples and pears", "quantum field theory"]) == pytest.approx(1.0)
    assert math.isnan(lexical_diversity(["alone"]))
    assert mean_pairwise_cosine([[1, 0], [0, 1], [1, 0]]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("text,expected", [
    ("5 + 3 = 8. Let me check: 8 - 3 = 5.", True),
    ("We double-check the sum.", True),
    ("Wait, that is wrong.", True),
    ("The answer is 8.", False),
    ("I will checkout the store.", False),
])
def test_self_verification_phrases(text, expected):
    assert has_self_verification(text) is expected


def test_bad_decoding_settings():
    with pytest.raises(ValueError, match="temperature"):
        EvalConfig(num_samples=4)  # several greedy samples would be identical
    with pytest.raises(ValueError, match="backend"):
        EvalConfig(backend="onnx")
    with pytest.raises(ValueError, match="device='gpu'"):
        EvalConfig(device="gpu")


def test_gsm8k_handful_from_shared_data(shared_data, tmp_path, capsys):
    rc = main(["eval", "smollm2-135m", "--benchmarks", "gsm8k", "--limit", "3", "--max-new-tokens", "32",
               "--out", str(tmp_path)])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["decoding"]["do_sample"] is False and summary["decoding"]["max_new_tokens"] == 32
    assert summary["decoding"]["device"] in ("cpu", "cuda") and summary["decoding"]["dtype"] == "float32"
    (result,) = summary["results"]
    records = [json.loads(line) for line in (tmp_path / "smollm2-135m" / "gsm8k.jsonl").read_text().splitlines()]
    assert len(records) == 3 and records[0]["question"].startswith("Janet")
    for r in records:
        assert set(r) >= {"prompt", "completion", "extracted", "gold", "correct"}
        # the very checker the correctness reward uses
        assert r["correct"] == is_correct_numeric(r["completion"], r["gold"])
        assert r["completion"].strip()  # the model did generate something
    assert result["accuracy"] == sum(r["correct"] for r in records) / 3
    lo, hi = result["accuracy_ci95"]
    assert lo <= result["accuracy"] <= hi and hi - lo > 0.3  # 3 problems say little, and the CI shows it
    assert "gsm8k" in capsys.readouterr().out


def _eval_parser():
    from memrl.cli import build_parser

    return build_parser()._subparsers._group_actions[0].choices["eval"]


def test_eval_benchmark_names_are_the_registry():
    eval_parser = _eval_parser()
    (benchmarks,) = [a for a in eval_parser._actions if a.dest == "benchmarks"]
    listed = benchmarks.help.split(" or data file paths")[0].split(", ")
    # every registered dataset has a test split, so every one is a benchmark
    assert listed == dataset_names("test") == list(DATASETS)
    assert eval_parser.description.startswith(f"Accuracy on {', '.join(DATASETS)} or local files")


def test_a_registered_toy_benchmark_runs_through_memrl_eval(tmp_path, monkeypatch):
    """One registry entry is all a new benchmark needs: ``memrl eval`` loads its test split with
    its columns, grades with its checker and draws ``--shots`` exemplars from its train split."""
    (tmp_path / "data" / "toy").mkdir(parents=True)
    for split, start in (("train", 10), ("test", 0)):
        rows = [{"problem": f"What is {i} + 1?", "final": str(i + 1)} for i in range(start, start + 3)]
        (tmp_path / "data" / "toy" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("MEMRL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setitem(DATASETS, "toy", MathDataset(
        "toy sums", {split: SharedOrHubSplit(f"toy/{split}.jsonl") for split in ("train", "test")},
        question_column="problem", answer_column="final"))
    rc = main(["eval", "smollm2-135m", "--benchmarks", "toy", "--limit", "2", "--shots", "1",
               "--max-new-tokens", "8", "--out", str(tmp_path / "out")])
    assert rc == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "smollm2-135m" / "toy.jsonl").read_text().splitlines()]
    assert [(r["question"], r["gold"]) for r in records] == [("What is 0 + 1?", "1"), ("What is 1 + 1?", "2")]
    assert all(r["correct"] == is_correct_numeric(r["completion"], r["gold"]) for r in records)
    (result,) = json.loads((tmp_path / "out" / "summary.json").read_text())["results"]
    assert result["benchmark"] == "toy"


def _fake_run(root, name, model_path, steps=(1, 2)):
    run = root / name
    run.mkdir()
    for s in steps:
        (run / f"checkpoint-{s}").symlink_to(model_path, target_is_directory=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "rewards/correctness_reward/mean": 0.2}) + "\n")
    return run


def test_run_directory_expands_to_checkpoints(tmp_path, tiny_model_path, encoder):
    run = _fake_run(tmp_path, "run-a", tiny_model_path)
    assert [t["step"] for t in expand_targets(str(run))] == [1, 2]
    cfg = EvalConfig(benchmarks=["arith"], limit=2, max_new_tokens=16, temperature=0.9, num_samples=3, seed=1)
    summary = run_eval([str(run)], cfg, encoder=encoder)
    assert (run / "eval" / "summary.json").is_file()  # where `memrl report` looks
    assert [r["step"] for r in summary["results"]] == [1, 2]
    per = summary["per_benchmark"]["arith"]
    assert per["best"] == max(r["accuracy"] for r in summary["results"])
    assert per["last"] == summary["results"][-1]["accuracy"]
    r = summary["results"][0]
    assert 0.0 <= r["pass@1"] <= r["pass@3"] <= 1.0
    assert 0.0 <= r["semantic_diversity"] <= 2.0 and 0.0 <= r["lexical_diversity"] <= 1.0
    # same seed, same weights: both checkpoints sample the same completions
    assert summary["results"][0]["accuracy"] == summary["results"][1]["accuracy"]
    # a later evaluation on another benchmark adds to the run's record instead of replacing it
    greedy = EvalConfig(benchmarks=["gsm8k"], limit=1, max_new_tokens=8)
    run_eval([str(run)], greedy, encoder=encoder)
    saved = json.loads((run / "eval" / "summary.json").read_text())
    assert sorted((r["benchmark"], r["step"]) for r in saved["results"]) == [
        ("arith", 1), ("arith", 2), ("gsm8k", 1), ("gsm8k", 2)]
    assert set(saved["per_benchmark"]) == {"arith", "gsm8k"}
    assert {r["benchmark"]: r["decoding"]["do_sample"] for r in saved["results"]} == {"arith": True, "gsm8k": False}


def test_aggregate_last_best_and_across_runs():
    results = [
        {"run": "a", "group": "r1", "label": "a/checkpoint-1", "step": 1, "benchmark": "gsm8k", "accuracy": 0.30},
        {"run": "a", "group": "r1", "label": "a/checkpoint-2", "step": 2, "benchmark": "gsm8k", "accuracy": 0.20},
        {"run": "b", "group": "r1", "label": "b/checkpoint-1", "step": 1, "benchmark": "gsm8k", "accuracy": 0.10},
        {"run": "b", "group": "r1", "label": "b/checkpoint-2", "step": 2, "benchmark": "gsm8k", "accuracy": 0.40},
        # another method: averaged on its own, never with r1; its final model's step is unknown
        {"run": "c", "group": "memory-r+", "label": "c/checkpoint-5", "step": 5, "benchmark": "gsm8k", "accuracy": 0.9},
        {"run": "c", "group": "memory-r+", "label": "c/final", "step": None, "benchmark": "gsm8k", "accuracy": 0.5},
        # a bare model: its own row, not part of any average
        {"run": None, "model": "base", "label": "base", "step": None, "benchmark": "gsm8k", "accuracy": 0.05},
    ]
    agg = aggregate(results)
    assert agg["per_run"]["a"]["gsm8k"] | {} == {"last": 0.20, "last_label": "a/checkpoint-2", "best": 0.30,
                                               "best_label": "a/checkpoint-1", "best_step": 1}
    assert agg["per_run"]["c"]["gsm8k"]["last_label"] == "c/final" and agg["per_run"]["c"]["gsm8k"]["best_step"] == 5
    across = agg["across_runs"]["gsm8k"]
    assert set(across) == {"r1", "memory-r+"}
    assert across["r1"]["n_runs"] == 2
    assert across["r1"]["last_mean"] == pytest.approx(0.30) and across["r1"]["best_mean"] == pytest.approx(0.35)
    assert across["r1"]["best_std"] == pytest.approx(0.0707, abs=1e-3)
    assert across["memory-r+"] == {"n_runs": 1, "last_mean": 0.5, "last_std": 0.0, "best_mean": 0.9, "best_std": 0.0}


def test_run_display_names_grow_only_where_they_clash():
    names = unique_run_names(["/x/cpu-tiny/memory-r+-s0", "/x/gsm8k/memory-r+-s0", "/x/cpu-tiny/r1-s0"])
    assert names == {"/x/cpu-tiny/memory-r+-s0": "cpu-tiny/memory-r+-s0", "/x/gsm8k/memory-r+-s0": "gsm8k/memory-r+-s0",
                     "/x/cpu-tiny/r1-s0": "r1-s0"}


def test_missing_run_content_is_an_error(tmp_path):
    run = tmp_path / "empty-run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        expand_targets(str(run))
