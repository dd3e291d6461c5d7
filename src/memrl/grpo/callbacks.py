"""Trainer callbacks of ``memrl train``: metrics JSONL, step timing, memory checkpoints, collapse
warnings, and the console's progress bar.

The collapse detectors are small pure functions over a metrics history (a list of TRL log dicts),
so they can be tested on synthetic histories; :class:`CollapseMonitor` only calls them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from memrl.grpo.rundir import RunDir, reward_state_path
from memrl.io import atomic_write_text
from memrl.names import CORRECTNESS_REWARDS

logger = logging.getLogger(__name__)

LENGTH_KEY = "completions/mean_length"
CLIPPED_KEY = "completions/clipped_ratio"
ZERO_STD_KEY = "frac_reward_zero_std"  # TRL: share of groups whose completions all got one reward
FLAT_OUTCOME_KEY = "diag/flat_outcome_frac"  # memrl: share of groups whose completions were all right or all wrong
# reward names that measure form, not correctness (their saturation is "reward hacking")
FORMAT_MARKERS = ("format", "xml", "int_answer", "integer", "reasoning_steps")
CORRECTNESS_MARKERS = ("correctness", "accuracy", "cosine_length")
# the outcome reward of each method as TRL logs it (cosine-length for the cosine method)
CORRECTNESS_KEYS = tuple(f"rewards/{name}/mean" for name in CORRECTNESS_REWARDS)
TOTAL_REWARD_KEY = "reward"
MEMORY_KEY_COUNTS = ("memory/success_keys", "memory/failure_keys")
MEMORY_VALUE_COUNTS = ("memory/success_values", "memory/failure_values")


# ----------------------------------------------------------------------------- pure detectors
def _series(history: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(h[key]) for h in history if h.get(key) is not None]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def length_collapse(history: Sequence[dict[str, Any]], window: int = 5, short_tokens: float = 8.0,
                    cap_ratio: float = 0.8) -> str | None:
    """Length collapse over the last ``window`` logged steps, or None.

    Returns ``"short"`` when the mean completion length stayed at most ``short_tokens`` (answers
    shrinking to a bare number), ``"cap"`` when on average at least ``cap_ratio`` of completions
    hit the length cap (running to the limit, the Cosine baseline's failure in the paper).

    >>> length_collapse([{"completions/mean_length": 3.0}] * 5)
    'short'
    """
    lengths = _series(history, LENGTH_KEY)[-window:]
    if len(lengths) >= window and _mean(lengths) <= short_tokens:
        return "short"
    clipped = _series(history, CLIPPED_KEY)[-window:]
    if len(clipped) >= window and _mean(clipped) >= cap_ratio:
        return "cap"
    return None


def reward_keys(history: Sequence[dict[str, Any]], markers: Sequence[str]) -> list[str]:
    """``rewards/<name>/mean`` keys whose reward name contains one of ``markers``."""
    keys = {k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")}
    return sorted(k for k in keys if any(m in k.split("/")[1] for m in markers))


def reward_mode_collapse(history: Sequence[dict[str, Any]], window: int = 5, format_rise: float = 0.1,
                         correctness_drop: float = 0.1) -> bool:
    """Reward-mode collapse: format rewards rise (saturate) while correctness falls.

    Compares the mean of the first and the last ``window`` logged steps: True when the summed
    format rewards rose by at least ``format_rise`` and the correctness reward fell by at least
    ``correctness_drop``. Needs ``2 * window`` logged steps.
    """
    fmt_keys = reward_keys(history, FORMAT_MARKERS)
    cor_keys = reward_keys(history, CORRECTNESS_MARKERS)
    if not fmt_keys or not cor_keys:
        return False
    rows = [h for h in history if all(h.get(k) is not None for k in fmt_keys + cor_keys[:1])]
    if len(rows) < 2 * window:
        return False
    first, last = rows[:window], rows[-window:]
    fmt = [sum(float(h[k]) for k in fmt_keys) for h in (*first, *last)]
    cor = [float(h[cor_keys[0]]) for h in (*first, *last)]
    fmt_delta = _mean(fmt[window:]) - _mean(fmt[:window])
    cor_delta = _mean(cor[window:]) - _mean(cor[:window])
    return fmt_delta >= format_rise and cor_delta <= -correctness_drop


def signal_stall(history: Sequence[dict[str, Any]], window: int = 10, zero_std_share: float = 0.9) -> bool:
    """No learning signal left: in the last ``window`` logged steps, on average at least
    ``zero_std_share`` of the GRPO groups gave every completion the same reward (zero advantage).
    A policy that writes one wrong answer in the right format earns the format rewards in every
    completion and stalls this way, with a stable length and correctness that never rose, which
    the length and reward-mode detectors cannot see.

    >>> signal_stall([{"frac_reward_zero_std": 1.0}] * 10), signal_stall([{"frac_reward_zero_std": 0.5}] * 10)
    (True, False)
    """
    shares = _series(history, ZERO_STD_KEY)[-window:]
    return len(shares) >= window and _mean(shares) >= zero_std_share


def outcome_stall(history: Sequence[dict[str, Any]], window: int = 10, flat_share: float = 0.9) -> bool:
    """No outcome signal left: in the last ``window`` logged steps, on average at least
    ``flat_share`` of the GRPO groups had every completion right or every one wrong, so the
    correctness reward gives no advantage. Unlike :func:`signal_stall` it still fires when other
    rewards (noise, memory terms, format) keep the total reward varying: then the run learns from
    them alone.

    >>> outcome_stall([{"diag/flat_outcome_frac": 1.0}] * 10), outcome_stall([{"diag/flat_outcome_frac": 0.5}] * 10)
    (True, False)
    """
    shares = _series(history, FLAT_OUTCOME_KEY)[-window:]
    return len(shares) >= window and _mean(shares) >= flat_share


# ----------------------------------------------------------------------------- callbacks
class MetricsJsonlCallback(TrainerCallback):
    """Append every log dict (with ``step`` and wall time) to a JSONL file, main process only.

    On resume, lines of steps after the resumed step are dropped so the file has one history.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= state.global_step:
                    kept.append(line)
            except json.JSONDecodeError:  # a torn last line from a killed run
                continue
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"step": state.global_step, "time": time.time(), **logs}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")


class StepTimer(TrainerCallback):
    """Time each optimizer step and the parts of it spent generating and computing rewards.

    :class:`memrl.grpo.trainer.MemrlGRPOTrainer` wraps its generation and reward calls in
    :meth:`part`; at each step end the step's ``time/step_s``, ``time/<part>_s`` and
    ``time/<part>_share`` go to ``sink(name, value)`` (the trainer's metric buffer), so they reach
    ``metrics.jsonl`` and ``report_to`` like TRL's own metrics.
    """

    PARTS = ("generation", "reward")

    def __init__(self, sink: Any = None) -> None:
        self.sink = sink
        self.acc: dict[str, float] = defaultdict(float)
        self.totals: dict[str, float] = defaultdict(float)
        self.steps = 0
        self._t0: float | None = None

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.acc[name] += time.perf_counter() - t0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is None:
            return
        dt = time.perf_counter() - self._t0
        metrics = {"time/step_s": dt}
        for part in self.PARTS:
            metrics[f"time/{part}_s"] = self.acc[part]
            metrics[f"time/{part}_share"] = self.acc[part] / dt if dt > 0 else 0.0
            self.totals[part] += self.acc[part]
        self.totals["step"] += dt
        self.steps += 1
        self.acc.clear()
        if self.sink is not None:
            for k, v in metrics.items():
                self.sink(k, v)

    def summary(self) -> dict[str, float]:
        """Mean seconds per step and the generation/reward shares over the steps timed by this
        process (a resumed run's earlier segments are in ``metrics.jsonl``: RunDir.step_timing)."""
        if not self.steps:
            return {}
        step = self.totals["step"]
        return {"steps_timed": self.steps, "seconds_per_step": step / self.steps,
                "generation_share": self.totals["generation"] / step, "reward_share": self.totals["reward"] / step}


class RewardStateCallback(TrainerCallback):
    """Save a stateful reward (the Memory-R+ memories, the outcome-UCB answer counts) into every
    trainer checkpoint and, at the end, into the run folder (:func:`reward_state_path`);
    ``--resume`` restores it from the checkpoint.

    Every rank holds the same state (writes are gathered across processes), so only the main
    process writes.
    """

    def __init__(self, reward_state: Any) -> None:
        self.reward_state = reward_state

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            target = reward_state_path(RunDir(args.output_dir).checkpoint_dir(state.global_step), self.reward_state)
            self.reward_state.save(target)
            logger.info("saved reward state to %s (%r)", target, self.reward_state)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.reward_state.save(reward_state_path(args.output_dir, self.reward_state))


class CollapseMonitor(TrainerCallback):
    """Warn (once per kind) when the metrics show the collapses the paper describes."""

    def __init__(self, window: int = 5, short_tokens: float = 8.0, cap_ratio: float = 0.8) -> None:
        self.window = window
        self.short_tokens = short_tokens
        self.cap_ratio = cap_ratio
        self.history: list[dict[str, Any]] = []
        self.warnings: list[dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or LENGTH_KEY not in logs and not any(k.startswith("rewards/") for k in logs):
            return
        self.history.append(dict(logs))
        kinds = set(w["kind"] for w in self.warnings)
        found = length_collapse(self.history, self.window, self.short_tokens, self.cap_ratio)
        if found and f"length-{found}" not in kinds:
            msg = (f"length collapse: mean completion length <= {self.short_tokens} tokens for {self.window} steps"
                   if found == "short" else
                   f"length collapse: >= {self.cap_ratio:.0%} of completions hit the length cap for {self.window} steps")
            self._warn(f"length-{found}", msg, state.global_step)
        if "reward-mode" not in kinds and reward_mode_collapse(self.history, self.window):
            self._warn("reward-mode", "reward-mode collapse: format rewards rising while correctness falls",
                       state.global_step)
        if "signal-stall" not in kinds and signal_stall(self.history, 2 * self.window):
            self._warn("signal-stall", f"no learning signal: >= 90% of groups gave every completion the same "
                       f"reward for {2 * self.window} steps (all right or, more often, all wrong in the same "
                       "way); the advantages are zero", state.global_step)
        kinds = set(w["kind"] for w in self.warnings)
        if not kinds & {"signal-stall", "outcome-stall"} and outcome_stall(self.history, 2 * self.window):
            self._warn("outcome-stall", f"no outcome signal: >= 90% of groups had every completion right or every "
                       f"one wrong for {2 * self.window} steps; the advantages come from the other rewards "
                       "(format, memory, noise) alone", state.global_step)

    def _warn(self, kind: str, message: str, step: int) -> None:
        logger.warning("step %d: %s", step, message)
        self.warnings.append({"kind": kind, "step": step, "message": message})


# ----------------------------------------------------------------------------- console
def progress_postfix(logs: dict[str, Any]) -> str | None:
    """The few numbers of a step's log a person watches, for the progress bar: the outcome reward
    (the share of correct completions for the 0/1 correctness rewards), the total reward and the
    memory's size (keys = questions, values = stored completions; success and failure memory
    together). None for a log without them (the end-of-training summary).

    >>> progress_postfix({"rewards/correctness_reward/mean": 0.4375, "reward": 3.2, "memory/success_keys": 5.0,
    ...                   "memory/failure_keys": 12.0, "memory/success_values": 30.0, "memory/failure_values": 98.0})
    'correct 0.44 | reward 3.20 | memory 17 keys, 128 values'
    """
    parts = []
    outcome = next((k for k in CORRECTNESS_KEYS if logs.get(k) is not None), None)
    if outcome is not None:
        label = "outcome" if outcome.startswith("rewards/cosine") else "correct"
        parts.append(f"{label} {float(logs[outcome]):.2f}")
    if logs.get(TOTAL_REWARD_KEY) is not None:
        parts.append(f"reward {float(logs[TOTAL_REWARD_KEY]):.2f}")
    if all(logs.get(k) is not None for k in MEMORY_KEY_COUNTS + MEMORY_VALUE_COUNTS):
        keys, values = (sum(float(logs[k]) for k in names) for names in (MEMORY_KEY_COUNTS, MEMORY_VALUE_COUNTS))
        parts.append(f"memory {keys:.0f} keys, {values:.0f} values")
    return " | ".join(parts) or None


class ProgressBar(TrainerCallback):
    """One tqdm bar for the optimizer steps (main process only): steps done, s/step and the time
    left (tqdm's), and :func:`progress_postfix` of the latest log. Every number of the log still
    goes to ``metrics.jsonl`` and to ``report_to``; ``disable_tqdm=True`` hides the bar."""

    def __init__(self) -> None:
        self.bar: Any = None
        self._step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from tqdm.auto import tqdm

        self._step = state.global_step  # a resumed run starts its bar where it left off
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                        dynamic_ncols=True, disable=bool(args.disable_tqdm))

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self._step)
            self._step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        text = progress_postfix(logs or {})
        if self.bar is not None and text:
            self.bar.set_postfix_str(text, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def use_progress_bar(trainer: Any) -> ProgressBar:
    """Replace the Trainer's console callbacks by a :class:`ProgressBar`.

    transformers' ``ProgressCallback`` writes every log dict under its bar (60 keys a step for
    GRPO with memory) and its ``PrinterCallback`` (``disable_tqdm``) prints them; both go.
    Logging and ``report_to`` callbacks (TensorBoard, W&B) are left as they are.
    """
    from transformers.trainer import DEFAULT_PROGRESS_CALLBACK
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for printing in {ProgressCallback, PrinterCallback, DEFAULT_PROGRESS_CALLBACK}:
        trainer.remove_callback(printing)
    bar = ProgressBar()
    trainer.add_callback(bar)
    return bar


class _LinesAboveBars(logging.StreamHandler):
    """A console handler that writes each record through ``tqdm.write``: a whole line above the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def lines_above_progress_bars(loggers: Sequence[str] = ("", "transformers")) -> Iterator[None]:
    """While a progress bar runs: warnings (log records and Python warnings) as whole lines above
    it, and no INFO records (checkpoint saves would push the bar down every few steps) unless
    the logger is at DEBUG (``memrl -v``). The console handlers of ``loggers`` (the root logger;
    transformers' does not propagate to it) are swapped for one that writes through tqdm, and
    put back after."""
    from tqdm.auto import tqdm

    saved = []
    for name in loggers:
        log = logging.getLogger(name)
        console = [h for h in log.handlers if isinstance(h, logging.StreamHandler)
                   and getattr(h, "stream", None) in (sys.stdout, sys.stderr)]
        if not console:
            continue
        above = _LinesAboveBars(console[0].stream)
        above.setFormatter(console[0].formatter)
        above.setLevel(max(console[0].level, logging.DEBUG if log.getEffectiveLevel() <= logging.DEBUG
                           else logging.WARNING))
        saved.append((log, list(log.handlers)))
        log.handlers = [h for h in log.handlers if h not in console] + [above]

    def write_warning(message, category, filename, lineno, file=None, line=None):
        tqdm.write(warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n"), file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = write_warning
            yield
    finally:
        for log, handlers in saved:
            log.handlers = handlers
