"""Throughput of the reward service (``memrl serve``) against the in-process reward on the same batches.

What it measures (results -> bench/results/serve.json):

1. In-process: the Memory-R+ reward set of ``memrl train`` (correctness, 4 format rewards,
   exploit, explore) called as TRL calls it, every function once per step on the step's batch,
   for ``--steps`` steps of ``--questions`` real GSM8K questions x ``--completions`` completions
   built from real GSM8K chains of thought (as ``bench/rewards_bench.py`` builds them).
2. The service: ``memrl serve`` started as its own process (``--respond immediate``,
   ``--commit-every`` = the step's size), and ``--clients`` client threads in this process sending
   the same samples as one OpenRLHF-style request per sample (prompt + response in ``query``);
   per-request latency, and the encoder batch sizes the service saw (``GET /stats``).

Both start with empty memories and an empty encoder cache and use one torch thread
(``OMP_NUM_THREADS=1``); model loading and server start-up are not timed. As a check the raw
exploit/explore values of the service are compared with the in-process ones.

Run: ``python bench/serve_bench.py`` (about a minute and a half on 2 cores).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")

from memrl.runtime import setup_process  # noqa: E402

setup_process()

import numpy as np  # noqa: E402

from memrl.encoders import Encoder  # noqa: E402
from memrl.io import atomic_write_json  # noqa: E402
from memrl.serve.client import RewardClient  # noqa: E402
from memrl.serve.config import build_reward_spec  # noqa: E402
from memrl.tasks.math import system_prompt  # noqa: E402
from rewards_bench import make_batch  # noqa: E402  (bench/ is the script's folder)

# a ChatML prompt as OpenRLHF's dataset would hold it (the service keys the memory by its user turn)
PROMPT = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
VALUES = {"method": "memory-r+", "memory_explore_warmup_steps": 1}


def steps_of(args) -> list[dict]:
    steps = []
    for t in range(args.steps):
        batch = make_batch(args.questions, args.completions, args.seed + t)
        batch["prompts"] = [PROMPT.format(system=system_prompt("think"), question=q) for q in batch["question"]]
        steps.append(batch)
    return steps


def in_process(steps: list[dict]) -> dict:
    encoder = Encoder()
    encoder.encode(["warm-up"])
    encoder.clear_cache()
    spec = build_reward_spec(VALUES, encoder=encoder)
    raw, t0 = [], time.perf_counter()
    for t, batch in enumerate(steps):
        kwargs = {"prompts": batch["prompts"], "completions": batch["completions"], "answer": batch["answer"],
                  "question": batch["question"], "trainer_state": SimpleNamespace(global_step=t)}
        for f in spec.funcs:
            f(**kwargs)
        result = spec.memory.compute(**kwargs)  # cached: the result the two memory rewards returned
        raw.append(np.stack([result["exploit_raw"], result["explore_raw"]]))
    seconds = time.perf_counter() - t0
    n = sum(len(b["completions"]) for b in steps)
    return {"seconds": seconds, "completions": n, "completions_per_s": n / seconds, "encoder_calls": encoder.calls,
            "_raw": raw}


def start_server(step_size: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "memrl.cli", "serve", "--method", "memory-r+", "--set",
           "memory_explore_warmup_steps=1", "--commit-every", str(step_size), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
            return proc, found.group(1)
    raise RuntimeError(f"memrl serve did not start (exit code {proc.wait()})")


def service(steps: list[dict], clients: int) -> dict:
    proc, url = start_server(len(steps[0]["completions"]))
    try:
        client = RewardClient(url)
        latencies: list[float] = []
        raw = []
        t0 = time.perf_counter()
        for batch in steps:
            n = len(batch["completions"])
            answers: list[dict | None] = [None] * n

            def one(i: int, batch=batch, answers=answers) -> None:
                query = batch["prompts"][i] + batch["completions"][i] + "<|im_end|>"
                start = time.perf_counter()
                answers[i] = client.get_reward(query=[query], prompts=[batch["prompts"][i]], labels=[batch["answer"][i]])
                latencies.append(time.perf_counter() - start)

            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                list(pool.map(one, range(n)))
            raw.append(np.array([[np.nan if a["memrl"]["raw"][k][0] is None else a["memrl"]["raw"][k][0]
                                  for a in answers] for k in ("exploit_raw", "explore_raw")]))
        seconds = time.perf_counter() - t0
        stats = client.stats()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    total = sum(len(b["completions"]) for b in steps)
    ms = np.array(latencies) * 1000
    return {"seconds": seconds, "completions": total, "completions_per_s": total / seconds, "clients": clients,
            "latency_ms": {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                           "mean": float(ms.mean()), "max": float(ms.max())},
            "commits": stats["commits"], "encoder": stats["encoder"], "_raw": raw}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=8)
    p.add_argument("--completions", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results/serve.json")
    args = p.parse_args()
    steps = steps_of(args)
    load_start = os.getloadavg()
    ours = in_process(steps)
    print(f"in-process: {ours['completions']} completions in {ours['seconds']:.1f}s "
          f"({ours['completions_per_s']:.1f}/s)", flush=True)
    served = service(steps, args.clients)
    print(f"service ({args.clients} clients): {served['completions']} completions in {served['seconds']:.1f}s "
          f"({served['completions_per_s']:.1f}/s); latency p50 {served['latency_ms']['p50']:.0f} ms, "
          f"p99 {served['latency_ms']['p99']:.0f} ms; encoder batches mean {served['encoder']['batch_size_mean']:.1f}",
          flush=True)
    diff = max(float(np.nanmax(np.abs(a - b), initial=0.0)) for a, b in zip(ours.pop("_raw"), served.pop("_raw")))
    result = {
        "batch": {"questions": args.questions, "completions_per_question": args.completions, "steps": args.steps,
                  "method": "memory-r+", "respond": "immediate"},
        "in_process": ours, "service": served,
        "ratio_service_vs_in_process": served["completions_per_s"] / ours["completions_per_s"],
        "max_abs_diff_raw_values": diff,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
    }
    atomic_write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("ratio_service_vs_in_process", "max_abs_diff_raw_values")}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
