"""The new semantics under two CPU processes (gloo on loopback): ``group_loo`` reads the other
ranks' completions and the sequential normaliser keeps one window, so both score exactly as one
process scoring the whole batch; micro-batches with an inferred G stay in step across ranks; the
zero-variance gate reads a group that straddles the ranks as one."""

from __future__ import annotations

import json
import socket

import numpy as np

QUESTIONS = {0: ["What is 2 + 3?", "What is 2 + 3?"], 1: ["What is 2 + 3?", "What is 7 + 1?"]}
ANSWERS = {0: ["5", "5"], 1: ["5", "8"]}
CONFIGS = {
    "group_loo": dict(memory_semantics="group_loo"),
    "sequential": dict(memory_normalizer="sequential", memory_norm_flat="reference"),
    "reference": dict(memory_semantics="reference", memory_micro_batch_prompts=1, memory_explore_warmup_keys=1),
    # the group of "2 + 3" straddles the ranks (right and wrong on rank 0, right on rank 1)
    "gated": dict(memory_semantics="group_loo", memory_gate="zero_variance"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _completions(rank: int, step: int) -> list[str]:
    texts = {0: ["adding two and three gives five", "two plus three, carry nothing"],
             1: ["I count up from two by three", "seven and one is eight, so four"]}
    return [f"<think>{texts[rank][i]} (step {step})</think><answer>{5 if i == 0 else 4}</answer>" for i in range(2)]


def _rewards(name: str):
    from memrl.encoders import Encoder
    from memrl.rewards.memory_rewards import MemoryRPlus

    return MemoryRPlus(encoder=Encoder(), memory_explore_warmup_steps=0, memory_top_k=1, **CONFIGS[name])


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        out = {}
        for name in CONFIGS:
            rewards = _rewards(name)
            scored = []
            for step in range(3):
                r = rewards.compute(prompts=QUESTIONS[rank], completions=_completions(rank, step),
                                    question=QUESTIONS[rank], answer=ANSWERS[rank])
                scored.append({k: r[k].tolist() for k in ("exploit", "explore")})
            rewards.save(os.path.join(out_dir, f"{name}-rank{rank}"))
            out[name] = scored
        with open(os.path.join(out_dir, f"scored{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def test_new_semantics_under_two_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    scored = [json.loads((tmp_path / f"scored{r}.json").read_text()) for r in (0, 1)]
    for name in CONFIGS:
        state = [json.loads((tmp_path / f"{name}-rank{r}" / "state.json").read_text()) for r in (0, 1)]
        for norm in ("exploit_norm", "explore_norm"):
            assert state[0][norm] == state[1][norm]
        loaded = []
        for r in (0, 1):
            m = _rewards(name)
            m.load(tmp_path / f"{name}-rank{r}")
            loaded.append(m)
        for memory in ("success_memory", "failure_memory"):
            a, b = (getattr(m, memory) for m in loaded)
            assert a.key_ids() == b.key_ids() and a.num_values == b.num_values > 0
        if name == "reference":
            continue  # per-rank micro-batches: no single-process equivalent to compare with
        single = _rewards(name)
        for step in range(3):
            r = single.compute(prompts=QUESTIONS[0] + QUESTIONS[1],
                               completions=_completions(0, step) + _completions(1, step),
                               question=QUESTIONS[0] + QUESTIONS[1], answer=ANSWERS[0] + ANSWERS[1])
            for key in ("exploit", "explore"):
                np.testing.assert_allclose(scored[0][name][step][key] + scored[1][name][step][key], r[key],
                                           rtol=1e-6, atol=1e-6)
            if name == "gated":  # rank 1 alone sees "2 + 3" without variance: the gate must read both ranks
                assert scored[1][name][step]["exploit"][0] == 0.0 == scored[1][name][step]["explore"][0]
    # ... where the ungated values were not 0
    assert any(scored[1]["group_loo"][step][key][0] != 0.0 for step in range(3) for key in ("exploit", "explore"))
