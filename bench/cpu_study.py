"""CPU replication study: R1 vs Cosine vs Memory-R vs Memory-R+ on SmolLM2-135M-Instruct.

Trains every (method, seed) under identical settings on the procedural ``arith`` task, evaluates
the final model on a held-out ``arith`` set and on the first GSM8K test problems (greedy), and
writes:

* ``bench/results/cpu_study/runs/<method>-s<seed>/``: the run (checkpoints, memory, metrics) and
  ``study_result.json``;
* ``bench/results/cpu_study.json``: every run's figures plus per-method mean ± std;
* ``docs/cpu_study_curves.png``, ``docs/cpu_study_accuracy.png`` and the generated table in
  ``docs/cpu_study_results.md``.

Resumable at the (method, seed) level: a run with a ``study_result.json`` is not redone, a run
interrupted mid-training resumes from its newest checkpoint, and the aggregate is recomputed
from whatever runs exist. ``--aggregate-only`` just redraws. Several processes (``--workers``, or
copies started by hand) share the work: each claims a run with a lock file in its folder, and a
claim whose process is gone is taken over.

Example (the full study, several hours on 2 cores; run it in the background)::

    nohup python bench/cpu_study.py --steps 40 --seeds 0 1 > bench/results/cpu_study.log 2>&1 &
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
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
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep checkpoint-*/ after a run is evaluated (1.6 GB each; final/ is always kept)")
    p.add_argument("--aggregate-only", action="store_true")
    p.add_argument("--workers", type=int, default=1,
                   help="runs trained at once, each in its own process with cpu_count/workers torch threads "
                        "(2 one-thread runs get more done on 2 cores than one two-thread run; s/step is then "
                        "measured with the cores shared)")
    p.add_argument("--threads", type=int, default=0, help="torch threads of this process (0: torch's default)")
    return p.parse_args(argv)


def study_root(args: argparse.Namespace) -> Path:
    """``<out>/<study>/``: runs and the base evaluation of one study (``cpu_study`` here; the second
    study, ``bench/cpu_study_v2.py``, reuses this machinery under its own name)."""
    return args.out / getattr(args, "study", "cpu_study")


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


def evaluate(model_path: str, args: argparse.Namespace, save_dir: Path | None = None) -> dict[str, Any]:
    """Greedy accuracy on held-out arith and the first GSM8K test problems.

    With ``save_dir``, each benchmark's per-example records (prompt, completion, extracted answer,
    gold, correct) are kept, for reading what the model wrote and for the paired test (see
    :func:`write_records`).
    """
    from memrl.grpo.evaluate import EvalConfig, evaluate_benchmark
    from memrl.lm.loading import load_model

    loaded = load_model(model_path)
    out: dict[str, Any] = {}
    for bench, limit in (("arith", args.eval_arith), ("gsm8k", args.eval_gsm8k)):
        if not limit:
            continue
        cfg = EvalConfig(benchmarks=[bench], limit=limit, max_new_tokens=args.eval_max_tokens,
                         arith_level=args.arith_level, batch_size=16)
        records, summary = evaluate_benchmark(model_path, bench, cfg, loaded)
        out[f"{bench}_accuracy"] = summary["accuracy"]
        out[f"{bench}_n"] = summary["n"]
        out[f"{bench}_self_verification"] = summary["self_verification_rate"]
        if save_dir is not None:
            write_records(save_dir, bench, records)
    del loaded
    gc.collect()
    return out


# Fields of a GSM8K record that hold the shared dataset's text (question, gold solution) or the
# model's echo of it. Records are tracked by git and the dataset must not be copied into the repo,
# so the tracked file keeps only what the paired test and the accuracy need; the full records stay
# beside it, git-ignored. `arith` problems are generated by memrl itself and are kept whole.
_DATASET_TEXT_FIELDS = ("question", "prompt", "completion", "gold")


def write_records(save_dir: Path, bench: str, records: list[dict[str, Any]]) -> None:
    """Write ``eval_<bench>.jsonl`` (tracked) and, for external datasets, ``full_eval_<bench>.jsonl``."""
    from memrl.io import atomic_write_jsonl

    if bench == "arith":
        atomic_write_jsonl(save_dir / f"eval_{bench}.jsonl", records)
        return
    atomic_write_jsonl(save_dir / f"full_eval_{bench}.jsonl", records)
    slim = [{"question_sha256": _question_key(r), **{k: v for k, v in r.items() if k not in _DATASET_TEXT_FIELDS}}
            for r in records]
    atomic_write_jsonl(save_dir / f"eval_{bench}.jsonl", slim)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "?"


def _holder_alive(text: str) -> bool:
    """Whether the claim ``"<pid> <boot id>"`` belongs to a live process of this boot."""
    try:
        pid_s, boot = text.split()
        pid = int(pid_s)
    except ValueError:
        return False
    if boot != _boot_id() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(run_dir: Path) -> bool:
    """Take the run for this process (atomic lock file); False if a live process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".claim"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = lock.read_text()
            except OSError:
                holder = ""
            if _holder_alive(holder):
                return False
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {_boot_id()}")
        return True
    return False


def run_one(args: argparse.Namespace, method: str, seed: int, values_of: Any = None) -> dict[str, Any] | None:
    """Train, evaluate and record one (method, seed); None when another process is on it.
    ``values_of(args, method, seed, run_dir)`` gives the run's flat config (default :func:`run_values`)."""
    run_dir = study_root(args) / "runs" / f"{method}-s{seed}"
    result_path = run_dir / "study_result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    if not claim(run_dir):
        logger.info("%s seed %d is being trained by another process; skipped here", method, seed)
        return None
    try:
        return _train_and_evaluate(args, method, seed, run_dir, values_of or run_values)
    finally:
        (run_dir / ".claim").unlink(missing_ok=True)


def _train_and_evaluate(args: argparse.Namespace, method: str, seed: int, run_dir: Path,
                        values_of: Any) -> dict[str, Any]:
    from memrl.grpo.config import resolve_config
    from memrl.grpo.rundir import RunDir
    from memrl.grpo.train import run_training
    from memrl.io import atomic_write_json

    result_path = run_dir / "study_result.json"
    train, grpo, memory, exploration = resolve_config(values_of(args, method, seed, run_dir))
    resume = "latest" if RunDir(run_dir).checkpoints() else None
    t0 = time.time()
    # a run folder without a checkpoint holds at most the start of an interrupted run: begin afresh
    summary = run_training(train, grpo, memory, resume=resume, overwrite=resume is None, exploration_cfg=exploration)
    train_s = time.time() - t0
    rows = RunDir(run_dir).metrics()
    lengths = [r["completions/mean_length"] for r in rows if "completions/mean_length" in r]
    result = {
        "method": method, "seed": seed, "steps": summary["global_step"], "train_seconds": train_s,
        "final_mean_length": statistics.fmean(lengths[-5:]) if lengths else None,
        "seconds_per_step": summary["timing"].get("seconds_per_step"),
        "generation_share": summary["timing"].get("generation_share"),
        "reward_share": summary["timing"].get("reward_share"),
        "collapse_warnings": summary["collapse_warnings"],
        "resumed": resume is not None,
        # context for seconds_per_step: threads of this run and runs sharing the CPU
        "torch_threads": _torch_threads(), "concurrent_runs": args.workers,
    }
    del summary
    gc.collect()
    result.update(evaluate(str(run_dir / "final"), args, save_dir=run_dir))
    atomic_write_json(result_path, result)
    if not args.keep_checkpoints:  # only needed to resume an interrupted run, which is now done
        import shutil

        for ckpt in RunDir(run_dir).checkpoints():
            shutil.rmtree(ckpt, ignore_errors=True)
    return result


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def base_result(args: argparse.Namespace) -> dict[str, Any]:
    from memrl.io import atomic_write_json

    path = study_root(args) / "base.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = {"method": "base", "seed": None, **evaluate("smollm2-135m", args, save_dir=path.parent / "base")}
    atomic_write_json(path, result)
    return result


def aggregate(args: argparse.Namespace) -> dict[str, Any]:
    """Recompute cpu_study.json, plots and the Markdown table from the runs on disk."""
    from memrl.io import atomic_write_json, atomic_write_text

    root = study_root(args)
    runs = [with_logged_timing(p.parent, json.loads(p.read_text())) for p in sorted(root.glob("runs/*/study_result.json"))]
    base = json.loads((root / "base.json").read_text()) if (root / "base.json").is_file() else None
    keys = ("arith_accuracy", "gsm8k_accuracy", "final_mean_length", "seconds_per_step", "generation_share",
            "reward_share")
    per_method: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        rs = [r for r in runs if r["method"] == method]
        if not rs:
            continue
        entry: dict[str, Any] = {"n_seeds": len(rs), "collapse_warnings": sum(len(r["collapse_warnings"]) for r in rs)}
        for k in keys:
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                entry[k] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        for bench in ("arith", "gsm8k"):
            pooled = pooled_accuracy(rs, bench)
            if pooled:
                entry[f"{bench}_pooled"] = pooled
        per_method[method] = entry
    paired = paired_with_baseline(root, runs)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "docs", "aggregate_only", "keep_checkpoints")}
    data = {"settings": settings, "base": base, "runs": runs, "per_method": per_method, "paired_vs_r1": paired}
    atomic_write_json(args.out / "cpu_study.json", data)
    atomic_write_text(args.docs / "cpu_study_results.md", results_markdown(data))
    run_dirs = [p.parent for p in sorted(root.glob("runs/*/metrics.jsonl"))]
    if run_dirs:
        from memrl.grpo.report import plot_training_curves

        plot_training_curves(run_dirs, args.docs / "cpu_study_curves.png", smoothing=0.6)
    if per_method:
        plot_accuracy(data, args.docs / "cpu_study_accuracy.png")
    return data


def with_logged_timing(run_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with seconds per step and the generation/reward shares averaged over every logged
    step of ``metrics.jsonl`` (:meth:`memrl.grpo.rundir.RunDir.step_timing`).

    The trainer's own summary (what ``study_result.json`` stores) covers only the steps since the
    run's last resume; the metrics file has them all. The stored figures stay under ``*_last_segment``.
    """
    from memrl.grpo.rundir import RunDir
    from memrl.grpo.stats import first_last_means, step_timing

    logged = RunDir(run_dir).metrics()
    timing = step_timing(logged)
    if not timing:
        return result
    out = dict(result)
    # how the training batches fared: sampled correctness and groups without reward variance
    steps = [r for r in logged if "loss" in r]
    for key, metric in (("train_correct", "rewards/correctness_reward/mean"), ("zero_std_groups", "frac_reward_zero_std")):
        moved = first_last_means([r[metric] for r in steps if metric in r])
        if moved:
            out[f"{key}_first10"], out[f"{key}_last10"] = moved
    for key in ("seconds_per_step", "generation_share", "reward_share"):
        if key in result:
            out[f"{key}_last_segment"] = result[key]
        out[key] = timing[key]
    out["steps_timed"] = timing["steps_timed"]
    # whole-run training time; ``train_seconds`` of a resumed run covers its last segment only
    out["logged_train_seconds"] = timing["logged_train_seconds"]
    return out


def _question_key(record: dict[str, Any]) -> str:
    """Identity of an evaluation problem: its text hashed (slim records carry only the hash)."""
    if "question_sha256" in record:
        return record["question_sha256"]
    return hashlib.sha256(record["question"].encode()).hexdigest()


def _correct_by_question(path: Path) -> dict[str, bool]:
    from memrl.tasks.files import iter_jsonl

    return {_question_key(r): bool(r["correct"]) for _, r in iter_jsonl(path)}


def paired_with_baseline(root: Path, runs: list[dict[str, Any]], baseline: str = "r1",
                         methods: tuple[str, ...] = METHODS) -> list[dict[str, Any]]:
    """Each method against ``baseline`` on the same evaluation problems (exact McNemar test).

    Uses the per-example records (``eval_<bench>.jsonl``) of runs with the same seed; runs
    evaluated before those records were kept are left out (and so counted in ``seeds``).
    Discordant counts are also summed over seeds, for one test per method and benchmark (the
    registered ``p_value``); every seed grades the same problems, so ``items_*`` also give the
    test with the problem as its unit (:func:`memrl.stats.item_sign_test`).
    """
    from memrl.stats import item_sign_test, mcnemar_exact_p

    out = []
    for method in methods:
        if method == baseline:
            continue
        for bench in ("arith", "gsm8k"):
            only_m = only_b = 0
            seeds = []
            trials = []
            for seed in sorted({r["seed"] for r in runs if r["method"] == method}):
                mine = root / "runs" / f"{method}-s{seed}" / f"eval_{bench}.jsonl"
                theirs = root / "runs" / f"{baseline}-s{seed}" / f"eval_{bench}.jsonl"
                if not (mine.is_file() and theirs.is_file()):
                    continue
                a, b = _correct_by_question(mine), _correct_by_question(theirs)
                common = a.keys() & b.keys()
                only_m += sum(a[q] and not b[q] for q in common)
                only_b += sum(b[q] and not a[q] for q in common)
                trials += [(q, a[q], b[q]) for q in common]
                seeds.append(seed)
            if seeds:
                items = item_sign_test(trials)
                out.append({"method": method, "baseline": baseline, "benchmark": bench, "seeds": seeds,
                            "only_method": only_m, "only_baseline": only_b,
                            "p_value": mcnemar_exact_p(only_m, only_b), "items_better": items["better"],
                            "items_worse": items["worse"], "items_p": items["p"]})
    return out


def _by_problem_cells(pair: dict[str, Any]) -> str:
    """The two table cells of :func:`paired_with_baseline`'s problem-as-unit test ("– | –" without it)."""
    if "items_p" not in pair:
        return "– | –"
    return f"{pair['items_better']} / {pair['items_worse']} | {pair['items_p']:.3g}"


def pooled_accuracy(runs: list[dict[str, Any]], bench: str) -> dict[str, Any] | None:
    """Correct answers over all seeds' problems, with a 95% Wilson interval
    (:func:`memrl.stats.pooled_accuracy`)."""
    from memrl.stats import pooled_accuracy as pooled

    return pooled([(round(r[f"{bench}_accuracy"] * r[f"{bench}_n"]), r[f"{bench}_n"])
                   for r in runs if r.get(f"{bench}_n")])


def _ci(run: dict[str, Any], bench: str) -> str:
    from memrl.stats import wilson_interval

    n = run.get(f"{bench}_n")
    if not n:
        return "-"
    lo, hi = wilson_interval(round(run[f"{bench}_accuracy"] * n), n)
    return f"{100 * run[f'{bench}_accuracy']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def _first_last(run: dict[str, Any], key: str) -> str:
    if f"{key}_first10" not in run:
        return "-"
    return f"{100 * run[f'{key}_first10']:.0f} -> {100 * run[f'{key}_last10']:.0f}"


def _pooled(entry: dict[str, Any], bench: str) -> str:
    p = entry.get(f"{bench}_pooled")
    if not p:
        return "-"
    return f"{p['correct']}/{p['n']} = {100 * p['accuracy']:.1f} [{100 * p['ci95'][0]:.0f}, {100 * p['ci95'][1]:.0f}]"


def _pm(entry: dict[str, Any], key: str, scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± std`` over seeds; the bare value for one seed (no spread was measured)."""
    if key not in entry:
        return "-"
    if entry.get("n_seeds") == 1:
        return f"{scale * entry[key]['mean']:.{digits}f}"
    return f"{scale * entry[key]['mean']:.{digits}f} ± {scale * entry[key]['std']:.{digits}f}"


def results_markdown(data: dict[str, Any]) -> str:
    s = data["settings"]
    lines = [
        "# CPU study results (generated by bench/cpu_study.py)",
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
        lines.append(f"| {method} | {e['n_seeds']} | {_pm(e, 'arith_accuracy', 100)} | {_pm(e, 'gsm8k_accuracy', 100)} | "
                     f"{_pm(e, 'final_mean_length')} | {_pm(e, 'seconds_per_step')} | "
                     f"{_pm(e, 'generation_share', 100, 0)}% | {_pm(e, 'reward_share', 100, 4)}% | {e['collapse_warnings']} |")
    lines += ["", "Mean ± std over seeds. Binomial noise of the evaluation itself, pooled over seeds "
              "(correct / problems, accuracy %, 95% Wilson interval):", "",
              "| method | held-out arith | GSM8K |", "|---|---|---|"]
    if data.get("base"):
        lines.append(f"| base (no RL) | {_ci(data['base'], 'arith')} | {_ci(data['base'], 'gsm8k')} |")
    for method, e in data["per_method"].items():
        lines.append(f"| {method} | {_pooled(e, 'arith')} | {_pooled(e, 'gsm8k')} |")
    if data.get("paired_vs_r1"):
        lines += ["", "Paired with r1 on the same problems and seeds (problems only this method solved / only r1 "
                  "solved; exact McNemar p, two-sided), and with the problem as unit, since every seed grades "
                  "the same problems (problems solved on more seeds than r1 / fewer; exact sign test; added "
                  "2026-12-02, after the results):", "",
                  "| method | benchmark | seeds | only method | only r1 | p | problems better / worse | p (problems) |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in data["paired_vs_r1"]:
            by_item = _by_problem_cells(c)
            lines.append(f"| {c['method']} | {c['benchmark']} | {', '.join(map(str, c['seeds']))} | "
                         f"{c['only_method']} | {c['only_baseline']} | {c['p_value']:.3g} | {by_item} |")
    lines += ["", "Per run (accuracy % [95% Wilson interval]; training columns: mean of the first -> last 10 "
              "steps, sampled at temperature 0.9):", "",
              "| method | seed | arith % | GSM8K % | train correctness % | groups w/o reward variance % | "
              "final length | s/step | warnings |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(data["runs"], key=lambda r: (METHODS.index(r["method"]), r["seed"])):
        warns = ", ".join(f"{w['kind']}@{w['step']}" for w in r["collapse_warnings"]) or "-"
        lines.append(f"| {r['method']} | {r['seed']} | {_ci(r, 'arith')} | {_ci(r, 'gsm8k')} | "
                     f"{_first_last(r, 'train_correct')} | {_first_last(r, 'zero_std_groups')} | "
                     f"{r.get('final_mean_length') or float('nan'):.1f} | "
                     f"{r.get('seconds_per_step') or float('nan'):.1f} | {warns} |")
    return "\n".join(lines) + "\n"


def plot_accuracy(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    from memrl.io import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(data["per_method"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in zip(axes, ("arith_accuracy", "gsm8k_accuracy"), ("held-out arith", "GSM8K test (first N)")):
        means = [100 * data["per_method"][m].get(key, {}).get("mean", float("nan")) for m in methods]
        stds = [100 * data["per_method"][m].get(key, {}).get("std", 0.0) for m in methods]
        ax.bar(methods, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8, label="GRPO (mean ± std over seeds)")
        for r in data["runs"]:
            if key in r:
                ax.plot(methods.index(r["method"]), 100 * r[key], "k.", label=None)
        if data.get("base") and key in data["base"]:
            ax.axhline(100 * data["base"][key], color="tab:red", linestyle="--", label="base model")
        ax.set_title(title)
        ax.set_xlabel("reward method")
        ax.set_ylabel("greedy accuracy (%)")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


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
            base_result(args)
        if args.workers > 1 and not args.threads:
            spawn_workers(args, argv)
        else:
            for seed in args.seeds:  # seed-major: a partial study still compares every method
                for method in args.methods:
                    logger.info("run %s seed %d", method, seed)
                    result = run_one(args, method, seed)
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
