"""Offline study: what each Memory-R+ semantics and each exploration reward actually rewards.

No training. Fixed, real completions are rescored batch by batch, as GRPO would present them
(2 questions x 8 completions per step), under every memory semantics and every outcome-based
exploration reward; for each reward term and batch we measure

* the within-group AUC against correctness (does the term rank a question's right completions
  above its wrong ones? 0.5 = no signal), over groups whose correctness varies;
* the correlation with completion length (tokens) within groups without correctness variance
  (a length bias where correctness cannot explain the term);
* the reward computation time per completion.

Two sources of completions:

* ``greedy``: the greedy held-out arith completions of the first CPU study
  (``studies/cpu_study_v1/results/runs/*/eval_arith.jsonl``): per question, one completion from each
  of the 8 trained models (4 methods x 2 seeds) form its group. They carry no answer tags.
* ``sampled``: completions sampled from the base SmolLM2-135M-Instruct (temperature 0.9) with the
  second study's prompt (arith level 1, two worked exemplars), so that most carry
  ``<think>``/``<answer>`` tags;
  generated once by ``--generate`` and kept in ``results/completions.jsonl`` (in this folder)
  (arith problems are memrl's own, not shared data).

Two regimes: questions presented ``once`` (one pass: the memory never holds the scored question
before its own batch) and ``repeated`` (three passes over the same questions, as in multi-epoch
training; measured on passes 2-3 only, when every question has been seen). With sampled
completions each pass uses other samples of the question.

    python studies/semantics/run.py --generate     # once: sample the completions (~5 min on 2 cores)
    python studies/semantics/run.py                # rescore -> results/results.json, results.md
    python studies/semantics/run.py --report-only  # results.md from results/results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
COMPLETIONS = RESULTS / "completions.jsonl"
# the greedy completions: the first CPU study's per-example records (its data, not its code)
FIRST_CPU_STUDY_RUNS = HERE.parent / "cpu_study_v1" / "results" / "runs"
GROUP = 8  # completions per question in a batch (the study's G)
PROMPTS_PER_BATCH = 2
EPOCHS_REPEATED = 3
logger = logging.getLogger("semantics")

# name -> (method, extra options); memory semantics first, then the peer exploration rewards.
# Explore is switched on from the first batch (warm-up 0) so its signal is measured at all;
# `reference` keeps the reference's own warm-up (500 failure keys), `reference-nowarmup` drops it.
REWARDS: dict[str, tuple[str, dict[str, Any]]] = {
    "score_then_write": ("memory-r+", {"memory_semantics": "score_then_write"}),
    "write_then_score": ("memory-r+", {"memory_semantics": "write_then_score"}),
    "group_loo": ("memory-r+", {"memory_semantics": "group_loo"}),
    "reference": ("memory-r+", {"memory_semantics": "reference"}),
    "reference-nowarmup": ("memory-r+", {"memory_semantics": "reference", "memory_explore_warmup_keys": 0}),
    "outcome-ucb": ("outcome-ucb", {}),
    "outcome-batch": ("outcome-batch", {}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generate", action="store_true", help="sample the 'sampled' completions (then rescore)")
    p.add_argument("--questions", type=int, default=24, help="arith questions to sample for (--generate)")
    p.add_argument("--samples", type=int, default=16, help="samples per question (--generate)")
    p.add_argument("--level", type=int, default=1, help="arith level of the sampled questions (--generate)")
    p.add_argument("--shots", type=int, default=2, help="worked exemplars in the prompt (--generate)")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--rewards", nargs="+", default=list(REWARDS), choices=list(REWARDS))
    p.add_argument("--report-only", action="store_true",
                   help="only rewrite the docs page from the results JSON (no rescoring: the timings would change)")
    p.add_argument("--out", type=Path, default=RESULTS / "results.json")
    p.add_argument("--docs", type=Path, default=HERE / "results.md", help="the generated page")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- completions
def greedy_groups() -> list[dict[str, Any]]:
    """Per question: its 8 greedy completions (one per trained model of the first study)."""
    from memrl.tasks.files import iter_jsonl

    by_question: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(FIRST_CPU_STUDY_RUNS.glob("*/eval_arith.jsonl")):
        for _, rec in iter_jsonl(path):
            by_question[rec["question"]].append(rec)
    groups = []
    for question, recs in by_question.items():
        if len(recs) == GROUP:
            groups.append({"question": question, "answer": recs[0]["gold"],
                           "samples": [r["completion"] for r in recs]})
    return groups


def generate_sampled(args: argparse.Namespace) -> None:
    """Sample completions of the base model with the 1-shot exemplar prompt; write them atomically."""
    from memrl.io import atomic_write_jsonl
    from memrl.lm import generate, load_model
    from memrl.tasks.arith import generate_problems
    from memrl.tasks.math import to_training_rows

    problems = generate_problems(args.questions + 16, level=args.level, seed=7, split="train")
    questions, pool = problems[: args.questions], problems[args.questions:]
    rows = to_training_rows(questions, "think", shots=args.shots, exemplar_pool=pool, seed=0)
    model, tokenizer = load_model("smollm2-135m")
    t0 = time.perf_counter()
    outs = generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=args.max_new_tokens,
                    temperature=0.9, num_return_sequences=args.samples, batch_size=16, seed=0, progress=True)
    logger.info("sampled %d completions in %.0f s", len(outs), time.perf_counter() - t0)
    samples: dict[int, list[str]] = defaultdict(list)
    for o in outs:
        samples[o["prompt_index"]].append(o["text"])
    atomic_write_jsonl(COMPLETIONS, [{"question": r["question"], "answer": r["answer"], "level": args.level,
                                      "shots": args.shots, "temperature": 0.9, "max_new_tokens": args.max_new_tokens,
                                      "samples": samples[i]} for i, r in enumerate(rows)])


def sampled_groups() -> list[dict[str, Any]]:
    from memrl.tasks.files import iter_jsonl

    return [rec for _, rec in iter_jsonl(COMPLETIONS)] if COMPLETIONS.is_file() else []


def batches(groups: list[dict[str, Any]], epochs: int) -> list[tuple[int, list[tuple[dict[str, Any], list[str]]]]]:
    """``(epoch, [(question row, its GROUP completions), ...])`` per batch, PROMPTS_PER_BATCH questions
    each, in a fixed order; epoch e of a question with more samples uses its e-th slice of them."""
    out = []
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(groups))
        for start in range(0, len(order) - PROMPTS_PER_BATCH + 1, PROMPTS_PER_BATCH):
            batch = []
            for i in order[start:start + PROMPTS_PER_BATCH]:
                g = groups[int(i)]
                n_slices = max(1, len(g["samples"]) // GROUP)
                k = epoch % n_slices
                batch.append((g, g["samples"][k * GROUP:(k + 1) * GROUP]))
            out.append((epoch, batch))
    return out


# ----------------------------------------------------------------------------- scoring
def build(name: str, encoder: Any) -> tuple[list[Any], list[str]]:
    """The intrinsic reward functions of ``name`` (what is added to R1) and their term names."""
    from memrl.rewards import MemoryRewardConfig
    from memrl.rewards.registry import build_rewards

    method, options = REWARDS[name]
    if options.get("memory_semantics") == "reference":  # every reference behaviour, as its code has it
        config = MemoryRewardConfig.reference(explore=True, **{k: v for k, v in options.items()
                                                                 if k != "memory_semantics"})
    else:
        config = MemoryRewardConfig.from_dict({"memory_explore_warmup_steps": 0, **options})
    rewards, _ = build_rewards(method, memory_config=config, encoder=encoder)
    intrinsic = rewards[5:]  # after R1's five (numeric checker)
    return intrinsic, [r.__name__ for r in intrinsic]


def score(name: str, groups: list[dict[str, Any]], epochs: int, measured_from: int, encoder: Any,
          tokenizer: Any) -> dict[str, Any]:
    from memrl.rewards.diagnostics import length_correlation, within_group_auc
    from memrl.rewards.outcome import is_correct_numeric
    from memrl.tasks.math import make_messages

    funcs, terms = build(name, encoder)
    encoder.clear_cache()  # each reward pays for its own encoding, as in training (new completions)
    acc: dict[str, dict[str, list[tuple[float, int]]]] = {t: {"auc": [], "len_corr": []} for t in terms}
    seconds, scored = 0.0, 0  # timed over the measured batches (later passes may hit the encoder cache)
    for epoch, batch in batches(groups, epochs):
        prompts, completions, questions, answers, group_ids = [], [], [], [], []
        for j, (g, samples) in enumerate(batch):
            for s in samples:
                prompts.append(make_messages(g["question"]))
                completions.append(s)
                questions.append(g["question"])
                answers.append(g["answer"])
                group_ids.append(j)
        t0 = time.perf_counter()
        values = {t: np.asarray(f(prompts=prompts, completions=completions, question=questions, answer=answers),
                                dtype=np.float64) for f, t in zip(funcs, terms)}
        dt = time.perf_counter() - t0
        if epoch < measured_from:
            continue
        seconds += dt
        scored += len(completions)
        correct = np.array([is_correct_numeric(c, a) for c, a in zip(completions, answers)], dtype=np.float64)
        lengths = np.array([len(tokenizer(c)["input_ids"]) for c in completions], dtype=np.float64)
        for t in terms:
            auc = within_group_auc(values[t], correct, group_ids)
            lc = length_correlation(values[t], lengths, group_ids, correct)
            if auc.groups:
                acc[t]["auc"].append((auc.value, auc.groups))
            if lc.groups and np.isfinite(lc.value):
                acc[t]["len_corr"].append((lc.value, lc.groups))
    out: dict[str, Any] = {"completions_scored": scored, "ms_per_completion": 1000 * seconds / max(scored, 1),
                           "terms": {}}
    for t in terms:
        row = {}
        for kind in ("auc", "len_corr"):
            pts = acc[t][kind]
            n = sum(w for _, w in pts)
            row[kind] = sum(v * w for v, w in pts) / n if n else None  # group-weighted mean over batches
            row[f"{kind}_groups"] = n
        out["terms"][t] = row
    return out


def tag_rate(groups: list[dict[str, Any]]) -> float:
    texts = [s for g in groups for s in g["samples"]]
    return statistics.fmean("<answer>" in t and "</answer>" in t for t in texts) if texts else float("nan")


def correct_rate(groups: list[dict[str, Any]]) -> float:
    from memrl.rewards.outcome import is_correct_numeric

    pairs = [(s, g["answer"]) for g in groups for s in g["samples"]]
    return statistics.fmean(is_correct_numeric(s, a) for s, a in pairs) if pairs else float("nan")


# ----------------------------------------------------------------------------- report
def markdown(data: dict[str, Any]) -> str:
    def f(x: float | None, digits: int = 2) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    lines = ["# What each Memory-R+ semantics and exploration reward rewards (offline rescoring)", "",
             "Generated by `python studies/semantics/run.py` from `results/results.json`; see the",
             "script's docstring for the completions, batches and regimes. AUC: within-group AUC of the",
             "term against correctness (0.5 = no signal, 1 = ranks every right completion above every wrong",
             "one), group-weighted over batches; len corr: correlation with completion length in groups",
             "without correctness variance; ms: reward time per completion (encoder included, 2 CPU cores).",
             ""]
    for source, meta in data["sources"].items():
        lines += [f"## {source} completions ({meta['questions']} questions, {meta['completions']} completions, "
                  f"correct {100 * meta['correct_rate']:.0f}%, tags written {100 * meta['tag_rate']:.0f}%)", "",
                  "| reward | term | AUC once | AUC repeated | len corr once | len corr repeated | ms once |",
                  "|---|---|---|---|---|---|---|"]
        for name, regimes in data["results"][source].items():
            once, rep = regimes["once"], regimes["repeated"]
            for term in once["terms"]:
                o, r = once["terms"][term], rep["terms"][term]
                lines.append(f"| {name} | {term.removesuffix('_reward')} | {f(o['auc'])} | {f(r['auc'])} | "
                             f"{f(o['len_corr'])} | {f(r['len_corr'])} | {f(once['ms_per_completion'], 1)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from memrl.io import atomic_write_text
    from memrl.runtime import setup_process

    args = parse_args(argv)
    setup_process(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if args.report_only:
        atomic_write_text(args.docs, markdown(json.loads(args.out.read_text())))
        return 0
    if args.generate:
        generate_sampled(args)
    from transformers import AutoTokenizer

    from memrl.encoders import Encoder
    from memrl.io import atomic_write_json
    from memrl.lm import resolve_model

    encoder = Encoder()
    encoder.encode(["warm-up"])  # load the model before anything is timed
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    sources = {"greedy": greedy_groups(), "sampled": sampled_groups()}
    data: dict[str, Any] = {"sources": {}, "results": {}, "group_size": GROUP, "prompts_per_batch": PROMPTS_PER_BATCH,
                            "epochs_repeated": EPOCHS_REPEATED}
    for source, groups in sources.items():
        if not groups:
            logger.warning("no %s completions (run with --generate for the sampled ones)", source)
            continue
        data["sources"][source] = {"questions": len(groups), "completions": sum(len(g["samples"]) for g in groups),
                                   "correct_rate": correct_rate(groups), "tag_rate": tag_rate(groups)}
        data["results"][source] = {}
        for name in args.rewards:
            logger.info("%s: %s", source, name)
            data["results"][source][name] = {
                "once": score(name, groups, 1, 0, encoder, tokenizer),
                "repeated": score(name, groups, EPOCHS_REPEATED, 1, encoder, tokenizer),
            }
    atomic_write_json(args.out, data)
    atomic_write_text(args.docs, markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
