"""The Memory-R+ reward formulas as pure array functions (no state, no I/O).

Shapes: ``d`` is the embedding dimension; all vectors are unit-norm float32.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def exploit_raw(responses: np.ndarray, centroid: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """``R_exploit = −‖Enc(a) − mean(B(M_s, q))‖₂`` for each response row.

    Args:
        responses: ``(g, d)`` embeddings of completions of one question, or one ``(d,)``
            embedding (a 0-d result).
        centroid: ``(d,)`` mean of the retrieved successful responses, or one ``(g, d)`` row per
            response.
        dtype: arithmetic precision (``group_loo`` computes in float64).

    >>> [round(float(r), 4) for r in exploit_raw(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 0.0]))]
    [-0.0, -1.4142]
    """
    diff = np.asarray(responses, dtype) - np.asarray(centroid, dtype)
    return -np.linalg.norm(diff, axis=None if diff.ndim == 1 else 1)


def explore_raw(max_cosine: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """``R_explore = 1 − max_{b ∈ B(M_f, q)} cos(Enc(a), b)`` given the max cosines.

    >>> explore_raw(np.array([1.0, 0.25, -1.0])).tolist()
    [0.0, 0.75, 2.0]
    """
    return 1.0 - np.asarray(max_cosine, dtype)


def max_cosine(probe: np.ndarray, pool: np.ndarray) -> float:
    """Highest cosine of ``probe`` with the rows of ``pool``, both norms divided out (as the
    reference code does, so rows need not be unit-norm), in the inputs' precision.

    >>> max_cosine(np.array([1.0, 0.0]), np.array([[0.0, 2.0], [3.0, 3.0]]))  # doctest: +ELLIPSIS
    0.7071...
    """
    dots = pool @ probe
    return float(np.max(dots / (np.linalg.norm(pool, axis=1) * np.linalg.norm(probe))))


def outcome_varies(group_of: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    """Per group ``0 .. max(group_of)``, whether the outcome differs among its completions (a
    group whose completions all score the same has zero variance). Max against min, not a
    computed variance: the variance of equal floats can round to a tiny non-zero.

    >>> outcome_varies(np.array([0, 0, 1, 1, 2]), np.array([1.0, 0.0, 1.0, 1.0, 0.0])).tolist()
    [True, False, False]
    """
    group_of = np.asarray(group_of, np.int64)
    outcome = np.asarray(outcome, np.float64)
    n_groups = int(group_of.max()) + 1 if group_of.size else 0
    lo, hi = np.full(n_groups, np.inf), np.full(n_groups, -np.inf)
    np.minimum.at(lo, group_of, outcome)
    np.maximum.at(hi, group_of, outcome)
    return hi > lo


def minmax_normalize(values: np.ndarray, lo: float, hi: float, eps: float = 1e-8) -> np.ndarray:
    """``(R − min_w) / (max_w − min_w + ε)``.

    >>> minmax_normalize(np.array([1.0, 2.0, 3.0]), 1.0, 3.0, eps=0.0).tolist()
    [0.0, 0.5, 1.0]
    """
    return (np.asarray(values, np.float64) - lo) / (hi - lo + eps)


def _flat_output(raw: np.ndarray, value: float, slope: float) -> np.ndarray:
    return value + slope * np.asarray(raw, np.float64)


class RunningMinMax:
    """Min-max normaliser over the last ``window`` raw values (the paper's w = 100), by batch.

    :meth:`update_and_normalize` normalises a whole batch with one pair of bounds taken over the
    previous ``window`` values *and the entire batch*, then appends the batch. So the result does
    not depend on the order of completions, even for a batch larger than the window (GRPO steps
    of 16 x 16 = 256 completions against w = 100).

    A *flat* window, whose spread ``max − min`` is at most ``tolerance``, carries no information:
    stretching it would turn float rounding noise (a self-cosine is 1 only to ~1e-7 in float32)
    into the whole 0–1 range. Its values become ``flat_value + flat_slope * raw`` instead
    (default 0.0: the same for the whole batch, so no advantage inside a GRPO group).
    ``tolerance=0`` keeps the plain formula for every window that is not exactly constant.

    >>> n = RunningMinMax(window=3, eps=0.0)
    >>> n.update_and_normalize(np.array([0.0, 1.0])).tolist()
    [0.0, 1.0]
    >>> n.update_and_normalize(np.array([3.0, 4.0])).tolist()  # bounds over 0, 1 and 3, 4
    [0.75, 1.0]
    >>> RunningMinMax(tolerance=1e-6).update_and_normalize(np.array([0.0, 1.2e-7, -1.2e-7])).tolist()
    [0.0, 0.0, 0.0]
    """

    kind = "batch"

    def __init__(self, window: int = 100, eps: float = 1e-8, tolerance: float = 0.0,
                 flat_value: float = 0.0, flat_slope: float = 0.0) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        self.window = window
        self.eps = eps
        self.tolerance = tolerance
        self.flat_value = flat_value
        self.flat_slope = flat_slope
        self.values: deque[float] = deque(maxlen=window)

    def update_and_normalize(self, raw: np.ndarray, batch: np.ndarray | None = None) -> np.ndarray:
        """Normalise ``raw`` with bounds over the window and ``batch``, then add ``batch`` to the window.

        ``batch`` is the whole step's values when ``raw`` is one process's share of them (default:
        ``raw`` itself), so every process normalises with the same bounds.
        """
        raw = np.asarray(raw, np.float64)
        batch = raw if batch is None else np.asarray(batch, np.float64)
        if batch.size == 0:
            return raw
        lo, hi = float(batch.min()), float(batch.max())
        if self.values:
            lo, hi = min(lo, min(self.values)), max(hi, max(self.values))
        self.values.extend(batch.tolist())
        if hi - lo <= self.tolerance:
            return _flat_output(raw, self.flat_value, self.flat_slope)
        return minmax_normalize(raw, lo, hi, self.eps)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "window": self.window, "eps": self.eps, "tolerance": self.tolerance,
                "flat_value": self.flat_value, "flat_slope": self.flat_slope, "values": list(self.values)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; settings a state from an older memrl lacks keep this
        normaliser's values."""
        kind = state.get("kind", "batch")
        if kind != self.kind:
            raise ValueError(f"normaliser state is {kind!r}, this normaliser is {self.kind!r}")
        self.window = int(state["window"])
        self.eps = float(state.get("eps", self.eps))
        self.tolerance = float(state.get("tolerance", self.tolerance))
        self.flat_value = float(state.get("flat_value", self.flat_value))
        self.flat_slope = float(state.get("flat_slope", self.flat_slope))
        self.values = deque(state["values"], maxlen=self.window)


class SequentialMinMax(RunningMinMax):
    """The reference code's normaliser: one value at a time, in call order.

    Each raw value is appended to the window (a ``deque(window)``) *before* it is normalised,
    then mapped to ``(x − min) / (max − min)`` over the window, with no ε. A flat window (spread
    ``≤ tolerance``; the reference: exactly ``max == min``) gives ``flat_value + flat_slope * x``;
    the reference returns the raw distance for exploit (its reward ``1 − d``, i.e. value 1, slope
    1 on memrl's raw ``−d``) and 0.0 for explore. The result depends on the order of the values.

    >>> n = SequentialMinMax(window=2)
    >>> n.update_and_normalize(np.array([1.0, 3.0, 2.0])).tolist()  # windows [1], [1, 3], [3, 2]
    [0.0, 1.0, 0.0]
    """

    kind = "sequential"

    def __init__(self, window: int = 100, tolerance: float = 0.0, flat_value: float = 0.0,
                 flat_slope: float = 0.0) -> None:
        super().__init__(window, 0.0, tolerance, flat_value, flat_slope)

    def update_and_normalize(self, raw: np.ndarray, batch: np.ndarray | None = None) -> np.ndarray:
        """Normalise the values of ``raw`` one by one, appending each first. ``batch`` is not
        used: a multi-process caller passes every process's values in one agreed order."""
        raw = np.asarray(raw, np.float64)
        out = np.empty(raw.shape, np.float64)
        for i, x in enumerate(raw.tolist()):
            self.values.append(x)
            lo, hi = min(self.values), max(self.values)
            if hi - lo <= self.tolerance:
                out[i] = self.flat_value + self.flat_slope * x
            else:
                out[i] = (x - lo) / (hi - lo)
        return out
