"""``memrl report``: training curves and evaluation tables from run directories.

Reads what ``memrl train`` and ``memrl eval`` write (``metrics.jsonl``, ``resolved_config.json``,
``eval/summary.json``) and produces PNG plots (methods side by side, optional EMA smoothing) and a
Markdown summary table. Also the before/after table of ``memrl train`` (``before_after_problems``):
the base and the trained model on the same held-out problems.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any

from memrl.grpo.callbacks import (
    CORRECTNESS_KEYS,
    FORMAT_MARKERS,
    LENGTH_KEY,
    MEMORY_KEY_COUNTS,
    MEMORY_VALUE_COUNTS,
    TOTAL_REWARD_KEY,
    ZERO_STD_KEY,
)
from memrl.grpo.rundir import RunDir
from memrl.io import atomic_write_jsonl, atomic_write_text, save_figure
from memrl.stats import mcnemar_exact_p, wilson_interval

logger = logging.getLogger(__name__)


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
# metrics with a panel of their own, which its title names (the other panels hold a family of metrics)
PANEL_METRICS = frozenset({*CORRECTNESS_KEYS, TOTAL_REWARD_KEY, ZERO_STD_KEY, LENGTH_KEY})
# line styles that tell apart the metrics of one panel (colours tell apart the runs)
LINE_STYLES = ("-", "--", ":", "-.")


def diagnostic_keys(runs: dict[str, list[dict[str, Any]]], kind: str) -> list[str]:
    """``diag/<term>/<kind>`` keys of the runs, format rewards left out (they follow the tags,
    not the answer, and would crowd the panel)."""
    keys = {k for rows in runs.values() for r in rows for k in r
            if k.startswith("diag/") and k.endswith(f"/{kind}") and k.count("/") == 2}
    return sorted(k for k in keys if not any(m in k.split("/")[1] for m in FORMAT_MARKERS))


def series_left_out(values: Sequence[float]) -> str | None:
    """Why a series carries no information for a plot, or None when it does: it needs at least
    two finite values that differ (one dot on an axis scaled around it, or a flat line of a
    reward that never fired, only looks like data).

    >>> series_left_out([0.5]), series_left_out([0.0, 0.0, 0.0]), series_left_out([0.1, 0.4])
    ('one logged value', 'constant at 0', None)
    """
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return "no logged value" if not finite else "one logged value"
    low, high = min(finite), max(finite)
    if high - low <= 1e-9 * max(1.0, abs(high), abs(low)):
        return f"constant at {high:.3g}"
    return None


def metric_name(key: str) -> str:
    """A metric's short name in a legend or a caption: ``rewards/memory_explore_reward/mean`` ->
    ``memory_explore``, ``memory/failure_values`` -> ``failure``, ``diag/total/auc`` -> ``total``."""
    parts = key.split("/")
    if parts[0] == "memory":
        return parts[1].split("_")[0]
    name = parts[1] if len(parts) > 1 else key
    return name.removesuffix("_reward")


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


def training_panels(runs: dict[str, list[dict[str, Any]]]) -> list[tuple[str, list[str], str]]:
    """``(title, keys, y label)`` of every panel the runs' metrics could fill, in reading order:
    the outcome, the total reward and its signal, length, the reward terms, the memory, then
    the reward diagnostics."""
    components = [k for k in reward_component_keys(runs) if k not in CORRECTNESS_KEYS]
    form = [k for k in components if any(m in k.split("/")[1] for m in FORMAT_MARKERS)]
    panels: list[tuple[str, list[str], str]] = [
        ("outcome reward (correctness; cosine-length for cosine)", list(CORRECTNESS_KEYS), "mean reward"),
        ("reward (total)", [TOTAL_REWARD_KEY], "mean total reward"),
        ("groups without reward variance", [ZERO_STD_KEY], "share of groups"),
        ("completion length", [LENGTH_KEY], "tokens"),
        ("format rewards", form, "mean reward"),
        ("intrinsic reward terms", [k for k in components if k not in form], "mean reward"),
        ("memory: stored completions", list(MEMORY_VALUE_COUNTS), "values"),
        ("memory: questions", list(MEMORY_KEY_COUNTS), "keys"),
    ]
    panels += [(title, diagnostic_keys(runs, kind), ylabel) for kind, title, ylabel in DIAGNOSTIC_PANELS]
    return [p for p in panels if p[1]]


def plan_training_curves(runs: dict[str, list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[str]]:
    """What :func:`plot_training_curves` draws: ``(panels, left_out)``.

    Each panel is ``{"title", "keys", "ylabel", "series"}`` with ``series`` ``{(run label, key):
    (steps, values)}``; a metric is drawn for a run when it has two logged values that differ
    (:func:`series_left_out`), a panel when one of its metrics is drawn. ``left_out`` says, for
    the metrics drawn in no run although logged, what they were and why, one entry per panel and
    reason (``"memory: questions: failure (one logged value)"``).
    """
    panels, left_out = [], []
    for title, keys, ylabel in training_panels(runs):
        series, reasons = {}, {}
        for key in keys:
            for label, rows in runs.items():
                steps, vals = _series(rows, key)
                reason = series_left_out(vals)
                if reason is None:
                    series[(label, key)] = (steps, vals)
                elif steps:  # a metric this run never logged is not news
                    reasons.setdefault(key, set()).add(reason)
        kept = [k for k in keys if any(key == k for _, key in series)]
        names_by_reason: dict[str, list[str]] = {}  # one entry per reason: "panel: a, b (why)"
        for key in keys:
            if key not in kept and key in reasons:
                why = next(iter(reasons[key])) if len(reasons[key]) == 1 else "no variation in any run"
                names_by_reason.setdefault(why, []).append("" if key in PANEL_METRICS else metric_name(key))
        for why, names in names_by_reason.items():
            left_out.append(f"{title}{': ' + ', '.join(names) if any(names) else ''} ({why})")
        if series:
            panels.append({"title": title, "keys": kept, "ylabel": ylabel, "series": series})
    return panels, left_out


def plot_training_curves(run_dirs: Sequence[str | os.PathLike], path: str | os.PathLike,
                         smoothing: float = 0.0) -> Path:
    """One PNG with a panel per metric (:func:`training_panels`), one colour per run, one line
    style per metric of a panel.

    Only what carries information is drawn (:func:`plan_training_curves`); the caption under the
    panels says what was left out and why. Legends sit outside the data: the runs in one legend
    right of the panels (a single run is named in the title), a panel's metrics beside it.
    """
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    runs = {}
    for d in run_dirs:
        runs[distinct_run_label(d, runs)] = read_metrics(d)
    colours = run_colours(list(runs), plt.cm.tab10)
    drawn, left_out = plan_training_curves(runs)
    if not drawn:
        raise ValueError(f"nothing to plot: no metric of {', '.join(map(str, run_dirs))} has two logged values "
                         "that differ (train for at least two steps)")
    ncols = min(3, len(drawn))
    nrows = math.ceil(len(drawn) / ncols)
    width = 5.6 * ncols + (0.0 if len(runs) == 1 else 1.4)  # room for the legend of the runs
    caption = ""
    if left_out:
        which = "this run" if len(runs) == 1 else "these runs"
        caption = textwrap.fill(f"Not drawn, as they carry no information for {which}: " + "; ".join(left_out) + ".",
                                width=int(14 * width))  # characters of 8-point text per inch, with a margin
    caption_in = 0.17 * (caption.count("\n") + 1) + 0.15 if caption else 0.0
    height = 3.4 * nrows + caption_in
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained")
    fig.get_layout_engine().set(rect=(0, caption_in / height, 1, 1 - caption_in / height))
    one_run = len(runs) == 1
    for ax, panel in zip(axes.flat, drawn):
        title, keys, ylabel, series = panel["title"], panel["keys"], panel["ylabel"], panel["series"]
        for (label, key), (steps, vals) in series.items():
            ax.plot(steps, ema(vals, smoothing), LINE_STYLES[keys.index(key) % len(LINE_STYLES)], color=colours[label],
                    marker="o" if len(steps) < 20 else None, markersize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not PANEL_METRICS.issuperset(keys):  # a family of metrics: which line is which, beside the panel
            colour = colours[next(iter(runs))] if one_run else "0.35"
            handles = [Line2D([], [], color=colour, linestyle=LINE_STYLES[i % len(LINE_STYLES)])
                       for i in range(len(keys))]
            ax.legend(handles, [metric_name(k) for k in keys], loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      fontsize=7, frameon=False, handlelength=2.2, borderaxespad=0.0)
    for ax in list(axes.flat)[len(drawn):]:
        ax.axis("off")
    smoothed = f" (EMA smoothing {smoothing})" if smoothing else ""
    if one_run:
        fig.suptitle(f"GRPO training curves: {next(iter(runs))}{smoothed}")
    else:
        fig.suptitle("GRPO training curves" + smoothed)
        fig.legend([Line2D([], [], color=colours[label]) for label in runs], list(runs), loc="outside right upper",
                   fontsize=8, frameon=False, title="runs", title_fontsize=8)
    if caption:
        fig.text(0.01, 0.01, caption, ha="left", va="bottom", fontsize=8, color="0.25")
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


# ----------------------------------------------------------------------------- before / after
# first and last logged steps the training figures of the before/after table average over
BEFORE_AFTER_WINDOW = 5
# what one run shows and what it cannot (written under the table; filled in by evaluate_before_after)
BEFORE_AFTER_NOTE = ("One seed of {model} for {steps} steps: the table shows what this run did (training and, for a "
                     "memory method, the memory at work), not that {method} beats another method, nor by how much "
                     "(seeds differ widely). Comparisons over seeds with R1 and controls, on SmolLM2-135M: "
                     "studies/cpu_study_v2/results.md and studies/cpu_study_v3/.")


def writes_answer_tags(text: str) -> bool:
    """Does a completion write the ``<answer>…</answer>`` tags the rewards read (as the CPU studies count them)?"""
    return "<answer>" in text and "</answer>" in text


def eval_figures(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Held-out figures of one greedy evaluation (one record per problem, as
    :func:`memrl.grpo.evaluate.evaluate_benchmark` writes them): accuracy with its 95% Wilson
    interval, the share of completions with answer tags and the mean completion length in characters."""
    if not records:
        raise ValueError("no evaluation records")
    correct = sum(bool(r["correct"]) for r in records)
    return {"n": len(records), "correct": correct, "accuracy": correct / len(records),
            "accuracy_ci95": list(wilson_interval(correct, len(records))),
            "answer_tag_rate": statistics.fmean(writes_answer_tags(r["completion"]) for r in records),
            "mean_completion_chars": statistics.fmean(len(r["completion"]) for r in records)}


def _window_mean(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> float | None:
    for key in keys:
        vals = [float(r[key]) for r in rows if r.get(key) is not None]
        if vals:
            return statistics.fmean(vals)
    return None


def before_after(base_records: Sequence[dict[str, Any]], trained_records: Sequence[dict[str, Any]],
                 metrics: Sequence[dict[str, Any]], window: int = BEFORE_AFTER_WINDOW) -> dict[str, Any]:
    """The before/after comparison of a training run: ``{"before", "after", "paired", "window",
    "steps"}``.

    ``before``/``after`` hold :func:`eval_figures` of the base and of the trained model (the same
    held-out problems, in the same order), the training correctness and the share of groups
    without reward variance over the first / last ``window`` logged steps (fewer, down to one,
    when the run logged under ``2 * window`` steps), and the size of the success and the failure
    memory (``success_keys``, ``failure_keys``: questions; ``success_values``, ``failure_values``:
    stored completions): empty before training, the last logged size after; None for a method
    without memory. ``paired`` counts the problems only one of the two models solved and
    gives the exact McNemar p of that split.
    """
    if [r["question"] for r in base_records] != [r["question"] for r in trained_records]:
        raise ValueError("the base and the trained model must be evaluated on the same problems, in the same order")
    rows = [r for r in metrics if "loss" in r or any(k.startswith("rewards/") for k in r)]
    if not rows:
        raise ValueError("no logged training step in the metrics")
    w = max(1, min(window, len(rows) // 2))
    first, last = rows[:w], rows[-w:]
    has_memory = all(rows[-1].get(k) is not None for k in MEMORY_KEY_COUNTS + MEMORY_VALUE_COUNTS)

    def memory_size(row: dict[str, Any] | None) -> dict[str, float] | None:
        if not has_memory:
            return None
        return {k.split("/")[1]: 0.0 if row is None else float(row[k]) for k in MEMORY_KEY_COUNTS + MEMORY_VALUE_COUNTS}

    only_after = sum(bool(a["correct"]) and not bool(b["correct"]) for a, b in zip(trained_records, base_records))
    only_before = sum(bool(b["correct"]) and not bool(a["correct"]) for a, b in zip(trained_records, base_records))
    return {
        "before": {**eval_figures(base_records), "train_correct": _window_mean(first, CORRECTNESS_KEYS),
                   "zero_std_share": _window_mean(first, [ZERO_STD_KEY]), "memory": memory_size(None)},
        "after": {**eval_figures(trained_records), "train_correct": _window_mean(last, CORRECTNESS_KEYS),
                  "zero_std_share": _window_mean(last, [ZERO_STD_KEY]), "memory": memory_size(rows[-1])},
        "paired": {"only_after": only_after, "only_before": only_before,
                   "mcnemar_p": mcnemar_exact_p(only_after, only_before)},
        "window": w, "steps": int(rows[-1]["step"]),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def before_after_markdown(figures: dict[str, Any], setting: str, note: str, curves: str | None = None) -> str:
    """The before/after table of :func:`before_after` as Markdown: ``setting`` says what was
    evaluated (problems, decoding, prompt), ``note`` what the run does and does not show, ``curves``
    names the training curves' image beside it."""
    b, a, w = figures["before"], figures["after"], figures["window"]

    def accuracy(f: dict[str, Any]) -> str:
        lo, hi = f["accuracy_ci95"]
        return f"{f['correct']}/{f['n']} = {100 * f['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"

    def memory(f: dict[str, Any]) -> str:
        m = f["memory"]
        if m is None:
            return "-"
        return (f"{m['success_keys']:.0f} + {m['failure_keys']:.0f} questions, "
                f"{m['success_values']:.0f} + {m['failure_values']:.0f} completions")

    rows = [
        ("held-out accuracy [95% Wilson interval]", accuracy(b), accuracy(a)),
        ("answer tags written (held-out)", _pct(b["answer_tag_rate"]), _pct(a["answer_tag_rate"])),
        ("mean completion length (held-out, characters)", f"{b['mean_completion_chars']:.0f}",
         f"{a['mean_completion_chars']:.0f}"),
        (f"training correctness (first / last {w} steps, sampled)", _pct(b["train_correct"]), _pct(a["train_correct"])),
        (f"groups without reward variance (first / last {w} steps)", _pct(b["zero_std_share"]),
         _pct(a["zero_std_share"])),
        ("memory size (success + failure memory)", memory(b), memory(a)),
    ]
    p = figures["paired"]
    lines = [f"# Before / after {figures['steps']} training steps", "", setting, "",
             f"| | base model | after {figures['steps']} steps |", "|---|---|---|",
             *(f"| {name} | {before} | {after} |" for name, before, after in rows), "",
             f"Paired on the same problems: {p['only_after']} solved only after training, {p['only_before']} only "
             f"before (exact McNemar p = {p['mcnemar_p']:.3g}).", "", note]
    if curves:
        lines += ["", f"![training curves]({curves})"]
    return "\n".join(lines) + "\n"


def evaluate_before_after(run: RunDir, train: Any, grpo: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    """Evaluate the base model (``train.model``, loaded afresh) and the trained ``model`` on the
    first ``train.before_after_problems`` held-out test problems of the training dataset, greedy,
    in the training format (prompt style, exemplars, completion cap); write both evaluations'
    records to ``<run>/before_after/`` and the table to ``<run>/before_after.md``.

    Returns :func:`before_after`'s figures plus ``table`` (the Markdown) and ``path``.
    """
    from memrl.grpo.evaluate import EvalConfig, evaluate_benchmark
    from memrl.lm.loading import load_model

    n = train.before_after_problems
    cfg = EvalConfig(benchmarks=[train.dataset], limit=n, prompt_style=train.prompt_style, shots=train.shots,
                     max_new_tokens=grpo.max_completion_length or 256, arith_level=train.arith_level,
                     arith_size=max(n, EvalConfig.arith_size))
    model.eval()
    records = {}
    for name, loaded in (("base", None), ("trained", (model, tokenizer))):
        if loaded is None:
            loaded = load_model(train.model, device=str(model.device), attn_implementation=train.attn_implementation)
        logger.info("before/after: evaluating the %s model on %d held-out %s problems", name, n, train.dataset)
        records[name], _ = evaluate_benchmark(train.model if name == "base" else str(run.final_dir), train.dataset,
                                              cfg, loaded)
        atomic_write_jsonl(run.before_after_dir / f"{name}.jsonl", records[name])
    figures = before_after(records["base"], records["trained"], run.metrics())
    level = f" level {train.arith_level}" if train.dataset == "arith" else ""
    setting = (f"{train.model}, {train.method}, seed {grpo.seed}: the first {len(records['base'])} held-out "
               f"{train.dataset}{level} test problems, greedy, in the training format ({train.shots}-shot, "
               f"{train.prompt_style} tags, <= {cfg.max_new_tokens} tokens).")
    note = BEFORE_AFTER_NOTE.format(model=train.model, steps=figures["steps"], method=train.method)
    table = before_after_markdown(figures, setting, note,
                                  curves=run.curves_file.name if run.curves_file.is_file() else None)
    atomic_write_text(run.before_after_file, table)
    return {**figures, "decoding": cfg.decoding(), "table": table, "path": str(run.before_after_file)}
