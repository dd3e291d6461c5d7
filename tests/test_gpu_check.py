"""bench/gpu_check.py on a machine without CUDA: it refuses clearly, and (``--allow-cpu``, slow) its
parts, checks and JSON work end to end on the tiny model."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=900)


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_stops_with_one_line_naming_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "gpu_check.json"
    proc = run("--model", str(tmp_path), "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "NVIDIA GPU" in lines[0]
    assert not out.exists()


def test_the_model_must_be_a_local_folder(tmp_path):
    proc = run("--allow-cpu", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and "local folder" in proc.stderr and "hub" in proc.stderr


def test_memory_checks_and_step_summary():
    gpu_check = load_script()
    a, b = np.ones((2, 3), np.float32), np.zeros((1, 3), np.float32)
    saved = {"success": {"q1": a}, "failure": {"q2": b}}
    assert gpu_check.same_contents(saved, {"success": {"q1": a.copy()}, "failure": {"q2": b.copy()}})
    assert not gpu_check.same_contents(saved, {"success": {"q1": a}, "failure": {"q2": b + 1}})
    grown = {"success": {"q1": np.vstack([a, b])}, "failure": {"q2": b, "q3": a}}
    assert gpu_check.contained(saved, grown) and gpu_check.count_values(grown) == 6
    assert not gpu_check.contained(saved, {"success": {}, "failure": {"q2": b}})  # a fresh memory: not restored
    rows = [{"step": 1, "time/step_s": 10.0, "time/generation_share": 0.5, "time/reward_share": 0.1},
            {"step": 2, "time/step_s": 4.0, "time/generation_share": 0.4, "time/reward_share": 0.2},
            {"step": 3, "time/step_s": 6.0, "time/generation_share": 0.6, "time/reward_share": 0.3}]
    summary = gpu_check.step_summary(rows)
    assert summary["first_step_s"] == pytest.approx(10.0) and summary["steps_averaged"] == [2, 3]
    assert summary["step_s"] == pytest.approx(5.0) and summary["reward_share"] == pytest.approx(0.25)
    assert summary["reward_s"] == pytest.approx(1.25)


def test_the_reward_share_bench_takes_the_rest_of_a_step_only_from_a_gpu_check(tmp_path):
    spec = importlib.util.spec_from_file_location("rewards_bench", ROOT / "bench" / "rewards_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps({"gpu": True, "device": "H100", "steps": {"step_s": 12.0, "reward_share": 0.25}}))
    assert bench.gpu_check_rest_seconds(str(path))["rest_s"] == pytest.approx(9.0)
    path.write_text(json.dumps({"gpu": False, "steps": {"step_s": 12.0, "reward_share": 0.25}}))  # --allow-cpu
    assert bench.gpu_check_rest_seconds(str(path)) is None
    assert bench.gpu_check_rest_seconds(str(tmp_path / "missing.json")) is None


@pytest.mark.slow
def test_allow_cpu_runs_every_part_and_writes_the_json(tmp_path, tiny_model_path, shared_data):
    out = tmp_path / "gpu_check.json"
    proc = run("--allow-cpu", "--model", tiny_model_path, "--config", "cpu-tiny", "--steps", "2",
               "--eval-limit", "2", "--eval-max-new-tokens", "8", "--set", "per_device_train_batch_size=2",
               "--set", "num_generations=2", "--set", "max_completion_length=8", "--set", "dataset_limit=8",
               "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["ok"] and not result["gpu"] and "no GPU figure" in result["note"]
    assert result["memory"]["saved"] and result["memory"]["restored"]
    assert result["memory"]["values_after_resumed_step"] == result["memory"]["values_at_checkpoint"] + 2
    assert [s["step"] for s in result["steps"]["per_step"]] == [1, 2, 3]
    assert 0 < result["steps"]["generation_share"] < 1 and result["steps"]["reward_s"] > 0
    assert result["eval"][0]["benchmark"] == "gsm8k" and result["eval"][0]["n"] == 2
    assert set(result["parts"]) == {"train", "resume", "eval"}
