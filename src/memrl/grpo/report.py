"""``memrl report``: training curves and evaluation tables from run directories.

Reads what ``memrl train`` and ``memrl eval`` write (``metrics.jsonl``, ``resolved_config.json``,
``eval/summary.json``) and produces PNG plots (methods side by side, optional EMA smoothing) and a
Markdown summary table.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any

from memrl.grpo.callbacks import FORMAT_MARKERS, LENGTH_KEY
from memrl.grpo.rundir import RunDir
from memrl.io import atomic_write_text, save_figure
from memrl.names import CORRECTNESS_REWARDS

logger = logging.getLogger(__name__)

CORRECTNESS_KEYS = tuple(f"rewards/{name}/mean" for name in CORRECTNESS_REWARDS)
MEMORY_KEYS = ("memory/success_values", "memory/failure_values")


# ----------------------------------------------------------------------------- reading
def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Training log dicts of a run (see :meth:`RunDir.metrics`)."""
    return RunDir(run_dir).metrics()


def distinct_run_label(run_dir: str | os.PathLike, taken: Container[str]) -> str:
    """The run's label (:meth:`RunDir.label`), primed (``'``) until it differs from every label in ``taken``: two runs of
    one method and seed (other models, other K) each keep their own line in a plot."""
    label = RunDir(run_dir).label()
    while label in taken:
        label += "'"
    return label


def ema(values: Sequence[float], alpha: float) -> list[float]:
    """Exponential moving average (``alpha`` = weight of the past; 0 = no smoothing); NaNs kept.

    >>> ema([0.0, 1.0, 1.0], 0.5)
    [0.0, 0.5, 0.75]
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {alpha}")
    out, acc = [], None
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(float("nan"))
            continue
        acc = v if acc is None else alpha * acc + (1 - alpha) * v
        out.append(acc)
    return out


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], float(r[key])) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def reward_component_keys(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    keys = {k for rows in runs.values() for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")}
    return sorted(keys)


# reward diagnostics (memrl.rewards.diagnostics, logged by MemrlGRPOTrainer) shown in the report
DIAGNOSTIC_PANELS = (
    ("auc", "within-group AUC vs correctness", "AUC (0.5 = no signal)"),
    ("len_corr", "length correlation (groups without correctness variance)", "correlation"),
    ("adv_share", "share of the advantage variance", "share"),
)


def diagnostic_keys(runs: dict[str, list[dict[str, Any]]], kind: str) -> list[str]:
    """``diag/<term>/<kind>`` keys of the runs, format rewards left out (they follow the tags,
    not the answer, and would crowd the panel)."""
    keys = {k for rows in runs.values() for r in rows for k in r
            if k.startswith("diag/") and k.endswith(f"/{kind}") and k.count("/") == 2}
    return sorted(k for k in keys if not any(m in k.split("/")[1] for m in FORMAT_MARKERS))


# ----------------------------------------------------------------------------- plots
def run_colours(labels: Sequence[str], cmap: Any) -> dict[str, tuple[float, float, float]]:
    """A colour per run label: one hue per method (the label's first word), and for several runs of
    a method (seeds) successively darker shades of it, so seeds stay apart in one legend."""
    methods = sorted({label.split(" ")[0] for label in labels})
    hues = {m: cmap(i % 10)[:3] for i, m in enumerate(methods)}
    out: dict[str, tuple[float, float, float]] = {}
    for method in methods:
        own = [label for label in labels if label.split(" ")[0] == method]
        for k, label in enumerate(own):
            shade = 1.0 - 0.5 * k / max(len(own) - 1, 1)  # first run full colour, last at half brightness
            out[label] = tuple(c * shade for c in hues[method])
    return out


def plot_training_curves(run_dirs: Sequence[str | os.PathLike], path: str | os.PathLike,
                         smoothing: float = 0.0) -> Path:
    """One PNG with a panel per metric (correctness, each reward component, completion length,
    memory size), one line per run (colour by method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for d in run_dirs:
        runs[distinct_run_label(d, runs)] = read_metrics(d)
    panels: list[tuple[str, list[str], str]] = [
        ("outcome reward (correctness; cosine-length for cosine)", list(CORRECTNESS_KEYS), "mean reward"),
        ("completion length", [LENGTH_KEY], "tokens"),
        ("memory size", list(MEMORY_KEYS), "stored responses"),
        ("reward (total)", ["reward"], "mean total reward"),
    ]
    for key in reward_component_keys(runs):
        if key not in CORRECTNESS_KEYS:
            panels.append((key.split("/")[1], [key], "mean reward"))
    for kind, title, ylabel in DIAGNOSTIC_PANELS:
        keys = diagnostic_keys(runs, kind)
        if keys:
            panels.append((title, keys, ylabel))
    ncols = 3
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.4 * nrows), squeeze=False)
    colours = run_colours(list(runs), plt.cm.tab10)
    for ax, (title, keys, ylabel) in zip(axes.flat, panels):
        for label, rows in runs.items():
            for key in keys:
                steps, vals = _series(rows, key)
                if not steps:
                    continue
                style = "--" if "failure" in key else "-"
                suffix = f" ({key.split('/')[-1]})" if len(keys) > 1 and key.startswith("memory/") else ""
                if key.startswith("diag/"):  # one line per reward term, told apart by style
                    style = ("-", "--", ":", "-.")[keys.index(key) % 4]
                    suffix = f" {key.split('/')[1].removesuffix('_reward')}"
                ax.plot(steps, ema(vals, smoothing), style, color=colours[label], label=label + suffix,
                        marker="o" if len(steps) < 20 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("GRPO training curves" + (f" (EMA smoothing {smoothing})" if smoothing else ""))
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # leave room for the title
    return save_figure(fig, path)


def plot_eval_curves(run_dirs: Sequence[str | os.PathLike], path: str | os.PathLike) -> Path | None:
    """Accuracy per checkpoint step, a panel per benchmark, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = {}
    for d in run_dirs:
        ev = RunDir(d).eval_summary()
        if ev:
            data[distinct_run_label(d, data)] = ev
    if not data:
        return None
    benchmarks = sorted({r["benchmark"] for ev in data.values() for r in ev["results"]})
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5 * len(benchmarks), 3.6), squeeze=False)
    for ax, bench in zip(axes.flat, benchmarks):
        for label, ev in data.items():
            pts = sorted((r["step"], r["accuracy"]) for r in ev["results"]
                         if r["benchmark"] == bench and r.get("step") is not None)
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=label)
        ax.set_title(bench)
        ax.set_xlabel("checkpoint step")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- tables
def _last_mean(rows: list[dict[str, Any]], keys: Sequence[str], k: int = 5) -> float | None:
    for key in keys:
        _, vals = _series(rows, key)
        if vals:
            tail = vals[-k:]
            return sum(tail) / len(tail)
    return None


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.3g}"


def summary_table(run_dirs: Sequence[str | os.PathLike]) -> str:
    """Markdown table: one row per run with training end-state and eval accuracy (last / best)."""
    header = ["run", "method", "steps", "outcome reward (last 5)", "length (last 5)", "memory values",
              "s/step", "eval (last / best, %)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in run_dirs:
        run = RunDir(d)
        rows = run.metrics()
        summ = run.summary()
        ev = run.eval_summary()
        evals = "-"
        if ev and ev.get("per_benchmark"):
            evals = "; ".join(f"{b}: {_fmt(v.get('last'), True)} / {_fmt(v.get('best'), True)}"
                              for b, v in sorted(ev["per_benchmark"].items()))
        mem = _last_mean(rows, ["memory/success_values"], 1)
        fail = _last_mean(rows, ["memory/failure_values"], 1)
        mem_s = "-" if mem is None else f"{mem:.0f} ok / {fail or 0:.0f} fail"
        lines.append("| " + " | ".join([
            Path(d).name, run.method(), str(rows[-1]["step"] if rows else 0),
            _fmt(_last_mean(rows, CORRECTNESS_KEYS)), _fmt(_last_mean(rows, [LENGTH_KEY])), mem_s,
            _fmt(summ.get("timing", {}).get("seconds_per_step")), evals]) + " |")
    return "\n".join(lines) + "\n"


def build_report(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, smoothing: float = 0.0) -> dict[str, str]:
    """Write ``training_curves.png``, ``eval_accuracy.png`` (if evaluated) and ``summary.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not run_dirs:
        raise ValueError("memrl report needs at least one run directory")
    written = {"training_curves": str(plot_training_curves(run_dirs, out / "training_curves.png", smoothing))}
    ev = plot_eval_curves(run_dirs, out / "eval_accuracy.png")
    if ev:
        written["eval_accuracy"] = str(ev)
    table = summary_table(run_dirs)
    atomic_write_text(out / "summary.md", "# memrl report\n\n" + table)
    written["summary"] = str(out / "summary.md")
    written["table"] = table
    return written
