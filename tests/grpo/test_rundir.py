"""The run folder layout: one place knows it; train, eval, report and the study read it."""

from __future__ import annotations

import json

import pytest

from memrl.grpo.rundir import RunDir, checkpoint_step, reward_state_path
from memrl.grpo.trainer import missing_trl_hooks
from memrl.rewards import OutcomeUCBReward


def test_checkpoints_in_step_order_and_artifacts(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.is_run() and run.artifacts() == [] and run.checkpoints() == []
    for step in (10, 2, 30):
        (run.checkpoint_dir(step) / "memrl_memory").mkdir(parents=True)
    (run.path / "checkpoint-x").mkdir()  # not a checkpoint of ours
    (run.path / "notes.txt").write_text("mine")
    assert [checkpoint_step(c) for c in run.checkpoints()] == [2, 10, 30]
    assert reward_state_path(run.checkpoints()[0], OutcomeUCBReward()) == run.path / "checkpoint-2" / "outcome_counts.json"
    with pytest.raises(TypeError, match="not a stateful reward"):
        reward_state_path(run.path, object())
    run.metrics_file.write_text(json.dumps({"step": 1, "loss": 0.5, "time/step_s": 4.0}) + "\n"
                                + '{"step": 2, "loss"')  # a torn last line of a killed run
    assert run.is_run() and run.metrics() == [{"step": 1, "loss": 0.5, "time/step_s": 4.0}]
    assert run.step_timing()["logged_train_seconds"] == pytest.approx(4.0, abs=1e-9)
    assert "metrics.jsonl" in run.artifacts() and "checkpoint-30" in run.artifacts()
    run.clear()
    assert run.artifacts() == [] and (run.path / "notes.txt").read_text() == "mine"
    assert checkpoint_step("checkpoint-7") == 7 and checkpoint_step("final") is None


def test_labels_and_groups_come_from_the_resolved_config(tmp_path):
    run = RunDir(tmp_path)
    assert run.label() == tmp_path.name and run.group() is None and run.summary() == {}
    run.resolved_json.write_text(json.dumps({"train": {"method": "r1", "model": "org/Qwen2.5-0.5B",
                                                       "dataset": "data/train.jsonl"}, "grpo": {"seed": 3}}))
    assert run.label() == "r1 s3" and run.method() == "r1"
    assert run.group() == "r1 | Qwen2.5-0.5B | train"
    memory = {"train": {"method": "memory-r+", "model": "m", "dataset": "d"}, "grpo": {"seed": 0},
              "memory": {"memory_semantics": "group_loo", "memory_gate": "none"}}
    run.resolved_json.write_text(json.dumps(memory))
    assert run.label() == "memory-r+/group_loo s0"
    memory["memory"]["memory_gate"] = "zero_variance"
    run.resolved_json.write_text(json.dumps(memory))
    assert run.label() == "memory-r+/group_loo/zero_variance s0"


def test_trl_still_has_what_memrl_overrides():
    missing = missing_trl_hooks()
    assert not missing, (f"this TRL lacks {missing}; memrl.grpo.trainer.MemrlGRPOTrainer overrides them to "
                         "time generation and rewards: update it for the new TRL")
