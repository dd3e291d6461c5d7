"""What only a CUDA device can check. Every test here is marked ``gpu``: skipped where torch sees no
CUDA device (tests/conftest.py), run on a GPU machine with ``pytest -m gpu tests/test_gpu.py``.

The longer end-to-end check (the paper preset's Memory-R+ for a few steps, bf16, vLLM when
installed, save and resume, ``memrl eval``) is ``bench/gpu_check.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.gsm8k_questions import QUESTION_AND_GOLD

pytestmark = pytest.mark.gpu

# GSM8K questions and model-like completions: 4 questions x 4 completions, two steps' worth
QUESTIONS = list(QUESTION_AND_GOLD.values())  # from the shared data


def batch(step: int) -> dict:
    completions, question, answer = [], [], []
    for q, gold in QUESTIONS:
        for j in range(4):
            guess = gold if (j + step) % 2 == 0 else str(int(gold) + 7 * (j + 1))
            completions.append(f"<think>\nStep {step}, try {j}: working on it, the result is {guess}.\n</think>\n"
                               f"<answer>\n{guess}\n</answer>")
            question.append(q)
            answer.append(gold)
    return {"completions": completions, "question": question, "answer": answer}


def test_encoder_on_cuda_matches_the_cpu_encoder(encoder):
    from memrl.encoders import Encoder

    texts = [c for step in (0, 1) for c in batch(step)["completions"]] + [q for q, _ in QUESTIONS]
    on_gpu = Encoder(device="cuda")
    got = on_gpu.encode(texts)
    assert str(on_gpu._load().device).startswith("cuda")
    assert got.dtype == np.float32 and got.shape == (len(texts), encoder.dim)
    np.testing.assert_allclose(got, encoder.encode(texts), atol=1e-4)  # fp32 on both devices


def test_memory_encoder_device_auto_puts_the_rewards_encoder_on_the_gpu():
    from memrl.rewards import MemoryRPlus
    from memrl.runtime import resolve_device

    rewards = MemoryRPlus()  # memory_encoder_device="auto", as memrl train builds it
    rewards.encoder.encode(["warm-up"])
    assert resolve_device("auto") == "cuda" and str(rewards.encoder._load().device).startswith("cuda")
    assert MemoryRPlus(memory_encoder_device="cpu").encoder.device == "cpu"  # an explicit choice still wins


def test_memory_reward_steps_with_the_encoder_on_cuda_equal_the_cpu_ones(encoder):
    from memrl.encoders import Encoder
    from memrl.rewards import MemoryRPlus

    options = {"memory_explore_warmup_steps": 0, "memory_max_keys": 64}
    on_gpu = MemoryRPlus(encoder=Encoder(device="cuda"), **options)
    on_cpu = MemoryRPlus(encoder=encoder, **options)
    for step in (0, 1, 2):
        got, want = on_gpu.compute(**batch(step)), on_cpu.compute(**batch(step))
        for key in ("exploit_raw", "explore_raw", "outcome"):
            np.testing.assert_allclose(got[key], want[key], atol=1e-4, equal_nan=True, err_msg=f"step {step} {key}")
        for key in ("exploit", "explore"):  # min-max stretches the raw differences: a looser bound
            np.testing.assert_allclose(got[key], want[key], atol=1e-2, err_msg=f"step {step} {key}")
    assert len(on_gpu.success_memory) == len(on_cpu.success_memory) == len(QUESTIONS)


def test_one_bf16_grpo_step_on_cuda_trains_and_saves_the_memory(tmp_path):
    import torch

    from memrl.cli import main

    out = tmp_path / "run"
    torch.cuda.reset_peak_memory_stats()
    rc = main(["train", "--config", "cpu-tiny", "--max-steps", "1", "--output-dir", str(out), "--no-plot",
               "--set", "bf16=true", "--set", "per_device_train_batch_size=4", "--set", "num_generations=4",
               "--set", "max_completion_length=32", "--set", "save_steps=1", "--set", "memory_explore_warmup_steps=0"])
    assert rc == 0
    cfg = json.loads((out / "resolved_config.json").read_text())
    assert cfg["grpo"]["bf16"] is True and not cfg["grpo"].get("use_cpu")
    assert torch.cuda.max_memory_allocated() > 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if "loss" in r)
    assert np.isfinite(step["loss"]) and step["time/step_s"] > 0
    assert step["memory/success_values"] + step["memory/failure_values"] == 4
    assert (out / "checkpoint-1" / "memrl_memory" / "state.json").is_file()
