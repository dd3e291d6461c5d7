"""What partial prefix reuse saves in a POEM fit on per-query kNN demonstrations.

A ``PoemConfig(examples="knn")`` fit scores every training input under each order the fit tries
of its own ``n`` nearest demonstrations (``knn_budget`` of them: all ``n!`` when they fit, else
KATE's order and a seeded sample): each (input, order) is a distinct prompt prefix, so the exact-match
prefix cache of :class:`memrl.lm.HFScorer` never hits, but one input's orders share their leading
demonstrations. ``HFScorer(partial_prefix_reuse=True)`` (the default) builds each new prefix's KV
cache from the cached prefix sharing its longest start. This bench fits the same optimiser twice
in one process, reuse off then on (alternating ``--repeats`` times), on the first ``--inputs`` fit
inputs of a task, and reports per setting: tokens run through the model (a deterministic cost
measure), wall time, their ratios, and the largest difference between the two fits' trial
matrices (what reuse changes is float rounding only) and whether they chose the same setting.

Writes ``bench/results/prefix_reuse.json``.

    python bench/prefix_reuse_bench.py                  # sst2, seed 13, 16 inputs x knn_budget orders
    python bench/prefix_reuse_bench.py --task trec      # n = 6: a sample of 720 orders
    python bench/prefix_reuse_bench.py --count-only     # the whole fit, counted, not run

``--count-only`` runs no forward: it tokenises every prompt of the task's whole kNN fit (all its
inputs, in the fit's order) and counts the prefix tokens that partial reuse would not run, with the
scorer's LRU of cached prefixes replayed on token ids.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sst2")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--inputs", type=int, default=16, help="fit inputs (each tried under up to 24 orders)")
    p.add_argument("--repeats", type=int, default=2, help="fits per setting, alternating off / on")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--count-only", action="store_true", help="count the whole fit's tokens; no forward")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prefix_reuse.json")
    return p.parse_args(argv)


def fit_once(task: Any, scorer: Any, encoder: Any, n_inputs: int) -> tuple[dict[str, float], Any]:
    """One kNN-mode fit on the first ``n_inputs`` default inputs, from an empty prefix cache."""
    from memrl.poem import PoemConfig
    from memrl.poem.optimizer import PoemOptimizer

    opt = PoemOptimizer(task, scorer, encoder, dataclasses.replace(PoemConfig(), examples="knn"))
    inputs = opt.default_inputs()[:n_inputs]
    scorer.clear_cache()
    tokens0, t0 = scorer.forward_tokens, time.perf_counter()
    report = opt.fit(inputs, progress=False)
    cost = {"wall_s": time.perf_counter() - t0, "forward_tokens": scorer.forward_tokens - tokens0,
            "lm_calls": report.lm_calls}
    return cost, opt


def count_full_fit(task: Any, scorer: Any, encoder: Any) -> dict[str, Any]:
    """Tokens the whole kNN fit of ``task`` runs through the model, without and with partial reuse:
    the fit's own prompts (:meth:`PoemOptimizer.fit_plan`), in its order, through the scorer's
    shared-start rule (:func:`memrl.lm.hf.longest_shared_start`) on an LRU of token ids (no forward)."""
    from collections import OrderedDict

    from memrl.lm.hf import longest_shared_start
    from memrl.poem import PoemConfig
    from memrl.poem.optimizer import PoemOptimizer

    plan = PoemOptimizer(task, scorer, encoder, dataclasses.replace(PoemConfig(), examples="knn")).fit_plan()
    lru: OrderedDict[tuple[int, ...], None] = OrderedDict()
    prefix = reused = suffix = 0
    for text, jobs in plan.prompts.items():
        ids = tuple(scorer.tokenize(text))
        best, shared = longest_shared_start(lru, ids)
        if best is not None:
            lru.move_to_end(best)  # the scorer marks the prefix it copied from as recently used
        reused += shared
        prefix += len(ids)
        suffix += sum(len(scorer.tokenize(task.suffix(plan.inputs[i]))) for i, _ in jobs)
        lru[ids] = None
        while len(lru) > scorer.max_cached_prefixes:
            lru.popitem(last=False)
    return {"inputs": len(plan.inputs), "prompts": len(plan.prompts), "trials": plan.trials,
            "prefix_tokens": prefix, "suffix_tokens": suffix, "shared_prefix_tokens": reused,
            "shared_share_of_prefix": reused / prefix,
            "token_ratio_off_on": (prefix + suffix) / (prefix - reused + suffix)}


def main(argv: list[str] | None = None) -> int:
    from memrl.runtime import setup_process

    args = parse_args(argv)
    setup_process(args.threads)
    from memrl.encoders import Encoder
    from memrl.io import atomic_write_json
    from memrl.lm import HFScorer
    from memrl.tasks.classification import load_task

    scorer = HFScorer.from_name("smollm2-135m", batch_size=16)
    encoder = Encoder()
    task = load_task(args.task, args.seed)
    if args.count_only:
        result = {"task": args.task, "seed": args.seed, **count_full_fit(task, scorer, encoder)}
        out = args.out.with_name(f"{args.out.stem}_count_{args.task}.json")
        atomic_write_json(out, result)
        print(json.dumps(result, indent=1))
        return 0
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    fitted: dict[str, Any] = {}
    for _ in range(args.repeats):
        for setting in ("off", "on"):
            scorer.partial_prefix_reuse = setting == "on"
            cost, opt = fit_once(task, scorer, encoder, args.inputs)
            runs[setting].append(cost)
            fitted[setting] = opt
            print(f"reuse {setting:>3}: {cost['forward_tokens']:>7} tokens, {cost['wall_s']:6.1f} s")
    off, on = fitted["off"].matrix, fitted["on"].matrix
    summary = {s: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for s, rs in runs.items()}
    result = {
        "task": args.task, "seed": args.seed, "inputs": args.inputs, "repeats": args.repeats,
        "threads": args.threads, "lm_calls_per_fit": runs["on"][0]["lm_calls"], "runs": runs, "median": summary,
        "token_ratio_off_on": summary["off"]["forward_tokens"] / summary["on"]["forward_tokens"],
        "wall_ratio_off_on": summary["off"]["wall_s"] / summary["on"]["wall_s"],
        "max_abs_score_diff": float(np.nanmax(np.abs(np.asarray(off.scores) - np.asarray(on.scores)))),
        "same_setting": fitted["off"].setting == fitted["on"].setting,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_end": list(os.getloadavg())},
    }
    atomic_write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "machine")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
