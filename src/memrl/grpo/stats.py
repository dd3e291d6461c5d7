"""Statistics of training runs: the whole-run step timing read back from ``metrics.jsonl`` rows
(a resumed run's in-memory timer covers only its last segment) and how a training curve moved.
Evaluation statistics (Wilson, McNemar, pass@k) are in :mod:`memrl.stats`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

STEP_TIME_KEY = "time/step_s"
TIMING_METRICS = (("seconds_per_step", STEP_TIME_KEY), ("generation_share", "time/generation_share"),
                  ("reward_share", "time/reward_share"))


def step_timing(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Seconds per step and generation / reward shares averaged over every logged step, and the
    whole-run training time (``logged_train_seconds``), from ``metrics.jsonl`` rows. Empty when no
    row carries step timing."""
    timed = [r for r in rows if STEP_TIME_KEY in r]
    if not timed:
        return {}
    out: dict[str, float] = {}
    for key, metric in TIMING_METRICS:
        vals = [r[metric] for r in timed if metric in r]
        if vals:
            out[key] = statistics.fmean(vals)
    out["steps_timed"] = len(timed)
    out["logged_train_seconds"] = sum(r[STEP_TIME_KEY] for r in timed)
    return out


def first_last_means(values: Sequence[float], n: int = 10, min_len: int = 20) -> tuple[float, float] | None:
    """Means of the first and the last ``n`` values (how a training curve moved), or None when
    there are fewer than ``min_len`` values (the two windows would overlap or be noise)."""
    if len(values) < min_len:
        return None
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])
