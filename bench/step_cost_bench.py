"""What makes one study-sized GRPO step cheaper on a 2-core CPU, measured side by side in one run.

A step of the second CPU study (SmolLM2-135M-Instruct, 2 prompts x 8 completions <= 96 tokens,
the paper's 1-shot worked exemplar in every prompt, method r1) is trained for ``--steps`` steps
under each setting below, one after the other in this process; the first step of each is a
warm-up and not counted. Every setting computes the same thing (the same model, data, sampling
temperature, loss); only how it is computed differs.

* ``baseline``: what ``memrl train`` does today (torch's default threads, the model's default
  attention implementation, TRL's default generation);
* ``eager-attention``: the plain PyTorch attention instead of SDPA;
* ``continuous-batching``: TRL's transformers continuous-batching generation
  (``use_transformers_continuous_batching``);
* ``one-thread``: torch limited to one intra-op thread;
* ``pad-64``: prompts padded to a multiple of 64 tokens (fewer distinct shapes).

Writes ``bench/results/step_cost.json`` (per setting: seconds per step, generation and reward
shares, the ratio to the baseline) and prints a table; ``studies/cpu_study_v2/design.md`` quotes it.

    python bench/step_cost_bench.py --steps 3
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("step_cost_bench")

SETTINGS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "eager-attention": {"grpo": {"attn_implementation": "eager"}},
    "continuous-batching": {"grpo": {"use_transformers_continuous_batching": True}},
    "one-thread": {"threads": 1},
    "pad-64": {"grpo": {"pad_to_multiple_of": 64}},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="steps per setting (the first is a warm-up)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--arith-level", type=int, default=2)
    p.add_argument("--max-completion", type=int, default=96)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "step_cost.json")
    return p.parse_args(argv)


def study_values(args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    return {"model": "smollm2-135m", "dataset": "arith", "arith_level": args.arith_level, "dataset_limit": 24,
            "method": "r1", "prompt_style": "think", "shots": 1, "plot": False, "output_dir": output_dir,
            "seed": 0, "max_steps": args.steps, "per_device_train_batch_size": 16, "num_generations": 8,
            "max_completion_length": args.max_completion, "learning_rate": 1e-5, "beta": 0.0,
            "temperature": 0.9, "logging_steps": 1, "save_strategy": "no"}


def measure(name: str, setting: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from memrl.grpo.config import resolve_config
    from memrl.grpo.rundir import RunDir
    from memrl.grpo.train import run_training

    threads_before = torch.get_num_threads()
    if "threads" in setting:
        torch.set_num_threads(setting["threads"])
    try:
        with tempfile.TemporaryDirectory(prefix=f"step-cost-{name}-") as tmp:
            values = {**study_values(args, tmp), **setting.get("grpo", {})}  # TrainConfig or GRPOConfig keys
            train, grpo, memory, exploration = resolve_config(values)
            t0 = time.perf_counter()
            run_training(train, grpo, memory, exploration_cfg=exploration, overwrite=True)
            wall = time.perf_counter() - t0
            rows = [r for r in RunDir(tmp).metrics() if "time/step_s" in r][1:]  # first step: warm-up
    finally:
        torch.set_num_threads(threads_before)
    if not rows:
        raise RuntimeError(f"{name}: no timed steps after the warm-up; use --steps >= 2")
    return {"seconds_per_step": statistics.fmean(r["time/step_s"] for r in rows),
            "generation_share": statistics.fmean(r["time/generation_share"] for r in rows),
            "reward_share": statistics.fmean(r["time/reward_share"] for r in rows),
            "mean_length": statistics.fmean(r["completions/mean_length"] for r in rows),
            "steps_timed": len(rows), "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    from memrl.io import atomic_write_json
    from memrl.runtime import setup_process

    args = parse_args(argv)
    setup_process()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    import torch

    results: dict[str, Any] = {}
    for name in args.settings:
        logger.info("setting %s", name)
        try:
            results[name] = measure(name, SETTINGS[name], args)
        except Exception as exc:  # a setting this TRL/transformers cannot run is a result too
            logger.warning("%s failed: %s", name, exc)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    base = results.get("baseline", {}).get("seconds_per_step")
    for r in results.values():
        if base and "seconds_per_step" in r:
            r["speedup_vs_baseline"] = base / r["seconds_per_step"]
    data = {"settings": {k: SETTINGS[k] for k in args.settings}, "results": results,
            "steps": args.steps, "torch_threads_default": torch.get_num_threads(),
            "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform(),
                        "load_average_at_end": __import__("os").getloadavg()}}
    atomic_write_json(args.out, data)
    print(f"{'setting':<22}{'s/step':>9}{'gen share':>11}{'speed-up':>10}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<22}  failed: {r['error'][:60]}")
        else:
            print(f"{name:<22}{r['seconds_per_step']:>9.1f}{r['generation_share']:>11.0%}"
                  f"{r.get('speedup_vs_baseline', float('nan')):>9.2f}x")
    print(json.dumps({"out": str(args.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
