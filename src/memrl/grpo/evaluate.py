"""``memrl eval``: accuracy of models / checkpoints on math benchmarks, plus diversity measures.

* Benchmarks: the test split of any dataset in :data:`memrl.tasks.math.DATASETS` (``gsm8k``,
  ``math500``, ``aime24``, the held-out ``arith`` split, ...) and local JSONL/CSV/parquet files.
* Decoding is pinned and recorded in the summary: greedy by default; ``--num-samples n`` with a
  temperature samples n completions per question and reports pass@1 (mean) and pass@k.
* Answers are extracted and checked by :mod:`memrl.rewards.outcome`, the code the training
  rewards use (one implementation).
* A run directory (``memrl train`` output) expands to its checkpoints and final model; the
  summary gives last and best accuracy per benchmark, and across several runs mean ± std (the
  shape of the paper's Table 1).
* Diversity (paper, Sec. 5): lexical = 1 − mean pairwise TF-IDF cosine and semantic = 1 − mean
  pairwise embedding cosine over the samples of each question; plus the rate of
  self-verification phrases.
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memrl.grpo.rundir import RunDir, checkpoint_step
from memrl.io import atomic_write_json, atomic_write_jsonl
from memrl.names import CHECKERS, PROMPT_STYLES, check_choice
from memrl.options import check_field_types
from memrl.runtime import check_device, resolve_device
from memrl.stats import mean_std, pass_at_k, wilson_interval
from memrl.tasks.math import DATASETS, DatasetSpec, dataset_names, load_rows, make_messages

logger = logging.getLogger(__name__)

# Phrases of a model checking its own work (the paper counts "self-verification" responses).
SELF_VERIFICATION = re.compile(
    r"\b(let me (?:double[- ])?check|let's (?:double[- ])?check|let me verify|let's verify|double[- ]check|"
    r"verify(?:ing)? (?:the|this|my|our)|to verify|re-?check|check(?:ing)? (?:the|my|our) (?:answer|work|result)|"
    r"sanity check)\b|\bwait,",
    re.IGNORECASE,
)


@dataclass
class EvalConfig:
    """Decoding and data settings of one evaluation (recorded in the summary)."""

    benchmarks: list[str] = field(default_factory=lambda: ["gsm8k"],
                                  metadata={"help": f"{', '.join(dataset_names('test'))} or data file paths.",
                                            "nargs": "+"})
    limit: int | None = field(default=None, metadata={"help": "First N problems of each benchmark (>= 1)."})
    prompt_style: str = field(default="think", metadata={"help": "think or reasoning (as in training).",
                                                          "choices": PROMPT_STYLES})
    shots: int = field(default=0, metadata={"help": "Worked exemplars from the benchmark's train split (0: paper)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Completion token cap."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (sampling only)."})
    num_samples: int = field(default=1, metadata={"help": "Samples per question (needs temperature > 0 if > 1)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate call."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    backend: str = field(default="hf", metadata={"help": "hf (transformers generate) or vllm.",
                                                 "choices": ("hf", "vllm")})
    device: str = field(default="auto", metadata={"help": "hf backend: auto (cuda when present), cpu, cuda, cuda:N."})
    arith_level: int = field(default=1, metadata={"help": "arith difficulty of the held-out set."})
    arith_size: int = field(default=200, metadata={"help": "Held-out arith problems (before limit)."})
    question_column: str = field(default="question", metadata={"help": "Question column of local files."})
    answer_column: str = field(default="answer", metadata={"help": "Answer column of local files."})
    checker: str | None = field(default=None, metadata={"help": "numeric or math for local files.",
                                                        "choices": CHECKERS})
    diversity: bool = field(default=True, metadata={"help": "Diversity measures when num_samples >= 2."})

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.num_samples > 1 and self.temperature <= 0:
            raise ValueError("num_samples > 1 needs sampling: set --temperature > 0 (e.g. 0.9)")
        check_choice("backend", self.backend, ("hf", "vllm"))
        check_choice("prompt_style", self.prompt_style, PROMPT_STYLES)
        check_choice("checker", self.checker, CHECKERS, nullable=True)
        check_device("device", self.device)

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def decoding(self) -> dict[str, Any]:
        return {"do_sample": self.temperature > 0, "temperature": self.temperature,
                "top_p": self.top_p if self.temperature > 0 else 1.0, "num_samples": self.num_samples,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed, "backend": self.backend,
                # float32 on every device, so a GPU and a CPU evaluation compute the same thing
                "device": self.resolved_device() if self.backend == "hf" else "vllm", "dtype": "float32"}


# ----------------------------------------------------------------------------- pure measures
def mean_pairwise_cosine(vectors: Any) -> float:
    """Mean cosine similarity over distinct pairs of rows (NaN for fewer than two rows)."""
    import numpy as np

    v = np.asarray(vectors, dtype=np.float64)
    if v.shape[0] < 2:
        return float("nan")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.maximum(norms, 1e-12)
    sim = v @ v.T
    n = v.shape[0]
    return float((sim.sum() - np.trace(sim)) / (n * (n - 1)))


def lexical_diversity(texts: Sequence[str]) -> float:
    """1 − mean pairwise TF-IDF cosine of ``texts`` (NaN for fewer than two; 0 for identical)."""
    if len(texts) < 2:
        return float("nan")
    if not any(t.strip() for t in texts):
        return 0.0
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        tfidf = TfidfVectorizer().fit_transform(texts).toarray()
    except ValueError:  # empty vocabulary (punctuation only)
        return 0.0
    return 1.0 - mean_pairwise_cosine(tfidf)


def semantic_diversity(vectors: Any) -> float:
    """1 − mean pairwise cosine of sentence embeddings of one question's samples."""
    return 1.0 - mean_pairwise_cosine(vectors)


def has_self_verification(text: str) -> bool:
    """Does the completion check its own work ("let me check", "double-check", "verify the ...")?"""
    return SELF_VERIFICATION.search(text) is not None


def bench_label(bench: str) -> str:
    """Short name of a benchmark: itself, or ``<folder>-<stem>`` for a data file
    (``math_eval/math500/test.jsonl`` -> ``math500-test``)."""
    if bench in DATASETS:
        return bench
    p = Path(bench)
    return f"{p.parent.name}-{p.stem}" if p.parent.name else p.stem


# ----------------------------------------------------------------------------- targets
def expand_targets(target: str) -> list[dict[str, Any]]:
    """``[{"label", "model", "step", "run"}]`` for a model (alias, hub id, folder) or a run
    directory (every ``checkpoint-N`` plus ``final``, in step order)."""
    p = Path(target)
    run = RunDir(p)
    if not run.is_run():
        return [{"label": p.name if p.is_dir() else target, "model": target, "step": None, "run": None}]
    out = []
    for ckpt in run.checkpoints():
        if (ckpt / "config.json").is_file():
            out.append({"label": ckpt.name, "model": str(ckpt), "step": checkpoint_step(ckpt), "run": str(p)})
    final = run.final_dir
    if (final / "config.json").is_file():
        step = run.summary().get("global_step")
        if step is None or step not in {t["step"] for t in out}:  # the last checkpoint is the final model
            out.append({"label": "final", "model": str(final), "step": step, "run": str(p)})
    if not out:
        raise FileNotFoundError(f"run directory {p} has no checkpoint-*/ or final/ model to evaluate")
    return out


def load_benchmark(name: str, cfg: EvalConfig) -> tuple[list[dict[str, str]], str]:
    """Rows ``{"question", "answer"}`` of benchmark ``name`` (test split) and its checker."""
    spec = DatasetSpec(name=name, split="test", question_column=cfg.question_column,
                       answer_column=cfg.answer_column, checker=cfg.checker, arith_level=cfg.arith_level,
                       limit=cfg.arith_size if name in DATASETS and DATASETS[name].generated else None)
    rows, checker = load_rows(spec)
    return (rows[: cfg.limit] if cfg.limit else rows), checker


def _exemplars(name: str, cfg: EvalConfig) -> list[dict[str, str]]:
    if not cfg.shots:
        return []
    if name not in dataset_names("train"):
        raise ValueError(f"--shots needs a train split; {name!r} has none (use 0 shots)")
    rows, _ = load_rows(DatasetSpec(name=name, split="train", limit=cfg.shots, arith_level=cfg.arith_level))
    return rows


# ----------------------------------------------------------------------------- generation
def load_vllm(model_path: str, cfg: EvalConfig) -> Any:
    """One vLLM engine for ``model_path`` (float32, like the hf backend), reused across benchmarks.

    vLLM does not give its GPU memory back when an engine is dropped, so :func:`run_eval` builds
    one per model, not one per (model, benchmark).
    """
    try:
        from vllm import LLM
    except ImportError as exc:
        raise ImportError("backend 'vllm' needs vLLM (GPU): pip install vllm") from exc
    from memrl.lm.loading import resolve_model

    return LLM(model=resolve_model(model_path), seed=cfg.seed, dtype="float32")


def _generate(model_path: str, prompts: list[list[dict]], cfg: EvalConfig, loaded: Any = None) -> list[list[str]]:
    """Completion texts per prompt (``num_samples`` each)."""
    if cfg.backend == "vllm":
        from vllm import SamplingParams

        llm = loaded if loaded is not None else load_vllm(model_path, cfg)
        params = SamplingParams(n=cfg.num_samples, temperature=cfg.temperature,
                                top_p=cfg.top_p if cfg.temperature > 0 else 1.0, max_tokens=cfg.max_new_tokens,
                                seed=cfg.seed)
        outs = llm.chat(prompts, params, use_tqdm=True)
        return [[o.text for o in out.outputs] for out in outs]
    from memrl.lm.loading import generate

    model, tokenizer = loaded
    results = generate(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                       top_p=cfg.top_p, num_return_sequences=cfg.num_samples, batch_size=cfg.batch_size,
                       seed=cfg.seed, progress=True)
    texts: list[list[str]] = [[] for _ in prompts]
    for r in results:
        texts[r["prompt_index"]].append(r["text"])
    return texts


def evaluate_benchmark(model_path: str, benchmark: str, cfg: EvalConfig, loaded: Any = None,
                       encoder: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Evaluate one model on one benchmark: per-example records and a summary dict.

    Args:
        model_path: anything :func:`memrl.lm.resolve_model` accepts.
        benchmark: a dataset name with a test split (:data:`memrl.tasks.math.DATASETS`) or a local data file.
        cfg: decoding and data settings.
        loaded: ``(model, tokenizer)`` already loaded (hf backend), or a :func:`load_vllm` engine.
        encoder: a :class:`~memrl.encoders.Encoder` for semantic diversity (built when needed).
    """
    from memrl.rewards.outcome import CorrectnessReward, extract_answer, extract_tagged_answer

    rows, checker = load_benchmark(benchmark, cfg)
    exemplars = _exemplars(benchmark, cfg)
    prompts = [make_messages(r["question"], cfg.prompt_style, exemplars) for r in rows]
    t0 = time.perf_counter()
    samples = _generate(model_path, prompts, cfg, loaded)
    gen_s = time.perf_counter() - t0
    judge = CorrectnessReward(checker=checker)
    records = []
    for i, (row, texts) in enumerate(zip(rows, samples)):
        correct = judge.correct(texts, [row["answer"]] * len(texts))
        for j, (text, ok) in enumerate(zip(texts, correct)):
            extracted = extract_answer(text) if checker == "numeric" else (extract_tagged_answer(text) or None)
            records.append({"index": i, "sample": j, "question": row["question"],
                            "prompt": prompts[i][-1]["content"], "completion": text, "extracted": extracted,
                            "gold": row["answer"], "correct": bool(ok),
                            "self_verification": has_self_verification(text)})
    n, k = len(rows), cfg.num_samples
    per_q = [[r["correct"] for r in records if r["index"] == i] for i in range(n)]
    summary: dict[str, Any] = {
        "benchmark": benchmark, "checker": checker, "n": n,
        "accuracy": statistics.fmean(sum(c) / len(c) for c in per_q),  # greedy acc, or pass@1 (mean)
        "self_verification_rate": statistics.fmean(r["self_verification"] for r in records),
        "mean_completion_chars": statistics.fmean(len(r["completion"]) for r in records),
        "generation_seconds": gen_s,
    }
    if k == 1:  # one sample per question: accuracy is a binomial proportion over n questions
        summary["accuracy_ci95"] = list(wilson_interval(sum(c[0] for c in per_q), n))
    if k > 1:
        for kk in sorted({1, k} | ({2} if k > 2 else set())):
            summary[f"pass@{kk}"] = statistics.fmean(pass_at_k(len(c), sum(c), kk) for c in per_q)
        if cfg.diversity:
            summary.update(diversity_summary(samples, encoder))
    return records, summary


def diversity_summary(samples: list[list[str]], encoder: Any = None) -> dict[str, float]:
    """Mean lexical and semantic diversity over questions (each over its own samples)."""
    import numpy as np

    from memrl.encoders import Encoder

    lex = [lexical_diversity(s) for s in samples if len(s) > 1]
    encoder = encoder or Encoder()
    flat = [t for s in samples for t in s]
    vecs = encoder.encode(flat) if flat else np.zeros((0, 1))
    sem, start = [], 0
    for s in samples:
        if len(s) > 1:
            sem.append(semantic_diversity(vecs[start : start + len(s)]))
        start += len(s)
    return {"lexical_diversity": float(np.nanmean(lex)) if lex else float("nan"),
            "semantic_diversity": float(np.nanmean(sem)) if sem else float("nan")}


# ----------------------------------------------------------------------------- orchestration
def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Last and best accuracy per (run, benchmark), and mean ± std across the runs of each group.

    ``results`` are per (model, benchmark) summaries with ``run``, ``step``, ``label``,
    ``accuracy`` and optionally ``group`` (the runs to average: one method on one model and
    dataset, different seeds — the shape of the paper's Table 1). Bare models (no ``run``) get
    last/best rows but are not averaged with runs. A ``final`` model whose step is unknown counts
    as the last point of its run.
    """
    per_run: dict[str, dict[str, dict[str, Any]]] = {}
    group_of: dict[str, str | None] = {}
    for r in results:
        run = r.get("run") or r["model"]
        group_of[run] = (r.get("group") or "runs") if r.get("run") else None
        step = r.get("step")
        order = step if step is not None else (math.inf if r["label"].endswith("final") else -1)
        entry = per_run.setdefault(run, {}).setdefault(r["benchmark"], {"points": []})
        entry["points"].append((order, r["accuracy"], r["label"]))
    for benches in per_run.values():
        for entry in benches.values():
            pts = sorted(entry.pop("points"), key=lambda p: p[0])
            best = max(pts, key=lambda p: p[1])
            entry.update(last=pts[-1][1], last_label=pts[-1][2], best=best[1], best_label=best[2],
                         best_step=best[0] if 0 <= best[0] < math.inf else None)
    across: dict[str, dict[str, dict[str, Any]]] = {}
    for bench in sorted({b for benches in per_run.values() for b in benches}):
        for group in sorted({g for g in group_of.values() if g is not None}):
            members = [benches[bench] for run, benches in per_run.items() if group_of[run] == group and bench in benches]
            if not members:
                continue
            (lm, ls), (bm, bs) = mean_std([m["last"] for m in members]), mean_std([m["best"] for m in members])
            across.setdefault(bench, {})[group] = {"n_runs": len(members), "last_mean": lm, "last_std": ls,
                                                   "best_mean": bm, "best_std": bs}
    return {"per_run": per_run, "across_runs": across}


def unique_run_names(runs: Sequence[str]) -> dict[str, str]:
    """Short display names for run folders: the folder name, with parent folders added only where
    two runs share it (``a/memory-r+-s0`` vs ``b/memory-r+-s0``), so output paths never collide."""
    parts = {r: Path(r).resolve().parts for r in dict.fromkeys(runs)}
    depth = {r: 1 for r in parts}
    while True:
        names = {r: "/".join(parts[r][-depth[r]:]) for r in parts}
        clash = {r for r in parts if list(names.values()).count(names[r]) > 1 and depth[r] < len(parts[r])}
        if not clash:
            return names
        for r in clash:
            depth[r] += 1


def run_eval(targets: Sequence[str], cfg: EvalConfig, out_dir: str | Path | None = None,
             encoder: Any = None) -> dict[str, Any]:
    """Evaluate every target (models or run directories) on every benchmark; write outputs.

    Per-example JSONL goes to ``<out>/<model label>/<benchmark>.jsonl``; ``<out>/summary.json``
    holds all summaries and the aggregate. A run directory given alone defaults ``out`` to
    ``<run>/eval`` (where ``memrl report`` looks); each run dir also gets its own summary there.
    """
    from memrl.lm.loading import load_model

    expanded = [t for target in targets for t in expand_targets(target)]
    if out_dir is None:
        runs = {t["run"] for t in expanded}
        out_dir = RunDir(next(iter(runs))).eval_dir if len(runs) == 1 and None not in runs else Path("eval_results")
    out = Path(out_dir)
    names = unique_run_names([t["run"] for t in expanded if t["run"]])
    decoding = cfg.decoding()
    results = []
    for t in expanded:
        if cfg.backend == "hf":
            loaded = load_model(t["model"], device=cfg.resolved_device())
        else:
            loaded = load_vllm(t["model"], cfg)
        label = t["label"] if t["run"] is None else f"{names[t['run']]}/{t['label']}"
        group = RunDir(t["run"]).group() if t["run"] else None
        for bench in cfg.benchmarks:
            records, summary = evaluate_benchmark(t["model"], bench, cfg, loaded, encoder)
            summary.update(model=t["model"], label=label, step=t["step"], run=t["run"], group=group,
                           decoding=decoding)
            results.append(summary)
            bench_name = bench_label(bench)
            atomic_write_jsonl(out / label / f"{bench_name}.jsonl", records)
            logger.info("%s on %s: %.1f%% (n=%d)", label, bench, 100 * summary["accuracy"], summary["n"])
        del loaded
    run_dirs = [run for run in dict.fromkeys(r["run"] for r in results if r.get("run")) if RunDir(run).is_run()]
    if len(run_dirs) == 1 and RunDir(run_dirs[0]).eval_dir == out:
        # the run's own record, which `memrl report` reads: keep what earlier evaluations added
        results = merge_results(out / "summary.json", results)
    agg = aggregate(results)
    summary_all = {"decoding": decoding, "config": asdict(cfg), "results": results, **agg}
    if len(agg["per_run"]) == 1:
        summary_all["per_benchmark"] = next(iter(agg["per_run"].values()))
    atomic_write_json(out / "summary.json", summary_all)
    for run in run_dirs:
        path = RunDir(run).eval_summary_file
        if path.parent == out:
            continue
        own = merge_results(path, [r for r in results if r.get("run") == run])
        atomic_write_json(path, {"decoding": decoding, "config": asdict(cfg), "results": own,
                                 "per_benchmark": aggregate(own)["per_run"][run]})
    summary_all["out_dir"] = str(out)
    return summary_all


def merge_results(summary_path: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``new`` results plus those saved in ``summary_path`` for other (label, benchmark) pairs.

    For one run's own summary: evaluating it on gsm8k and later on math500 keeps both;
    evaluating the same checkpoint on the same benchmark again replaces the older result. Each
    result carries its own ``decoding``.
    """
    if not summary_path.is_file():
        return new
    try:
        saved = json.loads(summary_path.read_text()).get("results", [])
    except (json.JSONDecodeError, AttributeError):
        logger.warning("%s is not a memrl eval summary; replacing it", summary_path)
        return new
    def key(r: dict[str, Any]) -> tuple:  # a checkpoint of this run, whatever display name it had
        return r.get("step"), str(r.get("label", "")).rsplit("/", 1)[-1], r.get("benchmark")

    fresh = {key(r) for r in new}
    run = new[0].get("run") if new else None
    return [{**r, "run": run} for r in saved if key(r) not in fresh] + new


def format_table(summary: dict[str, Any]) -> str:
    """Plain-text tables: every (model, benchmark) result, then last/best and mean ± std."""
    lines = [f"{'model':40s} {'benchmark':10s} {'n':>5s} {'acc %':>7s} {'95% CI':>13s} {'self-verif %':>12s}"]
    for r in summary["results"]:
        ci = r.get("accuracy_ci95")
        ci_s = f"[{100 * ci[0]:4.1f}, {100 * ci[1]:5.1f}]" if ci else "-"
        lines.append(f"{r['label'][:40]:40s} {bench_label(r['benchmark'])[:10]:10s} {r['n']:5d} "
                     f"{100 * r['accuracy']:7.1f} {ci_s:>13s} {100 * r['self_verification_rate']:12.1f}"
                     + "".join(f"  {k}={100 * r[k]:.1f}" for k in r if k.startswith("pass@"))
                     + (f"  lex-div={r['lexical_diversity']:.3f} sem-div={r['semantic_diversity']:.3f}"
                        if "lexical_diversity" in r else ""))
    if summary.get("across_runs"):
        lines.append("")
        lines.append(f"{'runs (method | model | data)':40s} {'benchmark':10s} {'runs':>4s} {'last %':>14s} {'best %':>14s}")
        for bench, groups in summary["across_runs"].items():
            for group, a in groups.items():
                lines.append(f"{group[:40]:40s} {bench_label(bench)[:10]:10s} {a['n_runs']:4d} "
                             f"{100 * a['last_mean']:7.1f} ± {100 * a['last_std']:4.1f} "
                             f"{100 * a['best_mean']:7.1f} ± {100 * a['best_std']:4.1f}")
    return "\n".join(lines)
