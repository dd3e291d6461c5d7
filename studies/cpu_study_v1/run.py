"""CPU replication study: R1 vs Cosine vs Memory-R vs Memory-R+ on SmolLM2-135M-Instruct.

Trains every (method, seed) under identical settings on the procedural ``arith`` task, evaluates
the final model on a held-out ``arith`` set and on the first GSM8K test problems (greedy), and
writes:

* ``results/runs/<method>-s<seed>/``: the run (checkpoints, memory, metrics) and
  ``study_result.json``; ``results/base.json``: the untrained model;
* ``results/results.json``: every run's figures plus per-method mean ± std;
* ``curves.png``, ``accuracy.png`` and the generated table ``results.md``

(paths in this study's folder, ``studies/cpu_study_v1/``; the design and findings: ``design.md``).

Resumable at the (method, seed) level: a run with a ``study_result.json`` is not redone, a run
interrupted mid-training resumes from its newest checkpoint, and the aggregate is recomputed
from whatever runs exist. ``--aggregate-only`` just redraws. Several processes (``--workers``, or
copies started by hand) share the work: each claims a run with a lock file in its folder, and a
claim whose process is gone is taken over.

Example (the full study, several hours on 2 cores; run it in the background)::

    nohup python studies/cpu_study_v1/run.py --steps 40 --seeds 0 1 > studies/cpu_study_v1/results/run.log 2>&1 &
    python studies/cpu_study_v1/run.py --aggregate-only   # table, JSON and plots from the runs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # studies/: the shared study_kit
import study_kit as kit  # noqa: E402

METHODS = ("r1", "cosine", "memory-r", "memory-r+")  # the study's methods, in report order
logger = logging.getLogger("cpu_study")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=40, help="GRPO steps per run")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step")
    p.add_argument("--generations", type=int, default=8, help="completions per prompt (G)")
    p.add_argument("--max-completion", type=int, default=128, help="completion token cap")
    p.add_argument("--arith-level", type=int, default=1)
    p.add_argument("--train-size", type=int, default=400, help="arith training problems")
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--warmup-explore", type=int, default=10, help="Memory-R+ explore warm-up steps")
    p.add_argument("--save-steps", type=int, default=10)
    p.add_argument("--eval-arith", type=int, default=100, help="held-out arith problems")
    p.add_argument("--eval-gsm8k", type=int, default=100, help="GSM8K test problems")
    p.add_argument("--eval-max-tokens", type=int, default=256)
    p.add_argument("--no-base", action="store_true", help="skip evaluating the untrained model")
    p.add_argument("--out", type=Path, default=HERE / "results", help="runs and results.json")
    p.add_argument("--docs", type=Path, default=HERE, help="folder of results.md and the plots")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep checkpoint-*/ after a run is evaluated (1.6 GB each; final/ is always kept)")
    p.add_argument("--aggregate-only", action="store_true")
    p.add_argument("--workers", type=int, default=1,
                   help="runs trained at once, each in its own process with cpu_count/workers torch threads "
                        "(2 one-thread runs get more done on 2 cores than one two-thread run; s/step is then "
                        "measured with the cores shared)")
    p.add_argument("--threads", type=int, default=0, help="torch threads of this process (0: torch's default)")
    return p.parse_args(argv)


def run_values(args: argparse.Namespace, method: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """The flat training config of one run (identical across methods except ``method``)."""
    return {
        "model": "smollm2-135m", "dataset": "arith", "arith_level": args.arith_level,
        "dataset_limit": args.train_size, "method": method, "prompt_style": "think", "plot": False,
        "output_dir": str(run_dir), "seed": seed, "max_steps": args.steps,
        "per_device_train_batch_size": args.prompts * args.generations, "num_generations": args.generations,
        "max_completion_length": args.max_completion, "learning_rate": args.learning_rate, "beta": 0.0,
        "temperature": 0.9, "logging_steps": 1, "save_steps": args.save_steps, "save_total_limit": 1,
        "memory_explore_warmup_steps": args.warmup_explore, "memory_max_keys": args.train_size,
    }


def aggregate(args: argparse.Namespace) -> dict[str, Any]:
    """Recompute results.json, plots and the Markdown table from the runs on disk."""
    from memrl.io import atomic_write_json, atomic_write_text

    root = args.out
    runs = [kit.with_logged_timing(p.parent, json.loads(p.read_text()))
            for p in sorted(root.glob("runs/*/study_result.json"))]
    base = kit.read_base(root)
    keys = ("arith_accuracy", "gsm8k_accuracy", "final_mean_length", "seconds_per_step", "generation_share",
            "reward_share")
    per_method: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        rs = [r for r in runs if r["method"] == method]
        if not rs:
            continue
        entry: dict[str, Any] = {"n_seeds": len(rs), "collapse_warnings": sum(len(r["collapse_warnings"]) for r in rs)}
        for k in keys:
            spread = kit.mean_std_entry(rs, k)
            if spread:
                entry[k] = spread
        for bench in kit.BENCHMARKS:
            pooled = kit.pooled_accuracy(rs, bench)
            if pooled:
                entry[f"{bench}_pooled"] = pooled
        per_method[method] = entry
    paired = kit.paired_with_baseline(root, runs, METHODS)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "docs", "aggregate_only", "keep_checkpoints")}
    data = {"settings": settings, "base": base, "runs": runs, "per_method": per_method, "paired_vs_r1": paired}
    atomic_write_json(root / "results.json", data)
    atomic_write_text(args.docs / "results.md", results_markdown(data))
    kit.plot_curves(root, args.docs / "curves.png")
    if per_method:
        kit.plot_accuracy(data, args.docs / "accuracy.png")
    return data


def _first_last(run: dict[str, Any], key: str) -> str:
    if f"{key}_first10" not in run:
        return "-"
    return f"{100 * run[f'{key}_first10']:.0f} -> {100 * run[f'{key}_last10']:.0f}"


def results_markdown(data: dict[str, Any]) -> str:
    s = data["settings"]
    pm = kit.mean_std_cell
    lines = [
        "# CPU study results (generated by studies/cpu_study_v1/run.py)",
        "",
        f"SmolLM2-135M-Instruct, arith level {s['arith_level']}, {s['steps']} GRPO steps of {s['prompts']} prompts x "
        f"{s['generations']} completions (<= {s['max_completion']} tokens), seeds {s['seeds']}; greedy evaluation "
        f"on {s['eval_arith']} held-out arith and {s['eval_gsm8k']} GSM8K test problems.",
        "",
        f"| method | seeds | held-out arith % | GSM8K-{s['eval_gsm8k']} % | final length (tokens) | s/step | generation share | reward share | collapse warnings |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if data.get("base"):
        b = data["base"]
        lines.append(f"| base (no RL) | - | {100 * b.get('arith_accuracy', float('nan')):.1f} | "
                     f"{100 * b.get('gsm8k_accuracy', float('nan')):.1f} | - | - | - | - | - |")
    for method, e in data["per_method"].items():
        lines.append(f"| {method} | {e['n_seeds']} | {pm(e, 'arith_accuracy', 100)} | {pm(e, 'gsm8k_accuracy', 100)} | "
                     f"{pm(e, 'final_mean_length')} | {pm(e, 'seconds_per_step')} | "
                     f"{pm(e, 'generation_share', 100, 0)}% | {pm(e, 'reward_share', 100, 4)}% | {e['collapse_warnings']} |")
    lines += ["", "Mean ± std over seeds. Binomial noise of the evaluation itself, pooled over seeds "
              "(correct / problems, accuracy %, 95% Wilson interval):", "",
              "| method | held-out arith | GSM8K |", "|---|---|---|"]
    if data.get("base"):
        lines.append(f"| base (no RL) | {kit.ci_cell(data['base'], 'arith')} | {kit.ci_cell(data['base'], 'gsm8k')} |")
    for method, e in data["per_method"].items():
        lines.append(f"| {method} | {kit.pooled_cell(e, 'arith')} | {kit.pooled_cell(e, 'gsm8k')} |")
    if data.get("paired_vs_r1"):
        lines += ["", "Paired with r1 on the same problems and seeds (problems only this method solved / only r1 "
                  "solved; exact McNemar p, two-sided), and with the problem as unit, since every seed grades "
                  "the same problems (problems solved on more seeds than r1 / fewer; exact sign test; added "
                  "2026-12-02, after the results):", "",
                  "| method | benchmark | seeds | only method | only r1 | p | problems better / worse | p (problems) |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in data["paired_vs_r1"]:
            by_item = kit.by_problem_cells(c)
            lines.append(f"| {c['method']} | {c['benchmark']} | {', '.join(map(str, c['seeds']))} | "
                         f"{c['only_method']} | {c['only_baseline']} | {c['p_value']:.3g} | {by_item} |")
    lines += ["", "Per run (accuracy % [95% Wilson interval]; training columns: mean of the first -> last 10 "
              "steps, sampled at temperature 0.9):", "",
              "| method | seed | arith % | GSM8K % | train correctness % | groups w/o reward variance % | "
              "final length | s/step | warnings |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(data["runs"], key=lambda r: (METHODS.index(r["method"]), r["seed"])):
        warns = ", ".join(f"{w['kind']}@{w['step']}" for w in r["collapse_warnings"]) or "-"
        lines.append(f"| {r['method']} | {r['seed']} | {kit.ci_cell(r, 'arith')} | {kit.ci_cell(r, 'gsm8k')} | "
                     f"{_first_last(r, 'train_correct')} | {_first_last(r, 'zero_std_groups')} | "
                     f"{r.get('final_mean_length') or float('nan'):.1f} | "
                     f"{r.get('seconds_per_step') or float('nan'):.1f} | {warns} |")
    return "\n".join(lines) + "\n"


def spawn_workers(args: argparse.Namespace, argv: list[str] | None) -> None:
    """Run ``args.workers`` copies of this script, each with an equal share of the cores."""
    import subprocess

    threads = max(1, (os.cpu_count() or 1) // args.workers)
    cmd = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv),
           "--threads", str(threads), "--no-base"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = []
    for _ in range(args.workers):
        procs.append(subprocess.Popen(cmd, env=env))
        time.sleep(5)  # stagger the model loads
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"workers exited with {codes}")


def main(argv: list[str] | None = None) -> int:
    from memrl.runtime import setup_process

    args = parse_args(argv)
    setup_process(args.threads or None)  # before anything loads torch
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if not args.aggregate_only:
        if not args.no_base:
            kit.base_result(args, args.out)
        if args.workers > 1 and not args.threads:
            spawn_workers(args, argv)
        else:
            for seed in args.seeds:  # seed-major: a partial study still compares every method
                for method in args.methods:
                    logger.info("run %s seed %d", method, seed)
                    result = kit.run_one(args, args.out, method, seed, run_values)
                    if result is None:
                        continue
                    logger.info("done %s seed %d: %s", method, seed, {k: result.get(k) for k in
                                ("arith_accuracy", "gsm8k_accuracy", "seconds_per_step")})
                    aggregate(args)
    data = aggregate(args)
    print(json.dumps(data["per_method"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
