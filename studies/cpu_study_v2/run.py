"""Second CPU study: does any Memory-R+ semantics beat R1 where memory can matter?

Differences from the first study (``studies/cpu_study_v1/``; both run on ``study_kit``), fixed
before any result of this study was seen (``design.md`` in this folder gives the reasons):

* questions **recur**: a fixed pool of ``--train-pool`` arith problems (24: 40 steps x 2 prompts
  = 80 prompts, 3.3 epochs), so the memory holds the question being scored from the second epoch;
* worked exemplars in every training prompt, so the model writes the ``<think>``/``<answer>``
  tags: the design started from the paper's 1-shot exemplar; ``--probe`` measured the base
  model's answer-tag rate at 22% with one exemplar and 55% with two (0% without), so the study
  uses two (``--shots 2``), a change made on that measurement before any training run;
* the arith **level** whose base *sampled* correctness (temperature 0.9) is 10-30%, measured by
  ``--probe`` and recorded in ``probe.json``;
* completions capped at 96 tokens; held-out evaluation on 200 arith test problems of that level
  (greedy, 0-shot as the paper evaluates) and the first 100 GSM8K test problems;
* methods (``VARIANTS``), in this priority order, each for every seed before the next:
  ``r1``; ``memory-r+`` under ``reference``, ``group_loo`` and ``score_then_write``;
  ``outcome-ucb``; ``r1-random``, the control: R1 plus Gaussian noise whose std is the mean
  within-group spread of the intrinsic rewards (``memory/intrinsic_group_std``) over the finished
  Memory-R+ runs, measured when the control starts (it runs last);
* the ``reference`` warm-up of 500 failure keys cannot be reached with a 24-question pool (with
  the reference's key rule a step adds at most one key); it is scaled to 10 keys, about the 10
  optimizer steps the other semantics wait (``--warmup-explore``).

Outputs, in this study's folder ``studies/cpu_study_v2/``: ``results/`` (runs, ``probe.json``,
``base.json``, ``results.json``), ``results.md`` and the plots ``curves.png`` /
``accuracy.png``. Resumable like the first
study: finished runs are kept, an interrupted one resumes from its checkpoint.

    python studies/cpu_study_v2/run.py --probe            # once: level and tag rate of the base model
    nohup python studies/cpu_study_v2/run.py > studies/cpu_study_v2/results/run.log 2>&1 &
    python studies/cpu_study_v2/run.py --aggregate-only   # table, JSON and plots from the runs
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # studies/: the shared study_kit
import study_kit as kit  # noqa: E402  (the run machinery: claims, training, evaluation, records, paired test)

STUDY = "cpu_study_v2"
logger = logging.getLogger(STUDY)

# run name -> (method, options); the priority order of the design
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "r1": ("r1", {}),
    "memory-r+-reference": ("memory-r+", {"memory_semantics": "reference"}),
    "memory-r+-group_loo": ("memory-r+", {"memory_semantics": "group_loo"}),
    "memory-r+-score_then_write": ("memory-r+", {"memory_semantics": "score_then_write"}),
    "outcome-ucb": ("outcome-ucb", {}),
    # the control: R1 plus pure noise of the memory variants' within-group intrinsic spread
    "r1-random": ("r1-random", {}),
}
PROBE_LEVELS = (1, 2, 3)
PROBE_BAND = (0.10, 0.30)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--max-completion", type=int, default=96)
    p.add_argument("--arith-level", type=int, default=None, help="default: the level --probe chose")
    p.add_argument("--train-pool", type=int, default=24, help="arith training problems (they recur)")
    p.add_argument("--shots", type=int, default=2,
                   help="worked exemplars in each training prompt (2: the probe's measured reason, design.md)")
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--warmup-explore", type=int, default=10,
                   help="explore warm-up: optimizer steps (memrl semantics) / failure keys (reference)")
    p.add_argument("--save-steps", type=int, default=10)
    p.add_argument("--eval-arith", type=int, default=200)
    p.add_argument("--eval-gsm8k", type=int, default=100)
    p.add_argument("--eval-max-tokens", type=int, default=256)
    p.add_argument("--probe", action="store_true", help="measure the base model per level (then stop)")
    p.add_argument("--probe-questions", type=int, default=12)
    p.add_argument("--probe-samples", type=int, default=8)
    p.add_argument("--no-base", action="store_true")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--aggregate-only", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results", help="runs, probe and results.json")
    p.add_argument("--docs", type=Path, default=HERE, help="folder of results.md and the plots")
    args = p.parse_args(argv)
    args.study = STUDY  # recorded in the settings
    args.workers = 1  # one run at a time (study_kit records it beside each run's timing)
    return args


# ----------------------------------------------------------------------------- probe
def probe(args: argparse.Namespace) -> dict[str, Any]:
    """Base-model sampled correctness per level (with the exemplar) and the tag rate with and
    without it, at temperature 0.9 and the study's completion cap."""
    from memrl.io import atomic_write_json
    from memrl.lm import generate, load_model
    from memrl.rewards.outcome import is_correct_numeric
    from memrl.tasks.arith import generate_problems
    from memrl.tasks.math import to_training_rows

    model, tokenizer = load_model("smollm2-135m")
    path = args.out / "probe.json"
    out: dict[str, Any] = {"temperature": 0.9, "max_new_tokens": args.max_completion,
                           "questions": args.probe_questions, "samples": args.probe_samples, "levels": {}}
    if path.is_file():  # resumable: configurations already measured are kept
        out = json.loads(path.read_text())
    # every level with the study's exemplar count, and the tag rate with 0, 1 and 2 exemplars
    configs = [(level, 1) for level in PROBE_LEVELS] + [(2, 0), (1, 0), (1, 2)]
    for level, shots in configs:
        if f"level{level}-shots{shots}" in out["levels"]:
            continue
        problems = generate_problems(args.probe_questions + 8, level=level, seed=11, split="train")
        rows = to_training_rows(problems[: args.probe_questions], "think", shots,
                                exemplar_pool=problems[args.probe_questions:], seed=0)
        t0 = time.perf_counter()
        outs = generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=args.max_completion,
                        temperature=0.9, num_return_sequences=args.probe_samples, batch_size=4, seed=0)
        texts = [(o["text"], rows[o["prompt_index"]]["answer"]) for o in outs]
        entry = {"sampled_correct": statistics.fmean(is_correct_numeric(t, a) for t, a in texts),
                 "tag_rate": statistics.fmean("<answer>" in t and "</answer>" in t for t, _ in texts),
                 "think_tag_rate": statistics.fmean("<think>" in t for t, _ in texts),
                 "mean_tokens": statistics.fmean(len(o["token_ids"]) for o in outs),
                 "seconds": time.perf_counter() - t0}
        out["levels"][f"level{level}-shots{shots}"] = entry
        logger.info("probe level %d, %d-shot: %s", level, shots, entry)
        atomic_write_json(path, out)
    # the level is chosen on the paper's 1-shot prompt, the setting the design started from
    in_band = [lv for lv in PROBE_LEVELS
               if PROBE_BAND[0] <= out["levels"][f"level{lv}-shots1"]["sampled_correct"] <= PROBE_BAND[1]]
    out["chosen_level"] = in_band[0] if in_band else None
    atomic_write_json(path, out)
    return out


def chosen_level(args: argparse.Namespace) -> int:
    if args.arith_level is not None:
        return args.arith_level
    path = args.out / "probe.json"
    if not path.is_file():
        raise SystemExit("no probe.json: run `python studies/cpu_study_v2/run.py --probe` first (or pass --arith-level)")
    level = json.loads(path.read_text()).get("chosen_level")
    if level is None:
        raise SystemExit(f"{path}: no level had base sampled correctness in {PROBE_BAND}; pass --arith-level")
    return int(level)


# ----------------------------------------------------------------------------- runs
def run_values(args: argparse.Namespace, name: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """The flat training config of one run: identical across variants except the method and its
    memory / exploration options; the control's std is measured on this study's Memory-R+ runs."""
    method, options = VARIANTS[name]
    values = kit.recurring_pool_values(args, method, options, seed, run_dir)
    if method == "r1-random":
        values["random_reward_std"] = kit.intrinsic_spread(args.out)
    return values


def run_all(args: argparse.Namespace) -> None:
    for name in args.variants:  # priority order: a row of seeds before the next method
        for seed in args.seeds:
            logger.info("run %s seed %d", name, seed)
            result = kit.run_one(args, args.out, name, seed, run_values)
            if result is not None:
                logger.info("done %s seed %d: arith %.3f", name, seed, result.get("arith_accuracy", float("nan")))
                aggregate(args)


# ----------------------------------------------------------------------------- aggregate
def eval_tag_rate(run_dir: Path) -> float | None:
    from memrl.tasks.files import iter_jsonl

    path = run_dir / "eval_arith.jsonl"
    if not path.is_file():
        return None
    recs = [r for _, r in iter_jsonl(path)]
    return statistics.fmean("<answer>" in r["completion"] and "</answer>" in r["completion"] for r in recs)


def verdict(pairs: list[dict[str, Any]]) -> str:
    pooled = [p for p in pairs if p["benchmark"] == "arith"]
    if not pooled:
        return "pending"
    p = pooled[0]
    if p["p_value"] < 0.05:
        return "better than R1" if p["only_method"] > p["only_baseline"] else "worse than R1"
    return "level with R1 (no significant difference)"


def aggregate(args: argparse.Namespace) -> dict[str, Any]:
    from memrl.io import atomic_write_json, atomic_write_text

    root = args.out
    runs = []
    for p in sorted(root.glob("runs/*/study_result.json")):
        r = kit.with_logged_timing(p.parent, json.loads(p.read_text()))
        r.update(kit.training_figures(p.parent))
        r["eval_tag_rate"] = eval_tag_rate(p.parent)
        runs.append(r)
    base = kit.read_base(root)
    per: dict[str, dict[str, Any]] = {}
    for name in VARIANTS:
        rs = [r for r in runs if r["method"] == name]
        if not rs:
            continue
        entry: dict[str, Any] = {"n_seeds": len(rs), "seeds": sorted(r["seed"] for r in rs),
                                 "collapse_warnings": sum(len(r["collapse_warnings"]) for r in rs)}
        for k in ("arith_accuracy", "gsm8k_accuracy", "final_mean_length", "seconds_per_step", "generation_share",
                  "reward_share", "eval_tag_rate", "train_tag_rate_last10"):
            spread = kit.mean_std_entry(rs, k)
            if spread:
                entry[k] = spread
        reached = [r["steps_to_target"] for r in rs]
        entry["steps_to_target"] = reached
        for bench in kit.BENCHMARKS:
            pooled = kit.pooled_accuracy(rs, bench)
            if pooled:
                entry[f"{bench}_pooled"] = pooled
        diag_keys = sorted({k for r in rs for k in r["diagnostics"]})
        entry["diagnostics"] = {k: statistics.fmean(r["diagnostics"][k] for r in rs if k in r["diagnostics"])
                                for k in diag_keys}
        per[name] = entry
    methods = tuple(VARIANTS)
    pooled_pairs = kit.paired_with_baseline(root, runs, methods)
    per_seed = []
    for r in runs:
        if r["method"] != "r1":
            per_seed += [{**c, "seed": r["seed"]} for c in kit.paired_with_baseline(
                root, [x for x in runs if x["seed"] == r["seed"]], (r["method"],))]
    for name, entry in per.items():
        if name != "r1":
            entry["verdict"] = verdict([c for c in pooled_pairs if c["method"] == name])
            # the rule above is the design's (pooled test); the per-seed tally is shown beside it
            # so that a pooled result carried by one seed is visible
            seeds = [c for c in per_seed if c["method"] == name and c["benchmark"] == "arith"]
            tally = {"better": 0, "worse": 0, "level": 0}
            for c in seeds:
                tally["level" if c["p_value"] >= 0.05 else
                      "better" if c["only_method"] > c["only_baseline"] else "worse"] += 1
            entry["per_seed_verdicts"] = tally
            if seeds:
                entry["verdict"] += (f" (pooled; per seed, p < 0.05: {tally['better']} better, {tally['worse']} worse, "
                                     f"{tally['level']} level)")
            pooled_arith = [c for c in pooled_pairs if c["method"] == name and c["benchmark"] == "arith"]
            if pooled_arith and len(pooled_arith[0]["seeds"]) > 1:  # the same problems under every seed
                c = pooled_arith[0]
                entry["verdict"] += (f"; problem as unit: {c['items_better']} better / {c['items_worse']} worse, "
                                     f"p = {c['items_p']:.3g}")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("out", "docs", "aggregate_only", "keep_checkpoints", "probe")}
    probe_path = root / "probe.json"
    data = {"settings": settings, "probe": json.loads(probe_path.read_text()) if probe_path.is_file() else None,
            "base": base, "runs": runs, "per_method": per, "paired_vs_r1": pooled_pairs,
            "paired_vs_r1_per_seed": per_seed,
            "pending": [f"{n}-s{s}" for n in args.variants for s in args.seeds
                        if not (root / "runs" / f"{n}-s{s}" / "study_result.json").is_file()]}
    atomic_write_json(root / "results.json", data)
    atomic_write_text(args.docs / "results.md", results_markdown(data))
    kit.plot_curves(root, args.docs / "curves.png")
    if per:
        kit.plot_accuracy(data, args.docs / "accuracy.png")
    return data


def results_markdown(data: dict[str, Any]) -> str:
    s = data["settings"]
    pm = kit.mean_std_cell
    lines = ["# Second CPU study results (generated by studies/cpu_study_v2/run.py)", "",
             f"SmolLM2-135M-Instruct, arith level {s['arith_level']}, a pool of {s['train_pool']} recurring "
             f"questions, {s['shots']}-shot prompts, {s['steps']} GRPO steps of {s['prompts']} x {s['generations']} "
             f"completions (<= {s['max_completion']} tokens); greedy 0-shot evaluation on {s['eval_arith']} held-out "
             f"arith and the first {s['eval_gsm8k']} GSM8K test problems. Pending runs: "
             f"{', '.join(data['pending']) or 'none'}.", ""]
    if data.get("probe"):
        lines += ["Base model, sampled at temperature 0.9 (the probe that chose the level):", "",
                  "| level, shots | sampled correct % | tags written % |", "|---|---|---|"]
        for k, v in data["probe"]["levels"].items():
            lines.append(f"| {k} | {100 * v['sampled_correct']:.1f} | {100 * v['tag_rate']:.1f} |")
        lines.append("")
    lines += ["| method | seeds | held-out arith % | pooled [95% CI] | GSM8K % | steps to train correctness 50% | "
              "final length | tags % (training, last 10 steps / greedy eval) | s/step (generation, rewards %) | "
              "collapse warnings | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    if data.get("base"):
        lines.append(f"| base (no RL) | - | {100 * data['base'].get('arith_accuracy', float('nan')):.1f} | "
                     f"{kit.ci_cell(data['base'], 'arith')} | {100 * data['base'].get('gsm8k_accuracy', float('nan')):.1f} "
                     "| - | - | - | - | - | - |")
    for name, e in data["per_method"].items():
        reach = ", ".join("-" if x is None else str(x) for x in e["steps_to_target"])
        lines.append(f"| {name} | {e['n_seeds']} | {pm(e, 'arith_accuracy', 100)} | {kit.pooled_cell(e, 'arith')} | "
                     f"{pm(e, 'gsm8k_accuracy', 100)} | {reach} | {pm(e, 'final_mean_length')} | "
                     f"{pm(e, 'train_tag_rate_last10', 100, 0)} / {pm(e, 'eval_tag_rate', 100, 0)} | "
                     f"{pm(e, 'seconds_per_step')} "
                     f"({pm(e, 'generation_share', 100, 0)}, {pm(e, 'reward_share', 100, 2)}) | "
                     f"{e['collapse_warnings']} | {e.get('verdict', '-')} |")
    lines += ["", "Per run (training figures over the last 10 steps):", "",
              "| run | held-out arith % | GSM8K % | train correct % | groups without reward variance % | entropy | "
              "final length | no learning signal (stall) |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(data["runs"], key=lambda r: (list(VARIANTS).index(r["method"]) if r["method"] in VARIANTS else 99,
                                                 r["seed"])):
        cells = [f"{100 * r[k]:.1f}" if r.get(k) is not None else "-"
                 for k in ("arith_accuracy", "gsm8k_accuracy", "train_correct_last10", "zero_std_groups_last10")]
        ent = f"{r['entropy_last10']:.2f}" if r.get("entropy_last10") is not None else "-"
        lines.append(f"| {r['method']}-s{r['seed']} | " + " | ".join(cells) + f" | {ent} | {r.get('final_mean_length', 0):.1f} | "
                     f"{'yes' if r.get('signal_stall') else 'no'} |")
    if data["paired_vs_r1"] or data["paired_vs_r1_per_seed"]:
        lines += ["", "Paired with r1 on the same problems (only this method / only r1 solved; exact McNemar p), "
                  "pooled over the seeds both have and per seed. Every seed grades the same problems, so the "
                  "pooled rows also give the test with the problem as its unit (problems this method solved on "
                  "more seeds than r1 / fewer; exact sign test; added 2026-12-02, after the results):", "",
                  "| method | benchmark | seeds | only method | only r1 | p | problems better / worse (pooled) | p (problems) |",
                  "|---|---|---|---|---|---|---|---|"]
        # a pooled row over a single seed is that seed's row: shown once
        rows = ([(c, "pooled " + ", ".join(map(str, c["seeds"]))) for c in data["paired_vs_r1"] if len(c["seeds"]) > 1]
                + [(c, f"seed {c['seed']}") for c in data["paired_vs_r1_per_seed"]])
        for c, label in sorted(rows, key=lambda x: (x[0]["method"], x[0]["benchmark"], not x[1].startswith("pooled"))):
            by_item = kit.by_problem_cells(c) if label.startswith("pooled") else "– | –"
            lines.append(f"| {c['method']} | {c['benchmark']} | {label} | "
                         f"{c['only_method']} | {c['only_baseline']} | {c['p_value']:.3g} | {by_item} |")
    lines += ["", "Reward diagnostics, mean over logged steps and seeds (AUC vs correctness within groups; "
              "length correlation in groups without correctness variance; share of the advantage variance):", "",
              "| method | term | AUC | len corr | adv share |", "|---|---|---|---|---|"]
    for name, e in data["per_method"].items():
        terms = sorted({k.split("/")[1] for k in e["diagnostics"]} - {"auc_groups", "len_corr_groups"})
        for t in terms:
            if any(m in t for m in ("format", "xml", "int_answer")):
                continue
            d = e["diagnostics"]
            cells = [f"{d[f'diag/{t}/{kind}']:.2f}" if f"diag/{t}/{kind}" in d else "-"
                     for kind in ("auc", "len_corr", "adv_share")]
            lines.append(f"| {name} | {t.removesuffix('_reward')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from memrl.runtime import setup_process

    args = parse_args(argv)
    setup_process(args.threads or None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if args.probe:
        print(json.dumps(probe(args), indent=2))
        return 0
    args.arith_level = chosen_level(args)
    if not args.aggregate_only:
        if not args.no_base:
            kit.base_result(args, args.out)
        run_all(args)
    data = aggregate(args)
    print(json.dumps({k: {m: e.get(m) for m in ("arith_accuracy", "verdict")} for k, e in data["per_method"].items()},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
