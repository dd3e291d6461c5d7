"""memory_encoder_device / memory_encoder_batch_size: where the Memory-R+ encoder runs, one setting for
``memrl train`` and ``memrl serve`` (on this CPU machine ``auto`` resolves to the CPU; the CUDA side
is in tests/test_gpu.py)."""

from __future__ import annotations

import json

import pytest

from memrl.encoders import Encoder
from memrl.rewards import MemoryRewardConfig, MemoryRPlus
from memrl.runtime import resolve_device


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_defaults_auto_and_the_built_encoder_uses_the_settings():
    config = MemoryRewardConfig()
    assert config.memory_encoder_device == "auto" and config.memory_encoder_batch_size == 64
    rewards = MemoryRPlus(memory_encoder_device="auto", memory_encoder_batch_size=16)
    assert rewards.encoder.device == "auto" and rewards.encoder.batch_size == 16
    rewards.encoder.encode(["warm-up"])  # loads the model, resolving the device in this process
    expected = "cuda" if cuda_available() else "cpu"
    assert resolve_device("auto") == expected
    assert str(rewards.encoder._load().device).startswith(expected)


def test_an_invalid_device_or_batch_size_is_refused_naming_the_option():
    with pytest.raises(ValueError, match=r"memory_encoder_device='gpu': choose auto, cpu, cuda or cuda:N"):
        MemoryRewardConfig(memory_encoder_device="gpu")
    with pytest.raises(ValueError, match="memory_encoder_batch_size must be >= 1"):
        MemoryRewardConfig(memory_encoder_batch_size=0)
    with pytest.raises(ValueError, match="device='cuda:x'"):
        Encoder(device="cuda:x")


@pytest.mark.skipif("cuda_available()")
def test_an_explicit_cuda_device_without_cuda_fails_when_the_rewards_are_built():
    with pytest.raises(ValueError, match=r"memory_encoder_device='cuda', but torch .* sees no CUDA device"):
        MemoryRPlus(memory_encoder_device="cuda")
    with pytest.raises(ValueError, match="sees no CUDA device"):
        Encoder(device="cuda:1").encode(["x"])  # a bare Encoder fails when it loads
    rewards = MemoryRPlus(encoder=Encoder(device="cpu"), memory_encoder_device="cuda")  # a given encoder is used as is
    assert rewards.encoder.device == "cpu"


def test_serve_reads_the_same_option_and_keeps_its_old_name_as_an_alias(encoder):
    from memrl.serve.config import ServeConfig, build_reward_spec

    spec = build_reward_spec({"method": "memory-r+", "memory_encoder_device": "cpu", "memory_encoder_batch_size": 8})
    assert (spec.memory.encoder.device, spec.memory.encoder.batch_size) == ("cpu", 8)
    # where the encoder runs is not a reward option a snapshot must match
    assert "memory_encoder_device" not in spec.options["memory"] and "memory_top_k" in spec.options["memory"]
    config = ServeConfig(encoder_device="cpu", encoder_batch_size=4)
    spec = build_reward_spec({"method": "memory-r+"}, encoder_device=config.encoder_device,
                             encoder_batch_size=config.encoder_batch_size)
    assert spec.memory.config.memory_encoder_device == "cpu" and spec.memory.encoder.batch_size == 4
    with pytest.raises(ValueError, match="old name of memory_encoder_device"):
        build_reward_spec({"method": "memory-r+", "memory_encoder_device": "cpu"}, encoder_device="cuda")
    with pytest.raises(ValueError, match="encoder_device='gpu'"):
        ServeConfig(encoder_device="gpu")
    assert ServeConfig().encoder_device is None  # unset: the reward option decides (default auto)


def test_a_resume_may_change_where_the_encoder_runs(tmp_path):
    from memrl.grpo.config import config_to_dict, resolve_config
    from memrl.grpo.rundir import RunDir
    from memrl.grpo.train import check_resume_matches

    values = {"method": "memory-r+", "output_dir": str(tmp_path), "memory_encoder_device": "cuda"}
    train, grpo, memory, exploration = resolve_config(values)
    RunDir(tmp_path).resolved_json.write_text(json.dumps(config_to_dict(train, grpo, memory, exploration),
                                                         default=str))
    moved = memory.replace(memory_encoder_device="cpu", memory_encoder_batch_size=8)
    check_resume_matches(tmp_path, train, moved, exploration)  # no error
    with pytest.raises(ValueError, match="memory_top_k"):
        check_resume_matches(tmp_path, train, memory.replace(memory_top_k=3), exploration)
