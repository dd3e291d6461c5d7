"""Two CPU processes (gloo on loopback) score different shards and end with identical memories."""

from __future__ import annotations

import json
import socket

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from memrl.encoders import Encoder
        from memrl.rewards.memory import MemoryRPlus

        rewards = MemoryRPlus(encoder=Encoder(), memory_explore_warmup_steps=0, memory_top_k=1)
        # one GRPO group of 4 completions straddles the two ranks, as TRL shards it
        questions = ["What is 2 + 3?", "What is 2 + 3?"] if rank == 0 else ["What is 2 + 3?", "What is 7 + 1?"]
        answers = ["5", "5"] if rank == 0 else ["5", "8"]
        for step in range(2):
            completions = [f"<think>rank {rank} step {step} try {i}</think><answer>{5 if i == 0 else 4}</answer>"
                           for i in range(2)]
            rewards.compute(prompts=questions, completions=completions, question=questions, answer=answers)
        rewards.save(os.path.join(out_dir, f"rank{rank}"))
    finally:
        dist.destroy_process_group()


def test_two_processes_hold_the_same_memory(tmp_path):
    import torch.multiprocessing as mp

    from memrl.encoders import Encoder
    from memrl.rewards.memory import MemoryRPlus

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    loaded = []
    for rank in (0, 1):
        m = MemoryRPlus(encoder=Encoder())
        m.load(tmp_path / f"rank{rank}")
        loaded.append(m)
    a, b = loaded
    for name in ("success_memory", "failure_memory"):
        ma, mb = getattr(a, name), getattr(b, name)
        assert ma.key_ids() == mb.key_ids()
        for key in ma.key_ids():
            np.testing.assert_array_equal(ma.values_of(key), mb.values_of(key))
    # both ranks' entries are there: 2 steps x 4 completions, 2 right ("5" for 2 + 3) per step
    assert a.success_memory.num_values == 4 and a.failure_memory.num_values == 4
    assert set(a.failure_memory.key_ids()) == {"What is 2 + 3?", "What is 7 + 1?"}
    state = [json.loads((tmp_path / f"rank{r}" / "state.json").read_text()) for r in (0, 1)]
    # the normalisers saw the same values on both ranks too (rewards stay comparable across ranks)
    assert state[0]["calls"] == state[1]["calls"] == 2
