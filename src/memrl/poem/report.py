"""Aggregate per-(task, seed) results into tables (text, Markdown) and a bar chart (I/O apart)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memrl.io import atomic_write_bytes, atomic_write_text, figure_png

UPPER_BOUNDS = ("oracle",)  # rows that read the test labels: shown, never marked best


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {method: {mean, std, seeds, lm_calls_fit, lm_calls_select, lm_calls_eval, wall_s}}}``.

    ``std`` is over data seeds (population std; 0 for one seed). For the random baseline the
    per-seed value is already the mean over draws.
    """
    table: dict[str, dict[str, dict[str, Any]]] = {}
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        for method, r in run["methods"].items():
            by.setdefault((run["task"], method), []).append(r)
    for (task, method), rs in by.items():
        accs = np.array([r["accuracy"] for r in rs])
        table.setdefault(task, {})[method] = {
            "mean": float(accs.mean()),
            "std": float(accs.std()),
            "seeds": len(rs),
            "lm_calls_fit": float(np.mean([r["lm_calls_fit"] for r in rs])),
            "lm_calls_select": float(np.mean([r["lm_calls_select"] for r in rs])),
            "lm_calls_eval": float(np.mean([r["lm_calls_eval"] for r in rs])),
            "wall_s": float(np.mean([r["wall_s"] for r in rs])),
            # spread within a seed (random-order draws); 0 for deterministic methods
            "draw_std": float(np.mean([r.get("accuracy_std", 0.0) for r in rs])),
        }
    return table


def _methods(table: dict[str, dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for per_task in table.values():
        for m in per_task:
            seen.setdefault(m, None)
    return list(seen)


def _accuracy_cell(v: dict[str, Any], sep: str = " ± ") -> str:
    """Accuracy % with its spread over seeds, or the bare value for one seed (a "± 0.0" would
    claim a spread that was never measured)."""
    if v["seeds"] > 1:
        return f"{100 * v['mean']:.1f}{sep}{100 * v['std']:.1f}"
    return f"{100 * v['mean']:.1f}"


def markdown_table(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """Accuracy (%) per task and method — mean ± std over seeds when a task has several seeds, the
    single value otherwise (random order then shows its spread over draws) — plus mean cost."""
    methods = _methods(table)
    lines = ["| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for task, per in table.items():
        # the oracle is an upper bound (it sees the test labels), not a method that could win
        best = max((v["mean"] for m, v in per.items() if m not in UPPER_BOUNDS), default=None)
        cells = []
        for m in methods:
            if m not in per:
                cells.append("–")
                continue
            v = per[m]
            cell = _accuracy_cell(v)
            if v["seeds"] == 1 and v.get("draw_std", 0.0) > 0:  # random still has its draws' spread
                cell += f" (± {100 * v['draw_std']:.1f} over draws)"
            cells.append(f"**{cell}**" if v["mean"] == best else cell)
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += ["", "| method | LM calls fit | LM calls select | LM calls eval | wall s |", "|---|---|---|---|---|"]
    for m in methods:
        rows = [per[m] for per in table.values() if m in per]
        lines.append(
            f"| {m} | {np.mean([r['lm_calls_fit'] for r in rows]):.0f} | "
            f"{np.mean([r['lm_calls_select'] for r in rows]):.0f} | "
            f"{np.mean([r['lm_calls_eval'] for r in rows]):.0f} | {np.mean([r['wall_s'] for r in rows]):.1f} |"
        )
    return "\n".join(lines) + "\n"


def text_table(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """Fixed-width accuracy table for the terminal."""
    methods = _methods(table)
    width = max(12, *(len(m) + 2 for m in methods))
    head = f"{'task':<16}" + "".join(f"{m:>{width}}" for m in methods)
    rows = [head, "-" * len(head)]
    for task, per in table.items():
        row = f"{task:<16}"
        for m in methods:
            v = per.get(m)
            cell = _accuracy_cell(v, sep="±") if v else "-"
            row += f"{cell:>{width}}"
        rows.append(row)
    return "\n".join(rows)


def bar_chart_png(table: dict[str, dict[str, dict[str, float]]], title: str = "") -> bytes:
    """:func:`bar_chart` as PNG bytes (the figure is closed)."""
    return figure_png(bar_chart(table, title))


def bar_chart(table: dict[str, dict[str, dict[str, float]]], title: str = "") -> Any:
    """Grouped bar chart (tasks × methods) of mean accuracy, each bar labelled with its value, std
    error bars when a task has several seeds, the legend below the axes; a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods, tasks = _methods(table), list(table)
    width_in = max(7.0, 1.6 * len(tasks) + 2)
    # constrained layout sizes the axes around the legend below them, so no entry is cut off
    fig, ax = plt.subplots(figsize=(width_in, 5.0), layout="constrained")
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(tasks))
    several_seeds = any(v["seeds"] > 1 for per in table.values() for v in per.values())
    for j, m in enumerate(methods):
        means = [100 * table[t][m]["mean"] if m in table[t] else 0 for t in tasks]
        stds = [100 * table[t][m]["std"] if m in table[t] else 0 for t in tasks]
        bars = ax.bar(x + (j - (len(methods) - 1) / 2) * width, means, width,
                      yerr=stds if several_seeds else None, label=m, capsize=2)
        ax.bar_label(bars, labels=[f"{v:.0f}" if m in table[t] else "" for v, t in zip(means, tasks)],
                     fontsize=5, padding=1)
    ax.set_xticks(x, tasks)
    ax.set_ylabel("accuracy (%)" + (" (mean ± std over seeds)" if several_seeds else ""))
    ax.set_ylim(0, 105)
    ax.set_title(title or "POEM vs baselines")
    if methods:  # an empty study (nothing run yet) still gets a valid, empty chart
        per_row = max(1, min(len(methods), int(width_in / 1.25)))  # ~1.25 inch per legend entry
        fig.legend(*ax.get_legend_handles_labels(), fontsize=7, ncol=per_row, loc="outside lower center")
    return fig


def write_report(out_dir: str | Path, runs: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``accuracy.png`` to ``out_dir`` (atomically)."""
    from memrl.io import atomic_write_json

    out_dir = Path(out_dir)
    table = aggregate(runs)
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md", "png": out_dir / "accuracy.png"}
    atomic_write_json(paths["json"], {"runs": list(runs), "summary": table, **(extra or {})})
    atomic_write_text(paths["md"], markdown_table(table))
    atomic_write_bytes(paths["png"], bar_chart_png(table))
    return paths


def item_correctness(row: dict[str, Any], gold: Sequence[int]) -> np.ndarray | None:
    """``(m,)`` a method's correctness per test item: 0/1 from its ``predictions``, or, for a row
    that is an exact expectation (the random order), its ``expected_correct`` fractions; None when
    the row recorded neither."""
    if "expected_correct" in row:
        return np.asarray(row["expected_correct"], dtype=np.float64)
    if "predictions" in row:
        return (np.array(row["predictions"]) == np.array(gold)).astype(np.float64)
    return None


def paired_comparison(runs: Sequence[dict[str, Any]], a: str, b: str) -> dict[str, Any] | None:
    """Method ``a`` against ``b`` on the same test items, over the runs (data seeds) that recorded
    per-item correctness for both (:func:`item_correctness`).

    Descriptive, pooled over seeds: trials (item × seed) only ``a`` got right (``only_a``), only
    ``b`` (``only_b``), and the accuracy difference. The test takes the *item* as its unit, because
    the data seeds score the same test items (LM-BFF has one test split; the multiple-choice
    carve-outs overlap), and counting an item once per seed would treat repeats as independent
    evidence: per item, ``d`` = seeds only ``a`` got it right − seeds only ``b`` did; ``better`` /
    ``worse`` = items with ``d`` > 0 / < 0; ``p`` = the exact two-sided sign test on those
    (:func:`memrl.stats.item_sign_test`; with one seed it is McNemar's test on the trials). Runs
    recorded without ``items`` count each of their rows as its own item. When either row is an
    expectation (fractional correctness, the random order), ``only_a`` / ``only_b`` are the
    expected counts (sums of the positive and negative parts of ``a − b``) and ``d`` the summed
    difference, tested by :func:`memrl.stats.paired_permutation_test`. None when no run has both.
    """
    from memrl.stats import item_sign_test, paired_permutation_test

    only_a = only_b = 0.0
    n = seeds = 0
    fractional = False
    trials: list[tuple[Any, float, float]] = []
    for k, run in enumerate(runs):
        ra, rb = run["methods"].get(a), run["methods"].get(b)
        gold = run.get("gold")
        if not ra or not rb or gold is None:
            continue
        ca, cb = item_correctness(ra, gold), item_correctness(rb, gold)
        if ca is None or cb is None:
            continue
        fractional |= "expected_correct" in ra or "expected_correct" in rb
        only_a += float(np.clip(ca - cb, 0, None).sum())
        only_b += float(np.clip(cb - ca, 0, None).sum())
        n += len(gold)
        seeds += 1
        items = run.get("items") or [(k, j) for j in range(len(gold))]
        trials += zip(items, ca.tolist(), cb.tolist(), strict=True)
    if not seeds:
        return None
    if fractional:
        test = paired_permutation_test(trials)
        test.pop("mean_diff")
        return {"a": a, "b": b, "only_a": only_a, "only_b": only_b, "n": n, "seeds": seeds,
                "diff": (only_a - only_b) / n, "fractional": True, **test}
    return {"a": a, "b": b, "only_a": int(only_a), "only_b": int(only_b), "n": n, "seeds": seeds,
            "diff": (only_a - only_b) / n, **item_sign_test((i, x > 0.5, y > 0.5) for i, x, y in trials)}
