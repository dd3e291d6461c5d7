"""GPU check: the paper preset's Memory-R+ for a few steps on one CUDA device, a resume, and ``memrl eval``.

What it runs (each part is its own process, so each part's peak GPU memory is its own and a vLLM
engine never outlives its part):

1. ``memrl train --config gsm8k-qwen2.5-0.5b --set model=<--model> --max-steps N`` (default N = 3):
   the preset as it is (256 completions of <= 200 tokens per optimizer step, bf16, the Memory-R+
   encoder on the GPU by ``memory_encoder_device=auto``), a checkpoint with the memory at step N. Generation: TRL's vLLM colocate mode when ``import vllm`` works
   (``use_vllm=true, vllm_mode=colocate``), else TRL's transformers generation (``--generation``
   chooses).
2. ``memrl train --resume <run>/checkpoint-N --max-steps N+1``: one more step from the checkpoint.
3. ``memrl eval <run>/final --benchmarks gsm8k --limit K`` (default K = 16): vLLM when it imports,
   else transformers on the GPU.

It writes one JSON (default ``bench/results/gpu_check.json``): the device and library versions, the
time of each step (``time/step_s``) with its generation and reward shares (``time/*`` in the run's
``metrics.jsonl``; the first step, which holds the warm-up, is reported apart), the peak GPU
memory of each part (``torch.cuda.max_memory_allocated`` and ``max_memory_reserved``: what went
through PyTorch's allocator, vLLM's KV cache included only where vLLM allocates through it), whether
the memory was saved (the checkpoint's memory equals the memory at the end of part 1) and restored
(every entry of the checkpoint's memory is in the memory after the resumed step, which added its
own), and the evaluation's accuracy.

Model weights: the GPU machines reach no model hub, so ``--model`` must be a local folder holding
the model (Qwen2.5-0.5B-Instruct for the paper's setting; the JSON records the folder). The GSM8K
data comes from ``$MEMRL_DATA_DIR`` (``gsm8k/train.jsonl``, ``gsm8k/test.jsonl``).

Without CUDA it stops at once: one line on stderr naming what is missing, exit status 2.
``--allow-cpu`` runs the same parts on the CPU instead (bf16 and vLLM off, as ``memrl train`` forces
them there), only to test this script; such a result is no GPU figure and says so.

    python bench/gpu_check.py --model /models/Qwen2.5-0.5B-Instruct
    python bench/gpu_check.py --model /models/Qwen2.5-0.5B-Instruct --steps 2 --eval-limit 8 --generation hf
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "gpu_check.json"
NO_CUDA_EXIT = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="local folder of the model (required: the GPU machines reach no model hub)")
    p.add_argument("--config", default="gsm8k-qwen2.5-0.5b", help="grpo preset or YAML file (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps before the checkpoint (default: %(default)s)")
    p.add_argument("--generation", choices=("auto", "vllm", "hf"), default="auto",
                   help="auto: TRL's vLLM colocate mode when vllm imports, else transformers generation")
    p.add_argument("--eval-limit", type=int, default=16, help="GSM8K test problems evaluated (default: %(default)s)")
    p.add_argument("--eval-max-new-tokens", type=int, default=256)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra `memrl train --set` option (repeatable), e.g. vllm_gpu_memory_utilization=0.3")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--work-dir", type=Path, default=None, help="where the run goes (default: a temporary folder, "
                                                                 "deleted at the end)")
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no CUDA (tests this "
                                                            "script; gives no GPU figure)")
    p.add_argument("--part", nargs=2, metavar=("RESULT_JSON", "ARGV_JSON"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- the parts
def run_part(result_file: str, argv_json: str) -> int:
    """One part, in this process: ``memrl <argv>``, then this process's peak GPU memory."""
    from memrl.cli import main

    argv = json.loads(argv_json)
    t0 = time.perf_counter()
    rc = main(argv)  # sets the process up (memrl.runtime.setup_process) before torch loads
    import torch

    result: dict[str, Any] = {"argv": argv, "rc": rc, "seconds": time.perf_counter() - t0}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        result.update(peak_allocated_gib=torch.cuda.max_memory_allocated() / 2**30,
                      peak_reserved_gib=torch.cuda.max_memory_reserved() / 2**30,
                      device_used_at_end_gib=(total - free) / 2**30)
    Path(result_file).write_text(json.dumps(result))
    return rc


def part(name: str, argv: list[str], work: Path) -> dict[str, Any]:
    """Run ``memrl <argv>`` as a child process of this script; its result (raises if it failed)."""
    result_file = work / f"part-{name}.json"
    log_file = work / f"part-{name}.log"
    print(f"gpu_check: {name}: memrl {' '.join(argv)}  (log: {log_file})", flush=True)
    with open(log_file, "w") as log:
        proc = subprocess.run([sys.executable, __file__, "--part", str(result_file), json.dumps(argv)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0 or not result_file.is_file():
        tail = "".join(log_file.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"part {name!r} failed (exit {proc.returncode}); last lines of {log_file}:\n{tail}")
    return json.loads(result_file.read_text())


# ----------------------------------------------------------------------------- checks
def memory_contents(folder: Path) -> dict[str, dict[str, Any]]:
    """``{"success"|"failure": {key: stored vectors}}`` of a saved Memory-R+ state."""
    from memrl.memory import EpisodicMemory

    encoder = json.loads((folder / "state.json").read_text())["encoder"]
    out = {}
    for name in ("success", "failure"):
        memory = EpisodicMemory.load(folder / f"{name}.npz", encoder_name=encoder)
        out[name] = {key: memory.values_of(key) for key in memory.key_ids()}
    return out


def same_contents(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> bool:
    import numpy as np

    return all(a[n].keys() == b[n].keys() and all(np.array_equal(a[n][k], b[n][k]) for k in a[n]) for n in a)


def contained(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> bool:
    """Every stored vector of ``old`` is stored, under its key, in ``new``."""
    import numpy as np

    for name, keys in old.items():
        for key, rows in keys.items():
            if key not in new[name]:
                return False
            if not all(any(np.array_equal(r, s) for s in new[name][key]) for r in rows):
                return False
    return True


def count_values(contents: dict[str, dict[str, Any]]) -> int:
    return sum(len(rows) for keys in contents.values() for rows in keys.values())


def step_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-step timing from ``metrics.jsonl`` rows; the first step (warm-up) reported apart."""
    steps = [r for r in rows if "time/step_s" in r]
    per_step = [{"step": r["step"], **{k: r.get(f"time/{k}") for k in ("step_s", "generation_share", "reward_share")}}
                for r in steps]
    later = per_step[1:] or per_step

    def mean(key: str) -> float | None:
        values = [s[key] for s in later if s[key] is not None]
        return statistics.fmean(values) if values else None

    step_s = mean("step_s")
    reward_share = mean("reward_share")
    return {"per_step": per_step, "first_step_s": per_step[0]["step_s"] if per_step else None,
            "steps_averaged": [s["step"] for s in later], "step_s": step_s,
            "generation_share": mean("generation_share"), "reward_share": reward_share,
            "reward_s": step_s * reward_share if step_s is not None and reward_share is not None else None}


def versions() -> dict[str, Any]:
    import torch
    import transformers
    import trl

    found: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                             "cuda": torch.version.cuda, "transformers": transformers.__version__, "trl": trl.__version__}
    try:
        import vllm

        found["vllm"] = vllm.__version__
    except Exception:  # not installed, or installed but not importable on this machine
        found["vllm"] = None
    return found


# ----------------------------------------------------------------------------- main
def check(args: argparse.Namespace) -> int:
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(f"gpu_check: no CUDA device: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees none; "
              "this check needs an NVIDIA GPU (--allow-cpu only tests the script)", file=sys.stderr)
        return NO_CUDA_EXIT
    if not args.model or not Path(args.model).is_dir():
        print(f"gpu_check: --model must be a local folder holding the model (got {args.model!r}); the GPU machines "
              "reach no model hub (e.g. --model /models/Qwen2.5-0.5B-Instruct)", file=sys.stderr)
        return 2
    model = Path(args.model)
    from memrl.paths import data_dir

    data = data_dir(required=False)
    if data is None or not (data / "gsm8k" / "test.jsonl").is_file():
        print("gpu_check: GSM8K not found: set MEMRL_DATA_DIR to the shared data folder (gsm8k/train.jsonl, "
              "gsm8k/test.jsonl); the GPU machines reach no dataset hub", file=sys.stderr)
        return 2
    found = versions()
    generation = args.generation
    if generation == "auto":
        generation = "vllm" if cuda and found["vllm"] else "hf"
    if generation == "vllm" and not (cuda and found["vllm"]):
        print("gpu_check: --generation vllm needs CUDA and an importable vllm", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="memrl-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    run = work / "run"
    n = args.steps
    sets = [f"model={model.resolve()}", f"save_steps={n}", "report_to=none", *args.overrides]
    if generation == "vllm":
        sets += ["use_vllm=true", "vllm_mode=colocate"]
    train = ["train", "--config", args.config, "--max-steps", str(n), "--output-dir", str(run), "--overwrite",
             "--no-plot", *[x for s in sets for x in ("--set", s)]]
    result: dict[str, Any] = {
        "ok": False, "gpu": cuda, "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({os.cpu_count()} cores)",
        "note": None if cuda else "--allow-cpu: the parts ran on the CPU to test this script; no GPU figure",
        "versions": found, "model": str(model.resolve()), "config": args.config, "generation": generation,
        "train_overrides": sets, "steps_before_checkpoint": n, "parts": {},
    }
    try:
        result["parts"]["train"] = part("train", train, work)
        checkpoint = run / f"checkpoint-{n}"
        saved = memory_contents(checkpoint / "memrl_memory")
        at_end = memory_contents(run / "memrl_memory")
        result["parts"]["resume"] = part("resume", ["train", "--resume", str(checkpoint), "--max-steps", str(n + 1),
                                                    "--no-plot"], work)
        resumed = memory_contents(run / "memrl_memory")
        result["memory"] = {
            "saved": same_contents(saved, at_end),
            "restored": contained(saved, resumed) and count_values(resumed) > count_values(saved),
            "values_at_checkpoint": count_values(saved), "values_after_resumed_step": count_values(resumed),
            "keys_at_checkpoint": {k: len(v) for k, v in saved.items()},
        }
        from memrl.grpo.rundir import RunDir

        result["steps"] = step_summary(RunDir(run).metrics())
        resolved = RunDir(run).resolved_config() or {}
        result["resolved"] = {k: resolved.get("grpo", {}).get(k) for k in
                              ("bf16", "use_vllm", "vllm_mode", "per_device_train_batch_size",
                               "gradient_accumulation_steps", "num_generations", "max_completion_length")}
        result["resolved"].update({k: v for k, v in resolved.get("memory", {}).items() if "encoder" in k})
        # where the encoder actually ran (memory_encoder_device=auto resolves when it loads)
        loaded = [line for line in (work / "part-train.log").read_text(errors="replace").splitlines()
                  if "loaded encoder" in line]
        result["resolved"]["encoder_loaded"] = loaded[-1].split("memrl.encoders: ")[-1] if loaded else None
        evaluation = ["eval", str(run / "final"), "--benchmarks", "gsm8k", "--limit", str(args.eval_limit),
                      "--max-new-tokens", str(args.eval_max_new_tokens), "--out", str(work / "eval"),
                      "--backend", "vllm" if generation == "vllm" else "hf"]
        result["parts"]["eval"] = part("eval", evaluation, work)
        summary = json.loads((work / "eval" / "summary.json").read_text())
        result["eval"] = [{k: r.get(k) for k in ("benchmark", "n", "accuracy", "accuracy_ci95")}
                          for r in summary["results"]]
        result["eval_decoding"] = summary.get("decoding")
        result["ok"] = bool(result["memory"]["saved"] and result["memory"]["restored"])
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"gpu_check: {result['error']}", file=sys.stderr)
    finally:
        result["wall_s"] = time.perf_counter() - t0
        from memrl.io import atomic_write_json

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, result)
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    steps = result.get("steps") or {}
    print(f"gpu_check: {'ok' if result['ok'] else 'FAILED'} on {result['device']}: "
          f"{steps.get('step_s') or float('nan'):.1f} s/step (generation {steps.get('generation_share') or float('nan'):.0%}, "
          f"reward {steps.get('reward_share') or float('nan'):.0%}); memory saved {result.get('memory', {}).get('saved')}, "
          f"restored {result.get('memory', {}).get('restored')}; wrote {args.out}")
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.part:
        return run_part(*args.part)
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
