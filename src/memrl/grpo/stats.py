"""Statistics of evaluations and training runs: pure functions over counts and metric rows.

Accuracy intervals (Wilson), the exact McNemar test for two models graded on the same problems,
pass@k, mean ± std over seeds, pooled accuracy over seeds, and the whole-run step timing read back
from ``metrics.jsonl`` rows (a resumed run's in-memory timer covers only its last segment).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

STEP_TIME_KEY = "time/step_s"
TIMING_METRICS = (("seconds_per_step", STEP_TIME_KEY), ("generation_share", "time/generation_share"),
                  ("reward_share", "time/reward_share"))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): ``1 − C(n−c, k) / C(n, k)``.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 0, 2), pass_at_k(4, 4, 4)
    (0.25, 0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for the default ``z``).

    Used instead of the normal approximation because benchmark accuracies here are often near 0
    or 1 on ~100 problems, where ``p ± z·sqrt(p(1−p)/n)`` leaves [0, 1] or collapses to a point.

    >>> [round(x, 3) for x in wilson_interval(56, 100)]
    [0.462, 0.653]
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need n >= 1 and 0 <= successes <= n, got successes={successes}, n={n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0 or n successes an end is exactly 0 or 1; set it so rounding cannot leave it at 0.99999
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for two models graded on the same problems.

    ``only_a``: problems only model A solved; ``only_b``: only B. Problems both or neither solved
    carry no information about which is better. Under "equally good" each discordant problem is a
    fair coin, so p = P(a split at least this lopsided) = 2 · BinomCDF(min; a + b, 1/2), capped at 1.

    >>> mcnemar_exact_p(0, 6), mcnemar_exact_p(3, 3)
    (0.03125, 1.0)
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a}, {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def pooled_accuracy(correct_and_n: Sequence[tuple[int, int]]) -> dict[str, Any] | None:
    """Correct answers over several runs' problems, with a 95% Wilson interval.

    Seeds of one method share the same evaluation problems, so the pooled n over-states
    independence a little; it still shows the binomial noise of ~100 problems that a mean ± std of
    two seeds hides. None when there is nothing to pool.
    """
    pairs = [(int(c), int(n)) for c, n in correct_and_n if n]
    if not pairs:
        return None
    correct, n = sum(c for c, _ in pairs), sum(n for _, n in pairs)
    lo, hi = wilson_interval(correct, n)
    return {"correct": correct, "n": n, "accuracy": correct / n, "ci95": [lo, hi]}


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
