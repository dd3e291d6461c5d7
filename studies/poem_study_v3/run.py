"""POEM study, third round (issue 28, confirmatory): memrl's default POEM on seeds never looked at.

Design (committed before this script and before any result; fixed): ``design.md`` in this folder.
SmolLM2-135M-Instruct, encoder all-MiniLM-L6-v2, ``PoemConfig()`` unchanged (demonstration source
and read setting chosen on the fit inputs by the one-standard-error rule, nested cross-validated
estimate), six classification tasks x data seeds 42, 87, 100, the same seeded 300-item test
subsample for every row, the rows of :data:`ROWS`.

Usage:
    python studies/poem_study_v3/run.py              # the study: resumable, seed-major, time-boxed
    python studies/poem_study_v3/run.py --replay     # the exploratory replay of seeds 13/21 (no LM)
    python studies/poem_study_v3/run.py --docs-only  # results.md and accuracy.png from the results file

Each finished (task, seed) is appended to ``results/results.json`` (atomic) and skipped next
time; its replay numbers go to ``results/arrays/<task>_<seed>.npz``; ``results.md`` and
``accuracy.png`` are rewritten after each pair. An interrupted pair starts again from its
beginning. The design pins the code: the study refuses to run when ``src/memrl/poem``,
``src/memrl/lm`` or ``src/memrl/tasks`` differ from commit ``7024d1f`` (a change there is a
design addendum first), and records the commit each pair ran on.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CLASSIFICATION = ("sst2", "mr", "subj", "trec", "sst5", "agnews")
SEEDS = (42, 87, 100)
EXPLORATORY_SEEDS = (13, 21)  # the second study's: they motivated the default, so replay only
MAX_TEST = 300
MIN_PROBES = 48
# the rows of the design, in memrl.poem.methods' run order (the design's "12" counts the 11 it lists)
ROWS = ("poem", "poem_fixed", "oracle", "best_fixed", "kate", "kate_knn", "poem_knn", "random",
        "globale", "locale", "zero_shot")
HEURISTICS = ("kate", "kate_knn", "random", "globale", "locale", "zero_shot")  # the goal's "every heuristic"
COMPARED = ("best_fixed", *HEURISTICS, "poem_fixed", "poem_knn")  # POEM's paired comparisons, per task
BUDGET_H = 12.0  # the design's "about 12 hours of machine time"
DESIGN_COMMIT = "7024d1f"  # the code the design fixes, for these paths
PINNED_PATHS = ("src/memrl/poem", "src/memrl/lm", "src/memrl/tasks")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # studies/: the shared study_kit (the README block)
import study_kit as kit  # noqa: E402

OUT = HERE / "results" / "results.json"
REPLAY = HERE / "results" / "replay_v2.json"
V2_RESULTS = HERE.parent / "poem_study_v2" / "results" / "results.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs-only", action="store_true", help="only rewrite results.md and accuracy.png")
    p.add_argument("--replay", action="store_true", help="replay the one-SE rule on the second study's saved "
                   "arrays of seeds 13/21 (exploratory; no LM call) into results/replay_v2.json")
    p.add_argument("--time-budget-min", type=float, default=None,
                   help="start no new pair after this many minutes of this call (a started pair finishes)")
    p.add_argument("--only", default=None, help="comma-separated task/seed pairs (default: the design's 18)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the design: 2)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--max-test", type=int, default=MAX_TEST, help=f"test items per pair; the design's {MAX_TEST} "
                   "(other values are for smoke runs and are refused on a results file of the design)")
    p.add_argument("--out", type=Path, default=OUT, help="results file (arrays are written beside it)")
    p.add_argument("--docs", type=Path, default=None, help="folder of results.md and accuracy.png (default: this "
                   "study's folder for the design's results file, else the results file's folder)")
    args = p.parse_args(argv)
    if args.docs is None:  # a smoke run's --out never rewrites the study's page
        args.docs = HERE if args.out.resolve() == OUT else args.out.parent
    return args


# ------------------------------------------------------------------------------- design
def design_pairs() -> list[tuple[str, int]]:
    """The 18 (task, seed) pairs in run order: seed-major, so a partial study covers every task."""
    return [(t, s) for s in SEEDS for t in CLASSIFICATION]


def parse_pairs(text: str) -> list[tuple[str, int]]:
    """``"sst2/42,mr/87"`` -> ``[("sst2", 42), ("mr", 87)]`` (the ``--only`` option)."""
    try:
        return [(t, int(s)) for t, s in (p.strip().split("/") for p in text.split(","))]
    except ValueError:
        raise SystemExit(f"--only {text!r}: expected task/seed pairs separated by commas, e.g. sst2/42,mr/87") from None


def code_state() -> dict[str, Any]:
    """The commit this runs on and whether the pinned paths equal the design's commit (working tree
    included); ``unchanged`` is None where git cannot tell (no repository)."""
    def git(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True)

    head = git("rev-parse", "HEAD")
    diff = git("diff", "--quiet", DESIGN_COMMIT, "--", *PINNED_PATHS)
    return {"commit": head.stdout.strip() if head.returncode == 0 else None,
            "design_commit": DESIGN_COMMIT,
            "unchanged": {0: True, 1: False}.get(diff.returncode)}


# ------------------------------------------------------------------------------- results
def machine_hours(data: dict[str, Any]) -> float:
    return sum(r.get("wall_s", 0.0) for r in data.get("runs", [])) / 3600


def save_arrays(out: Path, name: str, seed: int, arrays: dict[str, np.ndarray]) -> str:
    """Write a pair's replay ``arrays`` as ``arrays/<task>_<seed>.npz`` beside the results file
    ``out`` (atomic); returns the path relative to the results file's folder (what the run records)."""
    from memrl.io import atomic_write_bytes

    relative = f"arrays/{name}_{seed}.npz"
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out.parent / relative, buf.getvalue())
    return relative


def replay_v2(v2_results: Path = V2_RESULTS) -> dict[str, Any]:
    """The exploratory replay: on each of the second study's pairs with saved arrays (seeds 13/21:
    fixed demonstrations only, so the full default cannot be replayed), the one-SE rule restricted
    to the fixed demonstrations (this study's ``poem_fixed``), its nested estimate beside its test
    accuracy, and the pair's recorded best fixed order and heuristics."""
    from memrl.poem.replay import Replay

    rows = []
    for run in json.loads(v2_results.read_text())["runs"]:
        if "arrays" not in run or run["task"] not in CLASSIFICATION:
            continue
        replay = Replay.load(v2_results.parent / run["arrays"])
        choice = replay.held_out_choice("one_se")
        try:
            test: float | None = replay.choice_accuracy(choice)
        except ValueError:  # a rank code realised an order outside the scored ones
            test = None
        m = run["methods"]
        rows.append({"task": run["task"], "seed": run["seed"], "setting": choice.setting.to_dict(),
                     "estimate": choice.estimate, "loo_accuracy": choice.loo_accuracy, "loo_best": choice.loo_best,
                     "test": test, "n_test": run["n_test"],
                     "recorded": {k: m[k]["accuracy"] for k in ("poem", "best_fixed", *HEURISTICS) if k in m}})
    return {"source": str(v2_results.relative_to(ROOT)) if v2_results.is_relative_to(ROOT) else str(v2_results),
            "rule": "one_se", "pairs": rows}


# ------------------------------------------------------------------------------- report
def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def goal_check(table: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """The design's goal from the table of means over seeds: (1) POEM's mean over the tasks strictly
    above ``best_fixed``'s; (2) POEM strictly above every heuristic on at least 4 of the 6 tasks."""
    tasks = [t for t in CLASSIFICATION if t in table and "poem" in table[t] and "best_fixed" in table[t]]
    if not tasks:
        return {"tasks": []}
    poem = float(np.mean([table[t]["poem"]["mean"] for t in tasks]))
    best = float(np.mean([table[t]["best_fixed"]["mean"] for t in tasks]))
    above = [t for t in tasks if all(table[t]["poem"]["mean"] > table[t][h]["mean"] for h in HEURISTICS if h in table[t])]
    return {"tasks": tasks, "poem_mean": poem, "best_fixed_mean": best, "above_best_fixed": poem > best,
            "above_every_heuristic": above, "heuristics_met": len(above) >= 4}


def goal_lines(goal: dict[str, Any]) -> list[str]:
    if not goal["tasks"]:
        return ["No task has finished yet."]
    n = len(goal["tasks"])
    partial = "" if n == len(CLASSIFICATION) else f" (only {n} of {len(CLASSIFICATION)} tasks have results: provisional)"
    above = goal["above_every_heuristic"]
    return [f"1. POEM's mean over {n} task(s) vs the best fixed order's: {_pct(goal['poem_mean'])} vs "
            f"{_pct(goal['best_fixed_mean'])}: **{'met' if goal['above_best_fixed'] else 'not met'}** "
            f"(goal: strictly above){partial}.",
            f"2. POEM strictly above every heuristic ({', '.join(HEURISTICS)}) on {len(above)} of {n} task(s)"
            f"{': ' + ', '.join(above) if above else ''}: **{'met' if goal['heuristics_met'] else 'not met'}** "
            f"(goal: at least 4 of 6){partial}."]


def comparisons(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """POEM against each row of :data:`COMPARED`, per task, pooled over seeds with the test item as
    unit (:func:`memrl.poem.report.paired_comparison`: the exact sign test, or against the random
    order's expectation the exact paired permutation test), Holm-adjusted within each task."""
    from memrl.poem.report import paired_comparison
    from memrl.stats import holm_adjust

    out = []
    for task in CLASSIFICATION:
        mine = [r for r in runs if r["task"] == task]
        found = [c for c in (paired_comparison(mine, "poem", other) for other in COMPARED) if c is not None]
        for c, p_holm in zip(found, holm_adjust([c["p"] for c in found]), strict=True):
            out.append({"task": task, **c, "p_holm": p_holm})
    return out


def comparison_lines(found: list[dict[str, Any]]) -> list[str]:
    lines = ["| task | vs | POEM right only | other right only | trials (items × seeds) | seeds | Δ acc (points) "
             "| items POEM better / worse | test | p | p (Holm, within task) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in found:
        if c.get("fractional"):  # against an expectation: expected counts, permutation test
            counts, items, test = f"{c['only_a']:.1f} | {c['only_b']:.1f}", "–", "permutation"
        else:
            counts, items, test = f"{c['only_a']} | {c['only_b']}", f"{c['better']} / {c['worse']}", "sign"
        lines.append(f"| {c['task']} | {c['b']} | {counts} | {c['n']} | {c['seeds']} | {100 * c['diff']:+.1f} | "
                     f"{items} | {test} | {c['p']:.3g} | {c['p_holm']:.3g} |")
    return lines


def per_pair_lines(runs: list[dict[str, Any]]) -> list[str]:
    rows = [m for m in ROWS if any(m in r["methods"] for r in runs)]
    lines = ["| task | seed | " + " | ".join(rows) + " |", "|---|---|" + "---|" * len(rows)]
    for r in sorted(runs, key=lambda r: (CLASSIFICATION.index(r["task"]), r["seed"])):
        lines.append(f"| {r['task']} | {r['seed']} | "
                     + " | ".join(_pct(r["methods"].get(m, {}).get("accuracy")) for m in rows) + " |")
    return lines


def _setting_text(setting: dict[str, Any] | None) -> str:
    if not setting:
        return "–"
    return f"{setting['encoding']}, {setting['reward']}, k={setting['k']}, {setting['read']}, shrink {setting['shrink']}"


def selection_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Per pair: what the selection chose, its honest estimate beside its test accuracy (optimism =
    estimate − test), its own and the best leave-one-out accuracy, the restricted rows, the GlobalE
    probes and the fit's LM calls per demonstration source."""
    lines = ["| task | seed | fit inputs | source | setting | estimate | test | estimate − test | its LOO | best LOO "
             "| poem_fixed est. / test | poem_knn est. / test | GlobalE probes (ties) | LM calls fit fixed / kNN |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (CLASSIFICATION.index(r["task"]), r["seed"])):
        m, fit = r["methods"], r.get("poem_fit", {})
        sel = fit.get("selection") or {}
        est = sel.get("estimate")
        test = m["poem"]["accuracy"]
        restricted = []
        for row in ("poem_fixed", "poem_knn"):
            rec = m.get(row, {})
            restricted.append(f"{_pct(rec.get('selection_estimate'))} / {_pct(rec.get('accuracy'))}")
        ge = m.get("globale", {})
        costs = fit.get("costs", {})
        calls = " / ".join(str(costs.get(s, {}).get("lm_calls", "–")) for s in ("fixed", "knn"))
        lines.append(f"| {r['task']} | {r['seed']} | {fit.get('inputs', '?')} | {sel.get('source', '–')} | "
                     f"{_setting_text(sel.get('setting'))} | {_pct(est)} | {_pct(test)} | "
                     f"{'–' if est is None else f'{100 * (est - test):+.1f}'} | {_pct(sel.get('loo_accuracy'))} | "
                     f"{_pct(sel.get('loo_best'))} | {restricted[0]} | {restricted[1]} | "
                     f"{ge.get('probes', '–')} ({ge.get('ties', '–')}) | {calls} |")
    return lines


def replay_lines(replay: dict[str, Any] | None) -> list[str]:
    head = ["## Exploratory: seeds 13 and 21 replayed (not evidence)", "",
            "These seeds' test items were seen before the default was chosen, so nothing here counts for the "
            "goal. The second study saved the fixed demonstrations' trial matrix and test scores only, so the "
            "full default (which may choose the kNN demonstrations) cannot be replayed; the one-SE rule restricted "
            "to the fixed demonstrations (this study's `poem_fixed`) can. Its estimate uses fit inputs only.", ""]
    if replay is None:
        return [*head, "Not computed yet (`python studies/poem_study_v3/run.py --replay`).", ""]
    lines = [*head, "| task | seed | setting (one-SE, fixed) | estimate | test | estimate − test | its LOO | best LOO "
             "| POEM then (LOO) | best fixed | strongest heuristic |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in replay["pairs"]:
        rec = p["recorded"]
        heur = [h for h in HEURISTICS if h in rec]
        top = max(heur, key=lambda h: rec[h]) if heur else None
        gap = "–" if p["test"] is None else f"{100 * (p['estimate'] - p['test']):+.1f}"
        lines.append(f"| {p['task']} | {p['seed']} | {_setting_text(p['setting'])} | {_pct(p['estimate'])} | "
                     f"{_pct(p['test']) if p['test'] is not None else 'not replayable'} | {gap} | "
                     f"{_pct(p['loo_accuracy'])} | {_pct(p['loo_best'])} | {_pct(rec.get('poem'))} | "
                     f"{_pct(rec.get('best_fixed'))} | {top + ' ' + _pct(rec[top]) if top else '–'} |")
    return [*lines, ""]


def write_docs(data: dict[str, Any], docs: Path, replay: dict[str, Any] | None = None) -> None:
    from memrl.io import atomic_write_bytes, atomic_write_text
    from memrl.poem.report import aggregate, bar_chart_png, markdown_table

    runs = data.get("runs", [])
    done = {(r["task"], r["seed"]) for r in runs}
    table = aggregate(runs)
    meta = data.get("meta", {})
    commits = sorted({r.get("code", {}).get("commit") or "?" for r in runs})
    hours = machine_hours(data)
    lines = ["# POEM study, third round: confirmatory (generated by studies/poem_study_v3/run.py)", "",
             "Design, fixed before any result: [design.md](design.md). "
             f"LM: {meta.get('lm', '?')}; encoder: {meta.get('encoder', '?')}; test: the same seeded subsample of "
             f"≤ {meta.get('max_test', MAX_TEST)} items per (task, seed) for every row; POEM = `PoemConfig()` "
             "unchanged (demonstration source and read setting chosen on the fit inputs by the one-SE rule).",
             f"Finished: {len(done)} of {len(design_pairs())} (task, seed) pairs; machine time {hours:.1f} h of the "
             f"design's about {BUDGET_H:g} h. Code: {', '.join(c[:10] for c in commits) or '–'} "
             f"(`{'`, `'.join(PINNED_PATHS)}` as at {DESIGN_COMMIT}).", ""]
    if runs:
        lines += ["## Accuracy (%; mean ± std over seeds) and cost per row", "",
                  "`oracle` reads the test labels (an upper bound, never a competitor). `random` is the exact "
                  "expected accuracy of a uniformly random candidate order of the fixed demonstrations.", "",
                  markdown_table(table),
                  "## The goal (registered; computed from the table of means)", "", *goal_lines(goal_check(table)), "",
                  "## Per pair (%)", "", *per_pair_lines(runs), "",
                  "## What the selection chose, and how honest its estimate was", "",
                  "Estimate = nested cross-validation of the whole selection on the fit inputs (5 folds × 3 "
                  "assignments); test = the chosen source and setting on the pair's test items. `its LOO` and "
                  "`best LOO` are in-sample leave-one-out scores (optimistic). The restricted rows apply the same "
                  "rule to one demonstration source.", "",
                  *selection_lines(runs), "",
                  "## Paired comparisons: POEM vs each row (same items, pooled over seeds)", "",
                  "The unit is the test item (every data seed scores the same test items): an item counts as better "
                  "for POEM when it got it right on more seeds than the other row did; exact two-sided sign test. "
                  "Against `random` (an expectation): per item, POEM's correctness minus the random order's expected "
                  "correctness, exact paired permutation test (counts are expected counts). Holm's adjustment within "
                  "each task over its comparisons.", "",
                  *comparison_lines(comparisons(runs)), ""]
    lines += replay_lines(replay)
    pending = [f"{t}/{s}" for t, s in design_pairs() if (t, s) not in done]
    spent = hours >= BUDGET_H - 0.5  # "about" 12 h: within half an hour of it
    lines += ["## Not run yet", "", (", ".join(pending) or "none") + ".",
              (f"The design's budget of about {BUDGET_H:g} h is spent ({hours:.1f} h), so these pairs are reported "
               "as not run. " if spent and pending else "")
              + "Resume with `python studies/poem_study_v3/run.py`; finished pairs are skipped.", ""]
    atomic_write_text(docs / "results.md", "\n".join(lines))
    if docs.resolve() == HERE.resolve():  # the study's own page: the README follows
        kit.replace_marked_block(ROOT / "README.md", README_BEGIN, README_END, readme_block(data))
    if table:
        ordered = {t: table[t] for t in CLASSIFICATION if t in table}
        atomic_write_bytes(docs / "accuracy.png",
                           bar_chart_png(ordered, f"POEM default vs baselines, seeds {', '.join(map(str, SEEDS))} "
                                                  f"({meta.get('lm', '?')})"))


README_BEGIN = "<!-- poem_study_v3: generated by `python studies/poem_study_v3/run.py --docs-only`; do not edit -->"
README_END = "<!-- /poem_study_v3 -->"
README_ROWS = ("poem", "best_fixed", *HEURISTICS, "oracle")


def readme_block(data: dict[str, Any]) -> str:
    """What the README shows of this study, between its markers: the status, the mean accuracy per
    task of POEM, the best fixed order and each heuristic (oracle as the bound), and the goal."""
    from memrl.poem.report import aggregate

    runs = data.get("runs", [])
    table = aggregate(runs)
    head = ("POEM confirmatory study ([design](studies/poem_study_v3/design.md), [results](studies/poem_study_v3/"
            "results.md)): " + ("not started; it runs after the third CPU study." if not runs else
                                 f"{len(runs)} of {len(design_pairs())} (task, seed) pairs finished"
                                 + ("." if len(runs) == len(design_pairs()) else "; partial figures.")))
    lines = [README_BEGIN, head]
    tasks = [t for t in CLASSIFICATION if t in table]
    if tasks:
        lines += ["", "| task | seeds | " + " | ".join(README_ROWS) + " |", "|---|---|" + "---|" * len(README_ROWS)]
        for t in tasks:
            seeds = max(v["seeds"] for v in table[t].values())
            lines.append(f"| {t} | {seeds} | " + " | ".join(_pct(table[t].get(m, {}).get("mean")) for m in README_ROWS)
                         + " |")
        lines += ["", *goal_lines(goal_check(table))]
    return "\n".join([*lines, README_END])


# ------------------------------------------------------------------------------- main
def run_pair(task: Any, scorer: Any, encoder: Any, config: Any, *, max_test: int, out: Path,
             min_probes: int = MIN_PROBES) -> dict[str, Any]:
    """One (task, seed): POEM fitted and every row of :data:`ROWS` evaluated on the seeded test
    subsample; the replay arrays written beside the results file ``out``. Returns the pair's record
    (``min_probes`` other than the design's is for tests on a tiny slice)."""
    from memrl.poem.evaluate import evaluate_task
    from memrl.runtime import set_seed

    set_seed(task.seed)
    t0 = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    run = evaluate_task(task, scorer, encoder, config, methods=ROWS, max_test=max_test, min_probes=min_probes,
                        progress=False, arrays=arrays)
    run["wall_s"] = time.perf_counter() - t0
    if arrays:
        run["arrays"] = save_arrays(out, task.name, task.seed, arrays)
    return run


def read_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"runs": []}


def read_replay(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def saver(args: argparse.Namespace, data: dict[str, Any]) -> Callable[[], None]:
    from memrl.io import atomic_write_json

    def save() -> None:
        atomic_write_json(args.out, data)
        write_docs(data, args.docs, read_replay(args.out.parent / REPLAY.name))

    return save


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = read_results(args.out)
    replay_path = args.out.parent / REPLAY.name
    if args.docs_only:
        write_docs(data, args.docs, read_replay(replay_path))
        return 0
    from memrl.io import atomic_write_json
    from memrl.runtime import setup_process

    setup_process(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.replay:
        atomic_write_json(replay_path, replay_v2())
        write_docs(data, args.docs, read_replay(replay_path))
        return 0

    recorded = data.get("meta", {}).get("max_test")
    if data["runs"] and recorded is not None and recorded != args.max_test:
        raise SystemExit(f"{args.out} holds pairs run with --max-test {recorded}; this call asks for {args.max_test}: "
                         "use another --out")
    code = code_state()
    if code["unchanged"] is not True:
        raise SystemExit(f"{', '.join(PINNED_PATHS)} differ from {DESIGN_COMMIT} (or git cannot tell): the design fixes "
                         "that code, so write a dated design addendum before running on other code")

    from memrl.encoders import Encoder
    from memrl.lm import HFScorer
    from memrl.poem import PoemConfig
    from memrl.tasks.classification import load_task

    scorer = HFScorer.from_name(args.model, batch_size=16)  # partial prefix reuse on: memrl's default
    encoder = Encoder()
    config = PoemConfig()
    data["meta"] = {"lm": scorer.identity, "encoder": encoder.name, "max_test": args.max_test,
                    "min_probes": MIN_PROBES, "threads": args.threads, "config": config.to_dict(), "rows": list(ROWS)}
    save = saver(args, data)
    pairs = parse_pairs(args.only) if args.only else design_pairs()
    done = {(r["task"], r["seed"]) for r in data["runs"]}
    start = time.perf_counter()
    for name, seed in pairs:
        if (name, seed) in done:
            continue
        if args.time_budget_min is not None and (time.perf_counter() - start) / 60 > args.time_budget_min:
            logging.info("this call's time budget is spent; %s/%s and later pairs not started", name, seed)
            break
        if machine_hours(data) >= BUDGET_H:
            logging.info("the design's budget of %g h is spent; %s/%s and later pairs not started", BUDGET_H, name, seed)
            break
        run = run_pair(load_task(name, seed), scorer, encoder, config, max_test=args.max_test, out=args.out)
        run["code"] = code
        data["runs"].append(run)
        save()
        logging.info("%s/%s done in %.0f s: %s", name, seed, run["wall_s"],
                     {m: round(r["accuracy"], 3) for m, r in run["methods"].items()})
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
