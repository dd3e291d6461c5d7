"""A real GRPO run of SmolLM2-135M through `memrl train`: checkpoints, memory save and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from memrl.cli import main

TINY = [
    "--config", "cpu-tiny", "--set", "per_device_train_batch_size=2", "--set", "num_generations=2", "--set", "max_completion_length=8",
    "--set", "dataset_limit=8", "--set", "save_steps=1", "--set", "save_total_limit=2",
    "--set", "memory_explore_warmup_steps=1", "--method", "memory-r+", "--seed", "0",
    "--set", "save_completions_steps=[2]",
]


def _memory(path):
    from memrl.encoders import Encoder
    from memrl.rewards.memory_rewards import MemoryRPlus

    m = MemoryRPlus(encoder=Encoder())
    m.load(path)
    return m


def _contents(memory):
    return {name: {k: getattr(memory, name).values_of(k) for k in getattr(memory, name).key_ids()}
            for name in ("success_memory", "failure_memory")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo") / "run"
    rc = main(["train", *TINY, "--max-steps", "2", "--set", "before_after_problems=2", "--output-dir", str(out)])
    assert rc == 0
    return out


def test_run_writes_config_checkpoints_memory_metrics(trained):
    out = trained
    assert (out / "resolved_config.yaml").is_file()
    cfg = json.loads((out / "resolved_config.json").read_text())
    assert cfg["train"]["method"] == "memory-r+" and cfg["grpo"]["max_steps"] == 2
    for step in (1, 2):
        assert (out / f"checkpoint-{step}" / "memrl_memory" / "state.json").is_file()
        assert (out / f"checkpoint-{step}" / "optimizer.pt").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("rewards/correctness_reward/mean", "rewards/memory_exploit_reward/mean",
                "rewards/memory_explore_reward/mean", "completions/mean_length", "completions/clipped_ratio",
                "frac_reward_zero_std", "memory/failure_values", "time/step_s", "time/reward_share",
                "time/generation_share", "diag/auc_groups", "diag/len_corr_groups"):
        assert key in steps[-1], key
    assert 0 < steps[-1]["time/generation_share"] < 1
    # every completion of a step lands in one of the two memories (none evicted at this size)
    total = steps[-1]["memory/success_values"] + steps[-1]["memory/failure_values"]
    assert total == 4
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["timing"]["steps_timed"] == 2
    assert (out / "training_curves.png").stat().st_size > 10_000
    assert (out / "final" / "model.safetensors").is_file()


def test_sampled_completions_of_the_chosen_steps_are_saved_with_their_rewards(trained):
    records = [json.loads(line) for line in (trained / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 2]  # step 2 only: 1 prompt x 2 generations
    assert records[0]["question"] == records[1]["question"] and records[0]["group"] == records[1]["group"] == 0
    assert all(r["tokens"] <= 8 and isinstance(r["completion"], str) for r in records)
    step2 = next(r for r in map(json.loads, (trained / "metrics.jsonl").read_text().splitlines()) if r.get("step") == 2)
    for name in ("correctness_reward", "memory_exploit_reward", "memory_explore_reward"):
        logged = step2[f"rewards/{name}/mean"]
        assert np.mean([r["rewards"][name] for r in records]) == pytest.approx(logged, abs=1e-6), name


def test_the_base_and_the_trained_model_are_compared_on_the_same_held_out_problems(trained):
    figures = json.loads((trained / "run_summary.json").read_text())["before_after"]
    records = {name: [json.loads(line) for line in (trained / "before_after" / f"{name}.jsonl").read_text().splitlines()]
               for name in ("base", "trained")}
    assert len(records["base"]) == 2 and [r["question"] for r in records["base"]] == [
        r["question"] for r in records["trained"]]
    for name, column in (("base", "before"), ("trained", "after")):
        assert figures[column]["n"] == 2
        assert figures[column]["accuracy"] == pytest.approx(sum(r["correct"] for r in records[name]) / 2)
    assert figures["decoding"]["do_sample"] is False and figures["decoding"]["max_new_tokens"] == 8
    assert figures["before"]["memory"]["failure_values"] == 0 and figures["steps"] == 2
    md = (trained / "before_after.md").read_text()
    assert md.startswith("# Before / after 2 training steps") and "| held-out accuracy [95% Wilson interval] |" in md
    assert md.endswith("![training curves](training_curves.png)\n")


def test_final_memory_equals_last_checkpoint_memory(trained):
    final, ckpt = _contents(_memory(trained / "memrl_memory")), _contents(_memory(trained / "checkpoint-2" / "memrl_memory"))
    assert final.keys() == ckpt.keys()
    for name in final:
        assert final[name].keys() == ckpt[name].keys()
        for k in final[name]:
            np.testing.assert_array_equal(final[name][k], ckpt[name][k])


def test_resume_continues_with_the_same_memory(trained):
    saved = _contents(_memory(trained / "checkpoint-2" / "memrl_memory"))
    # only the checkpoint and the new step budget: the run's own options are read from its folder
    rc = main(["train", "--resume", str(trained / "checkpoint-2"), "--max-steps", "3", "--set", "plot=false"])
    assert rc == 0
    summary = json.loads((trained / "run_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["resumed_from"].endswith("checkpoint-2")
    after = _contents(_memory(trained / "checkpoint-3" / "memrl_memory"))
    n_saved = n_after = 0
    for name in saved:
        for key, values in saved[name].items():
            # the resumed memory started from the saved one: its old entries come first, unchanged
            np.testing.assert_array_equal(after[name][key][: len(values)], values)
            n_saved += len(values)
        n_after += sum(len(v) for v in after[name].values())
    assert n_after == n_saved + 2  # step 3 wrote its 2 completions on top of the restored memory
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]  # one history across the resume


def test_a_used_run_folder_is_not_overwritten_by_accident(trained, capsys):
    before = (trained / "metrics.jsonl").read_bytes()
    assert main(["train", *TINY, "--max-steps", "1", "--output-dir", str(trained)]) == 1
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (trained / "metrics.jsonl").read_bytes() == before
    # resuming under settings that define another experiment is refused before anything is loaded
    assert main(["train", "--resume", str(trained / "checkpoint-2"), "--method", "r1"]) == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and "method: saved 'memory-r+', now 'r1'" in err
    assert (trained / "metrics.jsonl").read_bytes() == before


def test_overwrite_replaces_the_earlier_run_and_keeps_other_files(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint-7").mkdir(parents=True)
    (out / "checkpoint-7" / "model.safetensors").write_bytes(b"old")
    (out / "metrics.jsonl").write_text('{"step": 7, "loss": 1.0}\n')
    (out / "notes.txt").write_text("mine")
    assert main(["train", *TINY, "--max-steps", "1", "--set", "save_steps=5", "--set", "plot=false",
                 "--output-dir", str(out), "--overwrite"]) == 0
    # the console: a bar with the key numbers, not TRL's log dictionaries (they go to metrics.jsonl)
    console = "".join(capsys.readouterr())
    assert "train: 100%" in console and "1/1" in console and "| reward " in console and " keys, " in console
    assert "'loss'" not in console and "rewards/" not in console
    assert not (out / "checkpoint-7").exists() and (out / "notes.txt").read_text() == "mine"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1]
    assert json.loads((out / "run_options.json").read_text())["output_dir"] == str(out)


def test_outcome_ucb_counts_are_checkpointed_and_restored(tmp_path):
    from memrl.rewards import OutcomeUCBReward

    out = tmp_path / "ucb"
    args = [a if a != "memory-r+" else "outcome-ucb" for a in TINY]
    assert main(["train", *args, "--max-steps", "2", "--set", "plot=false", "--output-dir", str(out)]) == 0
    counts = {}
    for step in (1, 2):
        r = OutcomeUCBReward()
        r.load(out / f"checkpoint-{step}" / "outcome_counts.json")
        counts[step] = r.counts
    final = OutcomeUCBReward()
    final.load(out / "outcome_counts.json")
    assert final.counts == counts[2]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("rewards/outcome_ucb_reward/mean" in r for r in rows if "loss" in r)
    assert main(["train", "--resume", str(out / "checkpoint-2"), "--max-steps", "3"]) == 0
    resumed = OutcomeUCBReward()
    resumed.load(out / "checkpoint-3" / "outcome_counts.json")
    for question, answers in counts[2].items():  # the restored counts only grew
        for answer, n in answers.items():
            assert resumed.count(question, answer) >= n


def test_a_gated_run_logs_the_gated_fraction(tmp_path):
    """memory_gate=zero_variance in a real GRPO step: the flag reaches the rewards, and the share of
    groups whose intrinsic rewards were dropped is logged with the other memory metrics."""
    out = tmp_path / "gated"
    assert main(["train", *TINY, "--memory-gate", "zero_variance", "--max-steps", "1", "--set", "save_steps=5",
                 "--set", "plot=false", "--output-dir", str(out)]) == 0
    assert json.loads((out / "resolved_config.json").read_text())["memory"]["memory_gate"] == "zero_variance"
    step = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line][-1]
    assert 0.0 <= step["memory/gated_frac"] <= 1.0 and "memory/success_values" in step
