"""What the studies share: a resumable run queue, the GRPO runs of the CPU studies, their paired
tests and their table cells. The CPU studies (``cpu_study_v1``, ``cpu_study_v2``) import this
module; no study imports another study's script. The POEM studies need little of it (their
per-pair results, reports and paired tests are :mod:`memrl.poem.report` and :mod:`memrl.stats`),
only :func:`replace_marked_block`, which keeps a study's table in the README.

* **Run queue.** A run lives in its own folder ``<results>/runs/<name>-s<seed>/``; a finished run
  has a ``study_result.json`` and is never redone. Several processes share the work: each takes a
  run with :func:`claim` (an atomic lock file holding its pid and boot id) and a claim whose
  process is gone is taken over.
* **GRPO runs.** :func:`run_one` trains one run (resuming from its newest checkpoint), evaluates
  the final model greedily on held-out ``arith`` and the first GSM8K test problems, keeps the
  per-example records (:func:`write_records`) and writes ``study_result.json``.
* **Figures.** :func:`with_logged_timing` reads a run's whole logged history,
  :func:`paired_with_baseline` tests methods against a baseline on the same problems, the
  ``*_cell`` helpers format the tables and ``plot_*`` draw the plots. The statistical tests
  themselves are :mod:`memrl.stats`.

Every function takes the study's ``argparse.Namespace`` where it needs the evaluation settings
(``eval_arith``, ``eval_gsm8k``, ``eval_max_tokens``, ``arith_level``, ``workers``,
``keep_checkpoints``) and the study's results folder ``root`` explicitly.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("study_kit")

BENCHMARKS = ("arith", "gsm8k")  # what the CPU studies evaluate, in table order
TARGET_CORRECTNESS = 0.5  # "steps to reach": first step whose 5-step mean training correctness is >= this
# ``values_of(args, name, seed, run_dir)``: the flat training config of one run
RunValues = Callable[[argparse.Namespace, str, int, Path], dict[str, Any]]


# ----------------------------------------------------------------------------- run queue
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
    except PermissionError:  # alive, owned by another user
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


def release(run_dir: Path) -> None:
    """Give up this process's claim on the run."""
    (run_dir / ".claim").unlink(missing_ok=True)


def run_dir_of(root: Path, name: str, seed: int) -> Path:
    return root / "runs" / f"{name}-s{seed}"


# ----------------------------------------------------------------------------- GRPO runs
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
    slim = [{"question_sha256": question_key(r), **{k: v for k, v in r.items() if k not in _DATASET_TEXT_FIELDS}}
            for r in records]
    atomic_write_jsonl(save_dir / f"eval_{bench}.jsonl", slim)


def question_key(record: dict[str, Any]) -> str:
    """Identity of an evaluation problem: its text hashed (slim records carry only the hash)."""
    if "question_sha256" in record:
        return record["question_sha256"]
    return hashlib.sha256(record["question"].encode()).hexdigest()


def run_one(args: argparse.Namespace, root: Path, name: str, seed: int, values_of: RunValues) -> dict[str, Any] | None:
    """Train, evaluate and record one (name, seed) under ``root``; its result when it was already
    finished; None when another process is on it."""
    run_dir = run_dir_of(root, name, seed)
    result_path = run_dir / "study_result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    if not claim(run_dir):
        logger.info("%s seed %d is being trained by another process; skipped here", name, seed)
        return None
    try:
        return _train_and_evaluate(args, name, seed, run_dir, values_of)
    finally:
        release(run_dir)


def _train_and_evaluate(args: argparse.Namespace, name: str, seed: int, run_dir: Path,
                        values_of: RunValues) -> dict[str, Any]:
    from memrl.grpo.config import resolve_config
    from memrl.grpo.rundir import RunDir
    from memrl.grpo.train import run_training
    from memrl.io import atomic_write_json

    train, grpo, memory, exploration = resolve_config(values_of(args, name, seed, run_dir))
    resume = "latest" if RunDir(run_dir).checkpoints() else None
    t0 = time.time()
    # a run folder without a checkpoint holds at most the start of an interrupted run: begin afresh
    summary = run_training(train, grpo, memory, resume=resume, overwrite=resume is None, exploration_cfg=exploration)
    train_s = time.time() - t0
    rows = RunDir(run_dir).metrics()
    lengths = [r["completions/mean_length"] for r in rows if "completions/mean_length" in r]
    result = {
        "method": name, "seed": seed, "steps": summary["global_step"], "train_seconds": train_s,
        "final_mean_length": statistics.fmean(lengths[-5:]) if lengths else None,
        "seconds_per_step": summary["timing"].get("seconds_per_step"),
        "generation_share": summary["timing"].get("generation_share"),
        "reward_share": summary["timing"].get("reward_share"),
        "collapse_warnings": summary["collapse_warnings"],
        "resumed": resume is not None,
        # context for seconds_per_step: threads of this run and runs sharing the CPU
        "torch_threads": torch_threads(), "concurrent_runs": args.workers,
    }
    del summary
    gc.collect()
    result.update(evaluate(str(run_dir / "final"), args, save_dir=run_dir))
    atomic_write_json(run_dir / "study_result.json", result)
    if not args.keep_checkpoints:  # only needed to resume an interrupted run, which is now done
        for ckpt in RunDir(run_dir).checkpoints():
            shutil.rmtree(ckpt, ignore_errors=True)
    return result


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def base_result(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The untrained model's evaluation (``<root>/base.json``, its records in ``<root>/base/``),
    computed once."""
    from memrl.io import atomic_write_json

    path = root / "base.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = {"method": "base", "seed": None, **evaluate("smollm2-135m", args, save_dir=root / "base")}
    atomic_write_json(path, result)
    return result


def read_base(root: Path) -> dict[str, Any] | None:
    path = root / "base.json"
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------- the recurring-pool setting
def recurring_pool_values(args: argparse.Namespace, method: str, options: dict[str, Any], seed: int,
                          run_dir: Path) -> dict[str, Any]:
    """The flat training config of the recurring-pool setting (second and third CPU studies):
    identical across arms except the method and its memory / exploration ``options``. Reads
    ``arith_level``, ``train_pool``, ``shots``, ``steps``, ``prompts``, ``generations``,
    ``max_completion``, ``learning_rate``, ``save_steps`` and ``warmup_explore`` from ``args``."""
    values = {
        "model": "smollm2-135m", "dataset": "arith", "arith_level": args.arith_level,
        "dataset_limit": args.train_pool, "method": method, "prompt_style": "think", "shots": args.shots,
        "plot": False, "output_dir": str(run_dir), "seed": seed, "max_steps": args.steps,
        "per_device_train_batch_size": args.prompts * args.generations, "num_generations": args.generations,
        "max_completion_length": args.max_completion, "learning_rate": args.learning_rate, "beta": 0.0,
        "temperature": 0.9, "logging_steps": 1, "save_steps": args.save_steps, "save_total_limit": 1,
    }
    if method.startswith("memory"):
        if options.get("memory_semantics") == "reference":
            values["memory_explore_warmup_keys"] = args.warmup_explore
        else:
            values.update(memory_explore_warmup_steps=args.warmup_explore, memory_max_keys=args.train_pool)
    return {**values, **options}


def intrinsic_spread(root: Path) -> float:
    """Mean ``memory/intrinsic_group_std`` over every logged step of the finished Memory-R+ runs:
    the within-group spread the intrinsic rewards add, which the random control reproduces."""
    from memrl.grpo.rundir import RunDir

    values = [r["memory/intrinsic_group_std"] for p in sorted(root.glob("runs/memory-r+-*/study_result.json"))
              for r in RunDir(p.parent).metrics() if "memory/intrinsic_group_std" in r]
    if not values:
        raise RuntimeError("the r1-random control needs finished memory-r+ runs that logged "
                           "memory/intrinsic_group_std; it runs after them")
    return statistics.fmean(values)



# ----------------------------------------------------------------------------- figures
def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if "loss" in r and r.get(key) is not None]


def training_figures(run_dir: Path) -> dict[str, Any]:
    """From the run's metrics: steps to the target correctness, tag rate, and the diagnostics of
    each intrinsic term (mean over the steps where they are defined)."""
    from memrl.grpo.callbacks import signal_stall
    from memrl.grpo.rundir import RunDir

    rows = RunDir(run_dir).metrics()
    correct = _series(rows, "rewards/correctness_reward/mean")
    out: dict[str, Any] = {"train_correct_curve": correct}
    reached = next((i + 1 for i in range(4, len(correct)) if statistics.fmean(correct[i - 4:i + 1]) >= TARGET_CORRECTNESS),
                   None)
    out["steps_to_target"] = reached
    # how the run ended: a policy that writes one fixed wrong answer in the right format earns the
    # format rewards in every completion, so its groups have no reward variance (nothing to learn)
    for key, series in (("train_correct_last10", correct), ("zero_std_groups_last10", _series(rows, "frac_reward_zero_std")),
                        ("entropy_last10", _series(rows, "entropy"))):
        if series:
            out[key] = statistics.fmean(series[-10:])
    # the detector memrl train now runs; applied to the logs so runs trained before it count too
    out["signal_stall"] = signal_stall(rows)
    strict = _series(rows, "rewards/strict_format_reward/mean")
    if strict:  # strict format pays 0.5 for the full layout
        out["train_tag_rate_last10"] = statistics.fmean(strict[-10:]) / 0.5
    keys = {k for r in rows for k in r if k.startswith("diag/") and k.count("/") == 2}
    diag = {}
    for k in sorted(keys):
        vals = _series(rows, k)
        if vals:
            diag[k] = statistics.fmean(vals)
    out["diagnostics"] = diag
    return out


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


def mean_std_entry(runs: Sequence[dict[str, Any]], key: str) -> dict[str, float] | None:
    """``{"mean", "std"}`` of ``key`` over the runs that have it (std 0 for one run); None if none has."""
    from memrl.stats import mean_std

    vals = [r[key] for r in runs if r.get(key) is not None]
    if not vals:
        return None
    mean, std = mean_std(vals)
    return {"mean": mean, "std": std}


def pooled_accuracy(runs: Sequence[dict[str, Any]], bench: str) -> dict[str, Any] | None:
    """Correct answers over all seeds' problems, with a 95% Wilson interval
    (:func:`memrl.stats.pooled_accuracy`)."""
    from memrl.stats import pooled_accuracy as pooled

    return pooled([(round(r[f"{bench}_accuracy"] * r[f"{bench}_n"]), r[f"{bench}_n"])
                   for r in runs if r.get(f"{bench}_n")])


def correct_by_question(path: Path) -> dict[str, bool]:
    from memrl.tasks.files import iter_jsonl

    return {question_key(r): bool(r["correct"]) for _, r in iter_jsonl(path)}


def paired_with_baseline(root: Path, runs: Sequence[dict[str, Any]], methods: Sequence[str],
                         baseline: str = "r1") -> list[dict[str, Any]]:
    """Each of ``methods`` against ``baseline`` on the same evaluation problems (exact McNemar test).

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
        for bench in BENCHMARKS:
            only_m = only_b = 0
            seeds = []
            trials = []
            for seed in sorted({r["seed"] for r in runs if r["method"] == method}):
                mine = run_dir_of(root, method, seed) / f"eval_{bench}.jsonl"
                theirs = run_dir_of(root, baseline, seed) / f"eval_{bench}.jsonl"
                if not (mine.is_file() and theirs.is_file()):
                    continue
                a, b = correct_by_question(mine), correct_by_question(theirs)
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


# ----------------------------------------------------------------------------- table cells
def mean_std_cell(entry: dict[str, Any], key: str, scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± std`` over seeds; the bare value for one seed (no spread was measured)."""
    if key not in entry:
        return "-"
    if entry.get("n_seeds") == 1:
        return f"{scale * entry[key]['mean']:.{digits}f}"
    return f"{scale * entry[key]['mean']:.{digits}f} ± {scale * entry[key]['std']:.{digits}f}"


def ci_cell(run: dict[str, Any], bench: str) -> str:
    """One run's accuracy % with its 95% Wilson interval."""
    from memrl.stats import wilson_interval

    n = run.get(f"{bench}_n")
    if not n:
        return "-"
    lo, hi = wilson_interval(round(run[f"{bench}_accuracy"] * n), n)
    return f"{100 * run[f'{bench}_accuracy']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def pooled_cell(entry: dict[str, Any], bench: str) -> str:
    """A method's accuracy pooled over seeds: correct / problems = % [95% Wilson interval]."""
    p = entry.get(f"{bench}_pooled")
    if not p:
        return "-"
    return f"{p['correct']}/{p['n']} = {100 * p['accuracy']:.1f} [{100 * p['ci95'][0]:.0f}, {100 * p['ci95'][1]:.0f}]"


def by_problem_cells(pair: dict[str, Any]) -> str:
    """The two table cells of :func:`paired_with_baseline`'s problem-as-unit test ("– | –" without it)."""
    if "items_p" not in pair:
        return "– | –"
    return f"{pair['items_better']} / {pair['items_worse']} | {pair['items_p']:.3g}"


def plot_accuracy(data: dict[str, Any], path: Path) -> None:
    """Greedy accuracy per method (bars: mean ± std over seeds; dots: runs; line: base model)."""
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


def plot_curves(root: Path, path: Path) -> None:
    """Training curves of every finished run under ``root`` (EMA 0.6): a run still training has
    a partial metrics file, and the page is generated from finished runs only."""
    run_dirs = [p.parent for p in sorted(root.glob("runs/*/metrics.jsonl")) if (p.parent / "study_result.json").is_file()]
    if run_dirs:
        from memrl.grpo.report import plot_training_curves

        plot_training_curves(run_dirs, path, smoothing=0.6)


# ----------------------------------------------------------------------------- README
def replace_marked_block(path: Path, begin: str, end: str, block: str) -> bool:
    """Replace ``path``'s text from the line ``begin`` to the line ``end`` (both kept, as the first and
    last lines of ``block``) with ``block``, atomically; False when the markers are not there. A
    study writes its README table this way, so the README shows the committed runs' numbers."""
    from memrl.io import atomic_write_text

    text = path.read_text() if path.is_file() else ""
    if begin not in text or end not in text:
        return False
    before, rest = text.split(begin, 1)
    after = rest.split(end, 1)[1]
    new = before + block + after
    if new != text:
        atomic_write_text(path, new)
    return True
