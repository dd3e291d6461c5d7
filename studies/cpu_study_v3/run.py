"""Third CPU study: is Memory-R+'s benefit the memory, or just extra reward variance?

The design, fixed before the first run, is ``design.md`` beside this file: the second study's
setting unchanged (its 9 runs are seeds 0-2 of ``r1``, ``reference`` and ``group_loo``), the
``r1-random`` control, a gated ``group_loo`` (``memory_gate=zero_variance``), seeds 3 and 4 of the
second study's arms, then, as the budget allows, ``score_then_write`` and ``outcome-ucb``. The
pre-registered analysis and the rule that sets the library default are in the design too.

    python studies/cpu_study_v3/run.py --check          # first: does this code reproduce the second study?
    nohup python studies/cpu_study_v3/run.py > run.log 2>&1 &      # resumable; rows in priority order
    python studies/cpu_study_v3/run.py --aggregate-only  # regenerate results.md / results.json

Outputs (under ``--out``, default ``studies/cpu_study_v3/results``): ``reproduction.json``,
``base.json``, ``runs/<arm>-s<seed>/`` (the small files are tracked), ``results.json``; the page
``studies/cpu_study_v3/results.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # studies/: the shared study_kit

import study_kit as kit  # noqa: E402

STUDY = "cpu_study_v3"
logger = logging.getLogger(STUDY)

# arm -> (method, options)
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "r1": ("r1", {}),
    "r1-random": ("r1-random", {}),
    "memory-r+-group_loo-gated": ("memory-r+", {"memory_semantics": "group_loo", "memory_gate": "zero_variance"}),
    "memory-r+-reference": ("memory-r+", {"memory_semantics": "reference"}),
    "memory-r+-group_loo": ("memory-r+", {"memory_semantics": "group_loo"}),
    "memory-r+-score_then_write": ("memory-r+", {"memory_semantics": "score_then_write"}),
    "outcome-ucb": ("outcome-ucb", {}),
}
# the design's rows, in priority order: (arm, seed); a row finishes before the next
ROWS: list[list[tuple[str, int]]] = [
    [("r1-random", s) for s in range(5)],
    [("memory-r+-group_loo-gated", s) for s in range(5)],
    [(arm, s) for arm in ("r1", "memory-r+-reference", "memory-r+-group_loo") for s in (3, 4)],
    [(arm, s) for arm in ("memory-r+-score_then_write", "outcome-ucb") for s in range(3)],
]
# the arms of rows 1-3 against r1: the Holm family, and the candidates for the library default
TESTED_ARMS = ("r1-random", "memory-r+-group_loo-gated", "memory-r+-reference", "memory-r+-group_loo")
MEMORY_CANDIDATES = ("memory-r+-group_loo-gated", "memory-r+-reference", "memory-r+-group_loo")
# the second study's runs that count as seeds 0-2 (arm name there -> here is the same)
V2_ARMS = ("r1", "memory-r+-reference", "memory-r+-group_loo")
V2_SEEDS = (0, 1, 2)
# r1-random's std, fixed in the design from the second study's six Memory-R+ runs
RANDOM_REWARD_STD = 0.18544
# the second study's first logged step of r1 seed 0, which this code must reproduce
V2_FIRST_STEP = {"loss": -0.135845, "grad_norm": 4.134831}
COMPLETION_STEPS = [1, 20, 40]
# the stall detector's threshold (memrl.grpo.callbacks.signal_stall), reused by the addendum's
# outcome-signal stall
STALL_SHARE = 0.9
# the snapshot the first check and row 1 ran on, before runs recorded their commit
FIRST_SNAPSHOT = "e810e54"
# the second study's settings, which this one keeps (checked against its results.json by --check)
FIXED = {"steps": 40, "prompts": 2, "generations": 8, "max_completion": 96, "train_pool": 24, "shots": 2,
         "learning_rate": 1e-5, "warmup_explore": 10, "save_steps": 10, "eval_arith": 200, "eval_max_tokens": 256,
         "arith_level": 1}
SECONDARY_FILE = "eval_arith_2shot.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", type=int, default=[1, 2, 3, 4], help="design rows to run (1-4)")
    p.add_argument("--only", nargs="+", default=None, help="run only these arm-sSEED names (e.g. r1-random-s0)")
    p.add_argument("--check", action="store_true", help="the reproduction check (one step + base evaluation), then stop")
    p.add_argument("--aggregate-only", action="store_true")
    p.add_argument("--time-budget-min", type=float, default=None,
                   help="start no new run after this many minutes (a started run finishes)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--v2-root", type=Path, default=HERE.parent / "cpu_study_v2" / "results",
                   help="the second study's results folder (its runs are seeds 0-2)")
    p.add_argument("--page", type=Path, default=HERE / "results.md")
    args = p.parse_args(argv)
    for key, value in FIXED.items():
        setattr(args, key, value)
    args.eval_gsm8k = 0  # dropped by the design
    args.keep_checkpoints = False
    args.workers = 1
    return args


# ----------------------------------------------------------------------------- runs
def run_values(args: argparse.Namespace, name: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """The second study's flat config for this arm, plus the completions log; r1-random's std is
    the design's fixed value."""
    method, options = ARMS[name]
    values = kit.recurring_pool_values(args, method, options, seed, run_dir)
    if method == "r1-random":
        values["random_reward_std"] = RANDOM_REWARD_STD
    values["save_completions_steps"] = COMPLETION_STEPS
    return values


def check_random_std(args: argparse.Namespace) -> None:
    measured = kit.intrinsic_spread(args.v2_root)
    if abs(measured - RANDOM_REWARD_STD) > 1e-5:
        raise SystemExit(f"r1-random: the design fixed std {RANDOM_REWARD_STD}, the second study's files give "
                         f"{measured:.6f}; the committed runs changed: stop and look")


def secondary_eval(args: argparse.Namespace, model_path: Path, save_dir: Path) -> dict[str, Any]:
    """The same 200 problems in the training format (two worked exemplars of the train split)."""
    import gc

    from memrl.grpo.evaluate import EvalConfig, evaluate_benchmark
    from memrl.io import atomic_write_jsonl
    from memrl.lm.loading import load_model

    loaded = load_model(str(model_path))
    cfg = EvalConfig(benchmarks=["arith"], limit=args.eval_arith, max_new_tokens=args.eval_max_tokens,
                     arith_level=args.arith_level, shots=args.shots, batch_size=16)
    records, summary = evaluate_benchmark(str(model_path), "arith", cfg, loaded)
    atomic_write_jsonl(save_dir / SECONDARY_FILE, records)
    del loaded
    gc.collect()
    tags = statistics.fmean("<answer>" in r["completion"] and "</answer>" in r["completion"] for r in records)
    return {"arith_2shot_accuracy": summary["accuracy"], "arith_2shot_n": summary["n"], "arith_2shot_tag_rate": tags}


def run_arm(args: argparse.Namespace, name: str, seed: int) -> dict[str, Any] | None:
    from memrl.io import atomic_write_json

    result = kit.run_one(args, args.out, name, seed, run_values)
    if result is None:
        return None
    run_dir = args.out / "runs" / f"{name}-s{seed}"
    if "arith_2shot_accuracy" not in result:
        final = run_dir / "final"
        if final.is_dir():
            result.update(secondary_eval(args, final, run_dir))
            result.setdefault("code_commit", code_commit())
            atomic_write_json(run_dir / "study_result.json", result)
        else:
            logger.warning("%s: no final model on this machine; the secondary evaluation is missing", run_dir)
    return result


def run_all(args: argparse.Namespace) -> None:
    t0 = time.time()
    for row in args.rows:
        for name, seed in ROWS[row - 1]:
            if args.only and f"{name}-s{seed}" not in args.only:
                continue
            if (args.out / "runs" / f"{name}-s{seed}" / "study_result.json").is_file() and \
                    "arith_2shot_accuracy" in json.loads((args.out / "runs" / f"{name}-s{seed}" / "study_result.json").read_text()):
                continue
            if args.time_budget_min is not None and (time.time() - t0) / 60 > args.time_budget_min:
                logger.info("time budget of %.0f min spent: no new run", args.time_budget_min)
                return
            if name == "r1-random":
                check_random_std(args)
            logger.info("row %d: %s seed %d", row, name, seed)
            result = run_arm(args, name, seed)
            if result is not None:
                logger.info("done %s seed %d: arith %.3f, 2-shot %.3f", name, seed, result.get("arith_accuracy", float("nan")),
                            result.get("arith_2shot_accuracy", float("nan")))
                aggregate(args)


# ----------------------------------------------------------------------------- reproduction check
def reproduction_check(args: argparse.Namespace) -> dict[str, Any]:
    """Train r1 seed 0 for one step with this code and compare the first logged step with the second
    study's; evaluate the base model (primary and secondary) too."""
    import shutil
    import tempfile

    from memrl.grpo.config import resolve_config
    from memrl.grpo.rundir import RunDir
    from memrl.grpo.train import run_training
    from memrl.io import atomic_write_json

    scratch = Path(tempfile.mkdtemp(prefix="cpu_study_v3_check_"))
    try:
        values = run_values(args, "r1", 0, scratch / "run")
        values.update(max_steps=1, save_steps=1000, save_completions_steps=[])
        train, grpo, memory, exploration = resolve_config(values)
        run_training(train, grpo, memory, exploration_cfg=exploration)
        first = next(r for r in RunDir(scratch / "run").metrics() if "loss" in r)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    step = {k: float(first[k]) for k in V2_FIRST_STEP}
    rel = {k: abs(step[k] - v) / abs(v) for k, v in V2_FIRST_STEP.items()}
    base = kit.base_result(args, args.out)
    if "arith_2shot_accuracy" not in base:
        base.update(secondary_eval(args, Path(_base_model_path()), args.out / "base"))
        atomic_write_json(args.out / "base.json", base)
    v2_base = json.loads((args.v2_root / "base.json").read_text())
    v2_settings = json.loads((args.v2_root / "results.json").read_text())["settings"]
    differs = {k: (v, v2_settings.get(k)) for k, v in FIXED.items() if v2_settings.get(k) != v}
    if differs:
        raise SystemExit(f"settings differ from the second study's (this, second): {differs}")
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": code_commit(), "cpu": _cpu_model(),
           "python": platform.python_version(), "torch": _version("torch"), "trl": _version("trl"),
           "transformers": _version("transformers"), "first_step": step, "second_study_first_step": V2_FIRST_STEP,
           "relative_difference": rel, "reproduced": all(d <= 1e-4 for d in rel.values()),
           "base_arith_accuracy": base["arith_accuracy"], "second_study_base_arith_accuracy": v2_base["arith_accuracy"],
           "base_arith_2shot_accuracy": base.get("arith_2shot_accuracy")}
    path = args.out / "reproduction.json"
    checks = json.loads(path.read_text()) if path.is_file() else []
    atomic_write_json(path, [*checks, out])
    return out


def code_commit() -> str | None:
    """The commit of the code this process runs (the study's snapshot worktree), or None without git."""
    import subprocess

    out = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def _base_model_path() -> str:
    from memrl.lm import resolve_model

    return str(resolve_model("smollm2-135m"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# ----------------------------------------------------------------------------- analysis
def load_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every finished run of this study and the second study's seeds 0-2, with their figures."""
    runs = []
    sources = [(args.out, None)] + [(args.v2_root, V2_ARMS)]
    for root, arms in sources:
        for p in sorted(root.glob("runs/*/study_result.json")):
            r = json.loads(p.read_text())
            arm = p.parent.name.rsplit("-s", 1)[0]
            if arms is not None and (arm not in arms or r["seed"] not in V2_SEEDS):
                continue
            r = kit.with_logged_timing(p.parent, r)
            r.update(kit.training_figures(p.parent))
            r["arm"], r["run_dir"], r["study"] = arm, p.parent, "v2" if arms else "v3"
            r["gated_frac"] = _mean_metric(p.parent, "memory/gated_frac")
            # addendum 2026-12-08 (design.md): the outcome-signal stall, descriptive
            from memrl.grpo.rundir import RunDir

            auc = [float(m["diag/auc_groups"]) for m in RunDir(p.parent).metrics() if "diag/auc_groups" in m]
            share = flat_correctness_share(auc, _groups_per_step(p.parent))
            r["flat_correctness_last10"] = share
            r["correctness_stall"] = share is not None and share >= STALL_SHARE
            runs.append(r)
    return runs


def flat_correctness_share(auc_groups: list[float], groups_per_step: int, window: int = 10) -> float | None:
    """Share of the GRPO groups whose completions were all right or all wrong (no correctness
    variance, so the outcome reward gives no signal), averaged over the last ``window`` logged steps;
    ``auc_groups`` is ``diag/auc_groups`` per step (the groups whose correctness varied). None
    without ``window`` logged steps.

    >>> flat_correctness_share([2, 2, 1, 0] + [0] * 8, 2)
    0.95
    """
    last = auc_groups[-window:]
    if len(last) < window:
        return None
    return 1.0 - statistics.fmean(last) / groups_per_step


def _groups_per_step(run_dir: Path) -> int:
    """GRPO groups in one logged step of the run: its generation batch over the group size."""
    grpo = json.loads((run_dir / "resolved_config.json").read_text())["grpo"]
    return grpo["generation_batch_size"] // grpo["num_generations"]


def _mean_metric(run_dir: Path, key: str) -> float | None:
    from memrl.grpo.rundir import RunDir

    vals = [float(r[key]) for r in RunDir(run_dir).metrics() if r.get(key) is not None]
    return statistics.fmean(vals) if vals else None


def _correct(run: dict[str, Any], file: str = "eval_arith.jsonl") -> dict[str, bool] | None:
    path = run["run_dir"] / file
    return kit.correct_by_question(path) if path.is_file() else None


def sign_test(runs: list[dict[str, Any]], arm: str, baseline: str) -> dict[str, Any] | None:
    """The design's primary test: problems as unit over the seeds both arms have."""
    from memrl.stats import item_sign_test, mcnemar_exact_p

    by_seed = {(r["arm"], r["seed"]): r for r in runs}
    trials, seeds, per_seed = [], [], []
    for seed in sorted({s for a, s in by_seed if a == arm}):
        if (baseline, seed) not in by_seed:
            continue
        a, b = _correct(by_seed[(arm, seed)]), _correct(by_seed[(baseline, seed)])
        if a is None or b is None:
            continue
        common = sorted(a.keys() & b.keys())
        trials += [(q, a[q], b[q]) for q in common]
        only_a, only_b = sum(a[q] and not b[q] for q in common), sum(b[q] and not a[q] for q in common)
        per_seed.append({"seed": seed, "only_arm": only_a, "only_baseline": only_b, "p": mcnemar_exact_p(only_a, only_b)})
        seeds.append(seed)
    if not seeds:
        return None
    return {"arm": arm, "baseline": baseline, "seeds": seeds, **item_sign_test(trials), "per_seed": per_seed}


def analyse(runs: list[dict[str, Any]]) -> dict[str, Any]:
    from memrl.stats import fisher_exact_p, holm_adjust, mean_std, pooled_accuracy

    per_arm: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        rs = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
        if not rs:
            continue
        acc = [r["arith_accuracy"] for r in rs]
        m, s = mean_std(acc)
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in rs], "accuracy": acc, "mean": m, "std": s,
                                 "pooled": pooled_accuracy([(round(r["arith_accuracy"] * r["arith_n"]), r["arith_n"])
                                                            for r in rs]),
                                 "stalls": sum(bool(r.get("signal_stall")) for r in rs),
                                 "correctness_stalls": sum(bool(r.get("correctness_stall")) for r in rs),
                                 "steps_to_target": [r.get("steps_to_target") for r in rs]}
        for key in ("seconds_per_step", "gated_frac", "arith_2shot_accuracy", "arith_2shot_tag_rate", "eval_tag_rate"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                entry[key] = statistics.fmean(vals)
        per_arm[arm] = entry
    tests = {arm: sign_test(runs, arm, "r1") for arm in ARMS if arm != "r1" and arm in per_arm}
    tests = {a: t for a, t in tests.items() if t is not None}
    family = [a for a in TESTED_ARMS if a in tests]
    for arm, p_holm in zip(family, holm_adjust([tests[a]["p"] for a in family])):
        tests[arm]["p_holm"] = p_holm
    r1 = per_arm.get("r1")
    for arm, t in tests.items():
        e = per_arm[arm]
        t["effect"] = e["mean"] - r1["mean"] if r1 else None
        t["reading"] = _reading(t)
        if r1:
            t["stall_fisher_p"] = fisher_exact_p(e["stalls"], len(e["seeds"]), r1["stalls"], len(r1["seeds"]))
    return {"per_arm": per_arm, "vs_r1": tests, "control": control_reading(runs, per_arm, tests),
            "default": default_rule(per_arm, tests)}


def _reading(t: dict[str, Any]) -> str:
    p = t.get("p_holm", t["p"])
    if p < 0.05:
        return "better than r1" if t["better"] > t["worse"] else "worse than r1"
    return "level with r1"


def control_reading(runs: list[dict[str, Any]], per_arm: dict[str, Any], tests: dict[str, Any]) -> dict[str, Any] | None:
    """The design's reading of the control against the best memory arm (by mean accuracy)."""
    have = [a for a in MEMORY_CANDIDATES if a in per_arm]
    if "r1-random" not in per_arm or not have:
        return None
    best = max(have, key=lambda a: per_arm[a]["mean"])
    t = sign_test(runs, best, "r1-random")
    if t is None:
        return None
    stalls_ok = per_arm["r1-random"]["stalls"] <= per_arm[best]["stalls"]
    if t["p"] >= 0.05 and stalls_ok:
        verdict = "the benefit is extra variance, not the memory"
    elif t["p"] < 0.05 and t["better"] > t["worse"]:
        verdict = "the memory adds something beyond variance"
    elif t["p"] < 0.05:
        verdict = "the random control is better than the best memory arm"
    else:
        verdict = "level on accuracy, but the control stalls more often than the best memory arm"
    return {"best_memory_arm": best, "test": t, "control_stalls": per_arm["r1-random"]["stalls"],
            "best_stalls": per_arm[best]["stalls"], "verdict": verdict}


def default_rule(per_arm: dict[str, Any], tests: dict[str, Any]) -> dict[str, Any]:
    """The design's rule for the library default, applied to whatever has run (final only when
    rows 1-3 are complete)."""
    cands = [a for a in MEMORY_CANDIDATES if a in tests and "p_holm" in tests[a]]
    better = [a for a in cands if tests[a]["reading"] == "better than r1"]
    if better:
        pick = max(better, key=lambda a: tests[a]["effect"])
        return {"arm": pick, "why": "beats r1 after Holm correction with the largest effect", "kind": "accuracy"}
    not_worse = [a for a in cands if tests[a]["reading"] != "worse than r1"]
    if not_worse:
        pick = min(not_worse, key=lambda a: (per_arm[a]["stalls"], -per_arm[a]["mean"]))
        return {"arm": pick, "why": "none beats r1; stalls least without being worse (ties: higher mean)",
                "kind": "stability"}
    return {"arm": None, "why": "every candidate is worse than r1: the default stays", "kind": "none"}


def pending(args: argparse.Namespace) -> list[str]:
    return [f"{n}-s{s}" for row in ROWS for n, s in row
            if not (args.out / "runs" / f"{n}-s{s}" / "study_result.json").is_file()]


def _portable(path: Path, results: Path) -> str:
    """A path as the results file records it, so the file does not depend on where the checkout
    lives: relative to the results folder (this study's runs), else to the repository (the second
    study's), else as it is."""
    for base in (results, ROOT):
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def aggregate(args: argparse.Namespace) -> dict[str, Any]:
    from memrl.io import atomic_write_json, atomic_write_text

    runs = load_runs(args)
    analysis = analyse(runs)
    check = args.out / "reproduction.json"
    base = args.out / "base.json"
    data = {"runs": [{k: (_portable(v, args.out) if isinstance(v, Path) else v) for k, v in r.items()
                      if k not in ("train_correct_curve",)} for r in runs],
            **analysis, "pending": pending(args),
            "reproduction": json.loads(check.read_text()) if check.is_file() else None,
            "base": json.loads(base.read_text()) if base.is_file() else None,
            "rows_1_3_complete": not any(p for p in pending(args) if not p.startswith(("memory-r+-score", "outcome")))}
    atomic_write_json(args.out / "results.json", data)
    atomic_write_text(args.page, results_markdown(data))
    if args.page.resolve() == (HERE / "results.md").resolve():  # the study's own page: the README follows
        kit.replace_marked_block(ROOT / "README.md", README_BEGIN, README_END, readme_block(data))
    if data["runs"]:
        plot_accuracy(data, args.page.parent / "accuracy.png")
    if any(args.out.glob("runs/*/study_result.json")):
        kit.plot_curves(args.out, args.page.parent / "curves.png")  # this study's runs (the second study's: its page)
    return data


def plot_accuracy(data: dict[str, Any], path: Path) -> None:
    """Held-out accuracy per arm: each seed a dot (open: the second study's runs), the mean a bar;
    the base model as a line."""
    import matplotlib

    from memrl.io import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in ARMS if a in data["per_arm"]]
    fig, ax = plt.subplots(figsize=(1.3 * len(arms) + 2, 3.8))
    ax.bar(range(len(arms)), [100 * data["per_arm"][a]["mean"] for a in arms], color="tab:blue", alpha=0.35,
           label="mean over seeds")
    for r in data["runs"]:
        x = arms.index(r["arm"])
        ax.plot(x, 100 * r["arith_accuracy"], "o", color="tab:blue", mfc="none" if r["study"] == "v2" else "tab:blue",
                ms=5)
    if data.get("base"):
        ax.axhline(100 * data["base"]["arith_accuracy"], color="tab:red", ls="--", lw=1, label="base model")
    ax.set_xticks(range(len(arms)), [a.replace("memory-r+-", "m+ ") for a in arms], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("held-out arith, greedy 0-shot (%)")
    ax.set_title("per seed: filled = this study, open = the second study's runs", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def arm_table_lines(data: dict[str, Any]) -> list[str]:
    """The per-arm table (the page's and the README's): accuracy per seed, mean ± std, pooled with
    its Wilson interval, the registered test against r1 with Holm's p, stalls, steps to 50% training
    correctness, the secondary evaluation, gated share and s/step."""
    lines = ["| arm | seeds | held-out arith % per seed | mean ± std | pooled [95% CI] | vs r1: problems better / worse, "
              "p, Holm p | reading | stalls (Fisher p vs r1) | outcome-signal stalls (addendum) | steps to 50% train "
              "correct | training format % | gated groups % | s/step |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, e in data["per_arm"].items():
        t = data["vs_r1"].get(arm)
        test = (f"{t['better']} / {t['worse']}, {t['p']:.3g}, " + (f"{t['p_holm']:.3g}" if "p_holm" in t else "–")) if t else "–"
        stalls = f"{e['stalls']}" + (f" ({t['stall_fisher_p']:.2g})" if t and "stall_fisher_p" in t else "")
        pooled = e["pooled"]
        pooled_s = (f"{pooled['correct']}/{pooled['n']} = {_pct(pooled['accuracy'])} [{_pct(pooled['ci95'][0], 0)}, "
                    f"{_pct(pooled['ci95'][1], 0)}]") if pooled else "-"
        reach = ", ".join("-" if x is None else str(x) for x in e["steps_to_target"])
        lines.append(f"| {arm} | {', '.join(map(str, e['seeds']))} | {', '.join(_pct(a) for a in e['accuracy'])} | "
                     f"{_pct(e['mean'])} ± {_pct(e['std'])} | {pooled_s} | {test} | {t['reading'] if t else '–'} | "
                     f"{stalls} | {e['correctness_stalls']} | {reach} | {_pct(e.get('arith_2shot_accuracy'))} | {_pct(e.get('gated_frac'), 0)} | "
                     f"{e.get('seconds_per_step', float('nan')):.1f} |")
    return lines


README_BEGIN = "<!-- cpu_study_v3: generated by `python studies/cpu_study_v3/run.py --aggregate-only`; do not edit -->"
README_END = "<!-- /cpu_study_v3 -->"


def readme_block(data: dict[str, Any]) -> str:
    """What the README shows of this study, between its markers: the status, the per-arm table and,
    once rows 1-3 are complete, the readings."""
    done = sum(r["study"] == "v3" for r in data["runs"])
    planned = sum(len(row) for row in ROWS[:3])
    head = ("Third CPU study ([design](studies/cpu_study_v3/design.md), [results](studies/cpu_study_v3/results.md)): "
            + ("rows 1-3 complete." if data["rows_1_3_complete"] else
               f"**in progress**, {done} of its {planned} new runs of rows 1-3 finished; partial figures, no verdict yet."))
    lines = [README_BEGIN, head, "", *arm_table_lines(data)]
    c, d = data.get("control"), data.get("default")
    if data["rows_1_3_complete"] and c:
        lines += ["", f"Memory or variance (the registered reading): {c['verdict']}."]
    if data["rows_1_3_complete"] and d:
        lines += ["", f"Default by the registered rule: `{d['arm']}` ({d['why']})."]
    return "\n".join([*lines, README_END])


def results_markdown(data: dict[str, Any]) -> str:
    from memrl.stats import fisher_exact_p

    lines = ["# Third CPU study: results (generated by `python studies/cpu_study_v3/run.py --aggregate-only`)", "",
             "Design (fixed before the first run): [design.md](design.md). Seeds 0-2 of `r1`, `memory-r+-reference` "
             "and `memory-r+-group_loo` are the second study's runs.", ""]
    if not data["rows_1_3_complete"]:
        lines += [f"**In progress**: pending runs {', '.join(data['pending'])}. Figures below are partial; the "
                  "default rule is applied only when rows 1-3 are complete.", ""]
    for c in data["reproduction"] or []:
        lines.append(f"Reproduction check ({c['date']}, code {c.get('commit') or FIRST_SNAPSHOT}, {c['cpu']}, "
                     f"torch {c['torch']}, TRL {c['trl']}): first step "
                     f"loss {c['first_step']['loss']:.6f} / grad_norm {c['first_step']['grad_norm']:.6f} vs the second "
                     f"study's {c['second_study_first_step']['loss']} / {c['second_study_first_step']['grad_norm']}: "
                     f"{'reproduced' if c['reproduced'] else 'NOT reproduced'}; base model {_pct(c['base_arith_accuracy'])}% "
                     f"(second study {_pct(c['second_study_base_arith_accuracy'])}%), in the training format "
                     f"{_pct(c['base_arith_2shot_accuracy'])}%.")
        lines.append("")  # one paragraph per check
    lines += [*arm_table_lines(data)]
    lines += ["", "Per seed against r1 (only the arm solved / only r1 solved, exact McNemar p; descriptive):", "",
              "| arm | seed | only arm | only r1 | p |", "|---|---|---|---|---|"]
    for arm, t in data["vs_r1"].items():
        for s in t["per_seed"]:
            lines.append(f"| {arm} | {s['seed']} | {s['only_arm']} | {s['only_baseline']} | {s['p']:.3g} |")
    c = data.get("control")
    if c:
        t = c["test"]
        lines += ["", f"**Memory or variance** (the design's reading): best memory arm by mean accuracy "
                  f"`{c['best_memory_arm']}` vs `r1-random`: {t['better']} problems better / {t['worse']} worse, "
                  f"p = {t['p']:.3g}; stalls {c['best_stalls']} vs {c['control_stalls']} (control): {c['verdict']}."]
    d = data.get("default")
    if d and data["rows_1_3_complete"]:
        lines += ["", f"**Default by the registered rule**: `{d['arm']}` ({d['why']})."]
    lines += ["", "**Addendum (2026-12-08, written after `r1-random` seed 0's results and seed 1's training log were seen; descriptive, not part "
              "of the registered tests).** The registered stall detector counts groups without *reward* variance. "
              "`r1-random`'s noise gives every group reward variance, so its stall count is 0 by construction "
              "(and the intrinsic terms do the same, in part, for the memory arms): the control's clause "
              "\"stalls no more often\" cannot fail. What the question is about is the *outcome* signal: an "
              "outcome-signal stall is a run where at least 90% of the groups had no correctness variance (all "
              "right or all wrong) over the last 10 logged steps.", "",
              "| arm | seeds | outcome-signal stalls | Fisher p vs r1 | groups without correctness variance % (mean over seeds) |",
              "|---|---|---|---|---|"]
    r1 = data["per_arm"].get("r1")
    for arm, e in data["per_arm"].items():
        shares = [r["flat_correctness_last10"] for r in data["runs"]
                  if r["arm"] == arm and r.get("flat_correctness_last10") is not None]
        fisher = (f"{fisher_exact_p(e['correctness_stalls'], len(e['seeds']), r1['correctness_stalls'], len(r1['seeds'])):.2g}"
                  if r1 and arm != "r1" else "–")
        lines.append(f"| {arm} | {len(e['seeds'])} | {e['correctness_stalls']} | {fisher} | "
                     f"{_pct(statistics.fmean(shares)) if shares else '-'} |")
    lines += ["", "Runs (training figures over the last 10 logged steps):", "",
              "| run | study | code | held-out % | training format % | train correct % | groups without reward variance % | "
              "stall | groups without correctness variance % | outcome-signal stall |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(data["runs"], key=lambda r: (list(ARMS).index(r["arm"]), r["seed"])):
        code = "second study's" if r["study"] == "v2" else (r.get("code_commit") or FIRST_SNAPSHOT)
        lines.append(f"| {r['arm']}-s{r['seed']} | {r['study']} | {code} | {_pct(r['arith_accuracy'])} | "
                     f"{_pct(r.get('arith_2shot_accuracy'))} | {_pct(r.get('train_correct_last10'))} | "
                     f"{_pct(r.get('zero_std_groups_last10'))} | {'yes' if r.get('signal_stall') else 'no'} | "
                     f"{_pct(r.get('flat_correctness_last10'))} | {'yes' if r.get('correctness_stall') else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from memrl.runtime import setup_process

    args = parse_args(argv)
    setup_process(args.threads or None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.check:
        print(json.dumps(reproduction_check(args), indent=2))
        return 0
    if not args.aggregate_only:
        run_all(args)
    data = aggregate(args)
    print(json.dumps({a: {"mean": e["mean"], "seeds": e["seeds"]} for a, e in data["per_arm"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
