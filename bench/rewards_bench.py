"""Memory-R+ reward throughput on a GRPO-sized batch, and top-K read latency.

What it measures (results -> bench/results/rewards.json):

1. Our path: ``MemoryRPlus.compute`` on 16 questions x 16 completions of ~150 tokens, both
   memories pre-filled to the paper's GSM8K size (N = 7,473 keys x L = 100 values, d = 384) with
   random unit vectors. Encoding runs on the batch's own texts only (encoding 747k texts here
   would take a day); memory reads and writes run at full scale.
2. A reference-style path in the same run, on the same memories and texts: one text per encoder
   call, the question re-encoded on every read, each completion encoded once per reward function
   and again on insert (6 encoder calls per completion, as the reference code does), rewards
   computed completion by completion.
3. Top-K read latency for 10^4, 10^5, 10^6 stored keys, exact (numpy) vs faiss.

Run: ``python bench/rewards_bench.py`` (about 5 minutes on 2 cores). The reference-style path
runs on the first ``--reference-questions`` questions' completions (default 4 x 16): it is
compared per completion, and all 256 would take a quarter of an hour.

``--step-share`` measures instead what the whole Memory-R+ reward set costs per optimizer step at
the paper's GSM8K batch shape, and what share of a step that is (-> bench/results/reward_share.json):

4. Every reward function of ``memory-r+`` (the five R1 rewards, exploit, explore), called once
   each on the step's batch as TRL's ``GRPOTrainer`` calls them, on ``--steps`` steps of 16
   distinct GSM8K questions x 16 completions (256) cut to 200 tokens (``max_completion_length``
   of the gsm8k-qwen2.5-0.5b preset; counted with SmolLM2's tokenizer, the policy tokenizer
   available offline), memories pre-filled to N = 7,473 keys x L = 100 values, the encoder on
   ``--device`` (``memory_encoder_device``; auto: CUDA when present) for each
   ``--encoder-batch-sizes``. The first step of each setting is a warm-up and not counted.
5. The share of a step: ``reward_s / (rest_s + reward_s)``, where ``rest_s`` is the rest of a
   paper-shape step (generation and training). It comes from a GPU run of bench/gpu_check.py
   when ``--gpu-check`` names its JSON (its measured ``step_s x (1 - reward_share)``); otherwise
   it is not known here, and the share is given for the assumed values of ``--rest-seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from memrl.runtime import setup_process

# Passive OpenMP waiting: with spinning threads, many small encoder calls on a shared 2-core CPU
# slow down several-fold, which would exaggerate the gap to the one-text-per-call path.
setup_process()

import numpy as np  # noqa: E402

from memrl.encoders import Encoder  # noqa: E402
from memrl.io import atomic_write_json  # noqa: E402
from memrl.memory import EpisodicMemory, topk_search  # noqa: E402
from memrl.paths import data_dir  # noqa: E402
from memrl.rewards import MemoryRewardConfig, MemoryRPlus  # noqa: E402
from memrl.rewards.scoring import exploit_raw, explore_raw  # noqa: E402

STEP_SHARE_OUT = "bench/results/reward_share.json"

D = 384


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, D), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def prefill(memory: EpisodicMemory, n_keys: int, n_values: int, rng: np.random.Generator) -> None:
    """Fill to N keys x L values with random unit vectors, in chunks of keys."""
    per = 256
    for start in range(0, n_keys, per):
        ids = [f"prefill-{i}" for i in range(start, min(n_keys, start + per)) for _ in range(n_values)]
        keys = np.repeat(unit(rng, len(ids) // n_values), n_values, axis=0)
        memory.add(ids, keys, unit(rng, len(ids)))


def make_batch(n_questions: int, n_completions: int, seed: int) -> dict:
    """Real GSM8K questions; completions built from real GSM8K chains of thought (~150 tokens:
    the question's own solution followed by the start of another one), varied so all texts differ."""
    rows = [json.loads(line) for line in (data_dir() / "gsm8k" / "train.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rows), size=n_questions, replace=False)
    questions, completions, answers = [], [], []
    for q in picks:
        sol, gold = rows[q]["answer"].split("####")
        for j in range(n_completions):
            other = " ".join(rows[int(rng.integers(len(rows)))]["answer"].split("####")[0].split()[:25])
            guess = gold.strip() if j % 2 == 0 else str(int(rng.integers(1, 500)))
            completions.append(f"<think>\n{sol.strip()}\nCheck: {other.strip()}\n</think>\n<answer>\n{guess}\n</answer>")
            questions.append(rows[q]["question"])
            answers.append(gold.strip())
    return {"completions": completions, "question": questions, "answer": answers}


def reference_style(rewards: MemoryRPlus, encoder: Encoder, batch: dict) -> dict:
    """The reference code's data flow on our (correct) memory: per completion, one text per encoder
    call, questions re-encoded on every read, the completion encoded for exploit, for explore and
    again for insertion; insert before score."""
    k = rewards.config.memory_top_k
    enc_s = mem_s = 0.0
    calls = 0
    outcome = rewards.outcome(completions=batch["completions"], answer=batch["answer"])
    for text, q, ok in zip(batch["completions"], batch["question"], outcome):
        t = time.perf_counter()
        q_vec = encoder.encode([q])  # insert: question
        a_vec = encoder.encode([text])  # insert: completion
        enc_s += time.perf_counter() - t
        t = time.perf_counter()
        target = rewards.success_memory if ok > 0.5 else rewards.failure_memory
        target.add([q], q_vec, a_vec)
        mem_s += time.perf_counter() - t
        t = time.perf_counter()
        q1, a1 = encoder.encode([q]), encoder.encode([text])  # exploit read
        enc_s += time.perf_counter() - t
        t = time.perf_counter()
        cen, cnt = rewards.success_memory.centroids(q1, k)
        exploit_raw(a1, cen[0])
        mem_s += time.perf_counter() - t
        t = time.perf_counter()
        q2, a2 = encoder.encode([q]), encoder.encode([text])  # explore read
        enc_s += time.perf_counter() - t
        t = time.perf_counter()
        explore_raw(rewards.failure_memory.max_similarity(q2, k, [a2])[0])
        mem_s += time.perf_counter() - t
        calls += 6
    return {"encode_s": enc_s, "memory_s": mem_s, "encoder_calls": calls}


def topk_latency(sizes: list[int], k: int, n_queries: int, repeats: int, rng: np.random.Generator) -> dict:
    out: dict[str, dict[str, float]] = {}
    keys_all = unit(rng, max(sizes))
    queries = unit(rng, n_queries)
    for n in sizes:
        keys = keys_all[:n]
        out[str(n)] = {}
        for backend in ("exact", "faiss"):
            topk_search(queries, keys, k, backend)  # warm-up (page-in, BLAS threads)
            t = time.perf_counter()
            for _ in range(repeats):
                topk_search(queries, keys, k, backend)
            out[str(n)][backend] = 1000 * (time.perf_counter() - t) / repeats
        print(f"  top-{k} of {n_queries} queries over {n:>9,} keys: exact {out[str(n)]['exact']:.1f} ms, "
              f"faiss {out[str(n)]['faiss']:.1f} ms", flush=True)
    return out


def cut_to_tokens(texts: list[str], tokenizer, max_tokens: int) -> list[str]:
    """Each text cut to its first ``max_tokens`` tokens (what ``max_completion_length`` leaves)."""
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens]))
    return out


def gpu_check_rest_seconds(path: str) -> dict | None:
    """The rest of a paper-shape step (generation + training) measured by bench/gpu_check.py on a GPU."""
    if not path or not os.path.isfile(path):
        return None
    with open(path) as f:
        check = json.load(f)
    steps = check.get("steps") or {}
    if not check.get("gpu") or steps.get("step_s") is None or steps.get("reward_share") is None:
        return None
    return {"rest_s": steps["step_s"] * (1 - steps["reward_share"]), "source": path, "device": check.get("device"),
            "step_s": steps["step_s"], "reward_share": steps["reward_share"]}


def step_share(args: argparse.Namespace) -> None:
    """The whole memory-r+ reward set per optimizer step at the paper's batch shape (docstring, 4-5)."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from memrl.lm.loading import resolve_model
    from memrl.rewards.registry import build_rewards
    from memrl.runtime import resolve_device

    rng = np.random.default_rng(args.seed)
    device = resolve_device(args.device)
    n_steps = args.steps + 1  # the first step of each setting warms up
    rows = make_batch(args.questions * n_steps, args.completions, args.seed)
    policy_tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    rows["completions"] = cut_to_tokens(rows["completions"], policy_tokenizer, args.max_completion_length)
    tokens = [len(policy_tokenizer(c, add_special_tokens=False)["input_ids"]) for c in rows["completions"]]
    per_step = args.questions * args.completions
    batches = [{k: v[i * per_step:(i + 1) * per_step] for k, v in rows.items()} for i in range(n_steps)]

    config = MemoryRewardConfig(memory_top_k=args.top_k, memory_max_keys=args.max_keys,
                                memory_max_values=args.max_values, memory_explore_warmup_steps=0,
                                memory_encoder_device=args.device)
    funcs, rewards = build_rewards("memory-r+", style="think", max_completion_length=args.max_completion_length,
                                   memory_config=config)
    names = [getattr(f, "__name__", type(f).__name__) for f in funcs]
    _ = rewards.encoder.dim  # load the model before timing
    t = time.perf_counter()
    prefill(rewards.success_memory, args.max_keys, args.max_values, rng)
    prefill(rewards.failure_memory, args.max_keys, args.max_values, rng)
    print(f"prefilled to {args.max_keys} x {args.max_values} in {time.perf_counter() - t:.0f}s; encoder on {device}; "
          f"{per_step} completions per step, {np.mean(tokens):.0f} tokens mean, {max(tokens)} max", flush=True)

    settings = {}
    step_index = 0
    for batch_size in [int(b) for b in args.encoder_batch_sizes.split(",")]:
        rewards.encoder.batch_size = batch_size  # memory_encoder_batch_size, without reloading the model
        timed = []
        for i in range(n_steps):
            batch = batches[i]
            rewards.encoder.clear_cache()  # every step's texts are new to the encoder, as in training
            before = dict(rewards.timings)
            kwargs = {"prompts": None, "completions": batch["completions"], "answer": batch["answer"],
                      "question": batch["question"], "trainer_state": SimpleNamespace(global_step=step_index)}
            t = time.perf_counter()
            per_function = {}
            for name, f in zip(names, funcs):
                t_f = time.perf_counter()
                f(**kwargs)
                per_function[name] = time.perf_counter() - t_f
            total = time.perf_counter() - t
            step_index += 1
            if i == 0:
                continue
            timed.append({"reward_s": total, "encode_s": rewards.timings["encode_s"] - before["encode_s"],
                          "memory_s": rewards.timings["memory_s"] - before["memory_s"],
                          "r1_s": sum(v for k, v in per_function.items() if not k.startswith("memory_")),
                          "per_function_s": per_function})
        mean = {k: float(np.mean([s[k] for s in timed])) for k in ("reward_s", "encode_s", "memory_s", "r1_s")}
        settings[str(batch_size)] = {**mean, "completions_per_s": per_step / mean["reward_s"], "steps": timed}
        print(f"  encoder batch {batch_size:>3}: {mean['reward_s']:.2f} s per step ({per_step / mean['reward_s']:.1f} "
              f"completions/s): encode {mean['encode_s']:.2f} s, memory {1000 * mean['memory_s']:.0f} ms, "
              f"R1 rewards {1000 * mean['r1_s']:.0f} ms", flush=True)

    best = min(settings, key=lambda b: settings[b]["reward_s"])
    reward_s = settings[best]["reward_s"]
    measured = gpu_check_rest_seconds(args.gpu_check)
    rest = [measured["rest_s"]] if measured else [float(x) for x in args.rest_seconds.split(",")]
    shares = {f"{r:g}": reward_s / (r + reward_s) for r in rest}
    print(f"reward {reward_s:.2f} s per step (encoder batch {best}); share of a step whose rest takes "
          + ", ".join(f"{r} s: {100 * v:.0f}%" for r, v in shares.items())
          + (f" (measured by {measured['source']} on {measured['device']})" if measured else " (assumed)"), flush=True)
    import torch

    result = {
        "batch": {"questions_per_step": args.questions, "completions_per_question": args.completions,
                  "completions_per_step": per_step, "max_completion_tokens": args.max_completion_length,
                  "mean_completion_tokens": float(np.mean(tokens)), "max_tokens_seen": int(max(tokens)),
                  "tokenizer": "SmolLM2-135M-Instruct (offline bundle)", "steps_timed": args.steps},
        "memory": {"max_keys": args.max_keys, "max_values": args.max_values, "top_k": args.top_k, "prefilled": True},
        "rewards": names,
        "encoder": {"name": rewards.encoder.name, "device": device,
                    "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor()
                    or platform.machine(), "torch_threads": torch.get_num_threads()},
        "by_encoder_batch_size": settings,
        "best_encoder_batch_size": int(best),
        "reward_s_per_step": reward_s,
        "rest_of_step": measured or {"rest_s": rest, "source": "assumed: no paper-shape GPU step has been measured "
                                     "here (run bench/gpu_check.py on a GPU, then this with --gpu-check)"},
        "reward_share_of_step": shares,
        "load_average_at_end": os.getloadavg(),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count()},
    }
    atomic_write_json(args.out or STEP_SHARE_OUT, result)
    print(f"wrote {args.out or STEP_SHARE_OUT}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=16)
    p.add_argument("--completions", type=int, default=16)
    p.add_argument("--max-keys", type=int, default=7473)
    p.add_argument("--max-values", type=int, default=100)
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--reference-questions", type=int, default=4,
                   help="questions (x completions) run through the slow reference-style path; its "
                        "throughput is per completion, so a subset suffices")
    p.add_argument("--topk-sizes", default="10000,100000,1000000")
    p.add_argument("--out", default=None, help=f"default bench/results/rewards.json ({STEP_SHARE_OUT} with "
                                               "--step-share)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("--step-share: the reward's share of a paper-shape step")
    g.add_argument("--step-share", action="store_true", help="measure the whole reward set per step instead")
    g.add_argument("--steps", type=int, default=2, help="timed steps per setting, after one warm-up step")
    g.add_argument("--max-completion-length", type=int, default=200)
    g.add_argument("--device", default="auto", help="memory_encoder_device: auto, cpu, cuda, cuda:N")
    g.add_argument("--encoder-batch-sizes", default="32,64,128")
    g.add_argument("--gpu-check", default="bench/results/gpu_check.json",
                   help="a bench/gpu_check.py result; when it is from a GPU, its step gives the rest of a step")
    g.add_argument("--rest-seconds", default="5,10,30,60",
                   help="assumed rest of a step (generation + training, seconds) when no GPU check is at hand")
    args = p.parse_args()
    if args.step_share:
        step_share(args)
        return
    args.out = args.out or "bench/results/rewards.json"
    rng = np.random.default_rng(args.seed)

    encoder = Encoder()
    _ = encoder.dim
    rewards = MemoryRPlus(encoder=encoder, memory_top_k=args.top_k, memory_max_keys=args.max_keys,
                          memory_max_values=args.max_values, memory_explore_warmup_steps=0)
    t = time.perf_counter()
    prefill(rewards.success_memory, args.max_keys, args.max_values, rng)
    prefill(rewards.failure_memory, args.max_keys, args.max_values, rng)
    raw_bytes = 2 * args.max_keys * args.max_values * D * 4
    print(f"prefilled 2 memories to {args.max_keys} x {args.max_values} in {time.perf_counter() - t:.1f}s; "
          f"{(rewards.success_memory.nbytes + rewards.failure_memory.nbytes) / raw_bytes:.3f}x raw bytes", flush=True)

    batch = make_batch(args.questions, args.completions, args.seed)
    tok = encoder._load().tokenizer
    n_tokens = [len(tok(c, truncation=False, verbose=False)["input_ids"]) for c in batch["completions"]]
    n = len(batch["completions"])
    print(f"batch: {args.questions} questions x {args.completions} completions, "
          f"{np.mean(n_tokens):.0f} word-piece tokens per completion on average", flush=True)

    # ours: one call computes exploit and explore and writes the batch
    calls_before = encoder.calls
    t = time.perf_counter()
    rewards.exploit_reward(completions=batch["completions"], answer=batch["answer"], question=batch["question"])
    rewards.explore_reward(completions=batch["completions"], answer=batch["answer"], question=batch["question"])
    ours_total = time.perf_counter() - t
    ours = dict(rewards.timings)
    ours_calls = encoder.calls - calls_before
    print(f"ours: {ours_total:.1f}s ({n / ours_total:.2f} completions/s); encode {ours['encode_s']:.1f}s, "
          f"memory {ours['memory_s'] * 1000:.0f} ms, {ours_calls} encoder calls", flush=True)

    # reference-style on a fresh, uncached encoder instance (the reference had no cache)
    ref_encoder = Encoder(cache_size=0)
    ref_encoder._model = encoder._load()  # same weights, no second load
    n_ref = min(n, args.reference_questions * args.completions)
    ref_batch = {k: v[:n_ref] for k, v in batch.items()}
    t = time.perf_counter()
    ref = reference_style(rewards, ref_encoder, ref_batch)
    ref_total = time.perf_counter() - t
    print(f"reference-style ({n_ref} completions): {ref_total:.1f}s ({n_ref / ref_total:.2f} completions/s); "
          f"encode {ref['encode_s']:.1f}s, "
          f"memory {ref['memory_s'] * 1000:.0f} ms, {ref['encoder_calls']} encoder calls", flush=True)

    sizes = [int(s) for s in args.topk_sizes.split(",") if s]
    print("top-K read latency:", flush=True)
    topk = topk_latency(sizes, k=20, n_queries=args.questions, repeats=5, rng=rng)

    result = {
        "batch": {"questions": args.questions, "completions_per_question": args.completions,
                  "mean_completion_tokens": float(np.mean(n_tokens))},
        "memory": {"max_keys": args.max_keys, "max_values": args.max_values, "dim": D, "top_k": args.top_k,
                   "bytes_vs_raw": (rewards.success_memory.nbytes + rewards.failure_memory.nbytes) / raw_bytes},
        "completions_per_s": n / ours_total,
        "encode_s": ours["encode_s"],
        "memory_s": ours["memory_s"],
        "total_s": ours_total,
        "encoder_calls": ours_calls,
        "memory_share": ours["memory_s"] / ours_total,
        "reference_style_completions_per_s": n_ref / ref_total,
        "reference_style": {**ref, "total_s": ref_total, "completions": n_ref},
        "speedup_vs_reference_style": (n / ours_total) / (n_ref / ref_total),
        "topk_read_ms": topk,
        "topk_read_setup": {"k": 20, "queries_per_read": args.questions, "dim": D},
        "load_average_at_end": os.getloadavg(),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpu_count": __import__("os").cpu_count()},
    }
    atomic_write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("completions_per_s", "reference_style_completions_per_s",
                                             "speedup_vs_reference_style", "memory_share")}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
