"""Two CPU processes (gloo on loopback) score different shards and end with identical memories."""

from __future__ import annotations

import json

import numpy as np

from helpers.net import free_port

QUESTIONS = {0: ["What is 2 + 3?", "What is 2 + 3?"], 1: ["What is 2 + 3?", "What is 7 + 1?"]}
ANSWERS = {0: ["5", "5"], 1: ["5", "8"]}


def _completions(rank: int, step: int) -> list[str]:
    texts = {0: ["adding two and three gives five", "two plus three, carry nothing"],
             1: ["I count up from two by three", "seven and one is eight, so four"]}
    return [f"<think>{texts[rank][i]} (step {step})</think><answer>{5 if i == 0 else 4}</answer>" for i in range(2)]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from memrl.encoders import Encoder
        from memrl.rewards.memory_rewards import MemoryRPlus

        rewards = MemoryRPlus(encoder=Encoder(), memory_explore_warmup_steps=0, memory_top_k=1)
        # one GRPO group of 4 completions straddles the two ranks, as TRL shards it
        questions, answers = QUESTIONS[rank], ANSWERS[rank]
        scored = []
        for step in range(3):
            completions = _completions(rank, step)
            r = rewards.compute(prompts=questions, completions=completions, question=questions, answer=answers)
            scored.append({k: r[k].tolist() for k in ("exploit", "explore")})
        rewards.save(os.path.join(out_dir, f"rank{rank}"))
        with open(os.path.join(out_dir, f"scored{rank}.json"), "w") as f:
            json.dump(scored, f)
    finally:
        dist.destroy_process_group()


def test_two_processes_hold_the_same_memory(tmp_path):
    import torch.multiprocessing as mp

    from memrl.encoders import Encoder
    from memrl.rewards.memory_rewards import MemoryRPlus

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
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
    # both ranks' entries are there: 3 steps x 4 completions, 2 right ("5" for 2 + 3) per step
    assert a.success_memory.num_values == 6 and a.failure_memory.num_values == 6
    assert set(a.failure_memory.key_ids()) == {"What is 2 + 3?", "What is 7 + 1?"}
    state = [json.loads((tmp_path / f"rank{r}" / "state.json").read_text()) for r in (0, 1)]
    assert state[0]["calls"] == state[1]["calls"] == 3
    # the normalisers saw the same values on both ranks (one window for the run, not one per rank)
    for norm in ("exploit_norm", "explore_norm"):
        assert state[0][norm]["values"] == state[1][norm]["values"] and state[0][norm]["values"]
    # and the rewards are exactly those of one process scoring the whole batch
    single = MemoryRPlus(encoder=Encoder(), memory_explore_warmup_steps=0, memory_top_k=1)
    scored = [json.loads((tmp_path / f"scored{r}.json").read_text()) for r in (0, 1)]
    for step in range(3):
        r = single.compute(prompts=QUESTIONS[0] + QUESTIONS[1], completions=_completions(0, step) + _completions(1, step),
                           question=QUESTIONS[0] + QUESTIONS[1], answer=ANSWERS[0] + ANSWERS[1])
        for key in ("exploit", "explore"):
            np.testing.assert_allclose(scored[0][step][key] + scored[1][step][key], r[key], rtol=1e-6, atol=1e-6)
