"""Aggregate per-(task, seed) results into tables (text, Markdown) and a bar chart (I/O apart)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memrl.io import atomic_write_bytes, atomic_write_text, figure_png


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


def markdown_table(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """Accuracy (%) per task and method — mean ± std over seeds when a task has several seeds, the
    single value otherwise (random order then shows its spread over draws) — plus mean cost."""
    methods = _methods(table)
    lines = ["| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for task, per in table.items():
        best = max(v["mean"] for v in per.values())
        cells = []
        for m in methods:
            if m not in per:
                cells.append("–")
                continue
            v = per[m]
            if v["seeds"] > 1:
                cell = f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}"
            else:  # one seed: no spread over seeds to show; random still has its draws' spread
                cell = f"{100 * v['mean']:.1f}"
                if v.get("draw_std", 0.0) > 0:
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
            cell = f"{100 * v['mean']:.1f}±{100 * v['std']:.1f}" if v else "-"
            row += f"{cell:>{width}}"
        rows.append(row)
    return "\n".join(rows)


def bar_chart_png(table: dict[str, dict[str, dict[str, float]]], title: str = "") -> bytes:
    """Grouped bar chart (tasks × methods) of mean accuracy with std error bars, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods, tasks = _methods(table), list(table)
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(tasks) + 2), 4.5))
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(tasks))
    for j, m in enumerate(methods):
        means = [100 * table[t][m]["mean"] if m in table[t] else 0 for t in tasks]
        stds = [100 * table[t][m]["std"] if m in table[t] else 0 for t in tasks]
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, means, width, yerr=stds, label=m, capsize=2)
    ax.set_xticks(x, tasks)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "POEM vs baselines")
    if methods:  # an empty study (nothing run yet) still gets a valid, empty chart
        ax.legend(fontsize=7, ncol=min(8, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    return figure_png(fig)


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
