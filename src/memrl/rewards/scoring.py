"""The Memory-R+ reward formulas as pure array functions (no state, no I/O).

Shapes: ``d`` is the embedding dimension; all vectors are unit-norm float32.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def exploit_raw(responses: np.ndarray, centroid: np.ndarray) -> np.ndarray:
    """``R_exploit = −‖Enc(a) − mean(B(M_s, q))‖₂`` for each response row.

    Args:
        responses: ``(g, d)`` embeddings of completions of one question.
        centroid: ``(d,)`` mean of the retrieved successful responses.

    >>> [round(float(r), 4) for r in exploit_raw(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 0.0]))]
    [-0.0, -1.4142]
    """
    return -np.linalg.norm(np.asarray(responses, np.float32) - np.asarray(centroid, np.float32), axis=1)


def explore_raw(max_cosine: np.ndarray) -> np.ndarray:
    """``R_explore = 1 − max_{b ∈ B(M_f, q)} cos(Enc(a), b)`` given the max cosines.

    >>> explore_raw(np.array([1.0, 0.25, -1.0])).tolist()
    [0.0, 0.75, 2.0]
    """
    return 1.0 - np.asarray(max_cosine, np.float32)


def minmax_normalize(values: np.ndarray, lo: float, hi: float, eps: float = 1e-8) -> np.ndarray:
    """``(R − min_w) / (max_w − min_w + ε)``.

    >>> minmax_normalize(np.array([1.0, 2.0, 3.0]), 1.0, 3.0, eps=0.0).tolist()
    [0.0, 0.5, 1.0]
    """
    return (np.asarray(values, np.float64) - lo) / (hi - lo + eps)


class RunningMinMax:
    """Min-max normaliser over the last ``window`` raw values (the paper's w = 100).

    :meth:`update_and_normalize` normalises a whole batch with one pair of bounds taken over the
    previous ``window`` values *and the entire batch*, then appends the batch. So the result does
    not depend on the order of completions, even for a batch larger than the window (GRPO steps
    of 16 x 16 = 256 completions against w = 100).

    >>> n = RunningMinMax(window=3, eps=0.0)
    >>> n.update_and_normalize(np.array([0.0, 1.0])).tolist()
    [0.0, 1.0]
    >>> n.update_and_normalize(np.array([3.0, 4.0])).tolist()  # bounds over 0, 1 and 3, 4
    [0.75, 1.0]
    """

    def __init__(self, window: int = 100, eps: float = 1e-8) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.eps = eps
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
        return minmax_normalize(raw, lo, hi, self.eps)

    def state_dict(self) -> dict:
        return {"window": self.window, "eps": self.eps, "values": list(self.values)}

    def load_state_dict(self, state: dict) -> None:
        self.window, self.eps = int(state["window"]), float(state["eps"])
        self.values = deque(state["values"], maxlen=self.window)
