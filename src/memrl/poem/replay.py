"""Replay POEM's read rules on a finished evaluation's numbers, with no LM call.

:func:`memrl.poem.evaluate.replay_arrays` keeps, per (task, seed), the fit's trial matrix and the
test queries' scores under every candidate order of the fixed demonstrations. Any read setting
(encoding, reward, k, read rule, shrinkage) or selection rule is then a look-up: the memory is
rebuilt from the matrix (:func:`memory_from_matrix`), each test query reads it as
:meth:`PoemOptimizer.select_vec` does (:func:`read_memory`), and its prediction is the stored
score row of the order chosen. A new rule is evaluated on every study pair in seconds instead of
a refit per pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memrl.poem.matrix import LooResult, TrialMatrix, loo_select
from memrl.poem.reward_memory import memory_from_matrix, read_memory
from memrl.poem.selection import HeldOutChoice, select_candidate
from memrl.poem.settings import Setting

REQUIRED = (*("fit_" + f for f in TrialMatrix.ARRAYS), "fit_key_hash", "test_vecs", "test_gold", "demo_vecs",
            "demo_labels", "test_orders", "test_scores")


@dataclass
class Replay:
    """One evaluation's numbers (fixed demonstrations).

    Attributes:
        matrix: the fit's trial matrix (keys are hashes of the input texts: they only say which
            inputs are the same).
        demo_vecs, demo_labels: the fixed demonstrations' embeddings and labels.
        test_vecs, test_gold: the test queries' embeddings and gold labels.
        test_orders: ``(P, n)`` the candidate orders the test queries were scored under.
        test_scores: ``(m, P, C)`` their normalised label scores under each.
        knn_matrix: the fit's trial matrix with per-query kNN demonstrations (``examples="choose"``),
            same inputs; the selection replays with it, test predictions only where it chooses the
            fixed demonstrations.
    """

    matrix: TrialMatrix
    demo_vecs: np.ndarray
    demo_labels: np.ndarray
    test_vecs: np.ndarray
    test_gold: np.ndarray
    test_orders: np.ndarray
    test_scores: np.ndarray
    knn_matrix: TrialMatrix | None = None

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], source: str = "arrays") -> Replay:
        missing = [k for k in REQUIRED if k not in arrays]
        if missing:
            raise ValueError(f"{source}: cannot replay, missing {missing} (saved without fixed demonstrations, "
                             "or before the oracle row scored every order)")
        knn = TrialMatrix.from_arrays(arrays, "knn_fit_") if "knn_fit_scores" in arrays else None
        return cls(TrialMatrix.from_arrays(arrays, "fit_"), np.asarray(arrays["demo_vecs"]), np.asarray(arrays["demo_labels"]),
                   np.asarray(arrays["test_vecs"]), np.asarray(arrays["test_gold"]),
                   np.asarray(arrays["test_orders"]), np.asarray(arrays["test_scores"]), knn)

    @classmethod
    def load(cls, path: str | Path) -> Replay:
        """From a ``.npz`` written by the POEM study (``bench/results/poem_study_v2/<task>_<seed>.npz``)."""
        with np.load(path, allow_pickle=False) as z:
            return cls.from_arrays({k: z[k] for k in z.files}, source=str(path))

    def orders_chosen(self, setting: Setting, *, most_similar_last: bool = True) -> list[tuple[int, ...]]:
        """The order of the demonstrations POEM under ``setting`` gives each test query."""
        memory, tables, prior, _ = memory_from_matrix(self.matrix, setting)
        labels = [int(x) for x in self.demo_labels]
        return [read_memory(memory, tables, prior, setting, q, self.demo_vecs @ q, labels,
                            most_similar_last=most_similar_last).perm for q in self.test_vecs]

    def predictions_of(self, orders: list[tuple[int, ...]]) -> np.ndarray:
        """``(m,)`` predicted label of each test query under its order (one per query)."""
        col = {tuple(int(x) for x in o): p for p, o in enumerate(self.test_orders)}
        missing = sorted({o for o in orders if o not in col})
        if missing:
            raise ValueError(f"orders {missing[:3]} were not scored on the test queries; replay covers the "
                             f"{len(col)} candidate orders only")
        return self.test_scores[np.arange(len(orders)), [col[o] for o in orders]].argmax(axis=1)

    def predictions(self, setting: Setting, *, most_similar_last: bool = True) -> np.ndarray:
        """``(m,)`` test predictions of POEM read under ``setting``."""
        return self.predictions_of(self.orders_chosen(setting, most_similar_last=most_similar_last))

    def accuracy(self, setting: Setting, *, most_similar_last: bool = True) -> float:
        return float((self.predictions(setting, most_similar_last=most_similar_last) == self.test_gold).mean())

    def leave_one_out(self, *, guard: bool = False, most_similar_last: bool = True) -> LooResult:
        """The fit's leave-one-out selection (as :meth:`PoemOptimizer.leave_one_out` in fixed mode)."""
        return loo_select(self.matrix, most_similar_last=most_similar_last, guard=guard)  # all three encodings

    def held_out_choice(self, rule: str = "one_se", *, most_similar_last: bool = True) -> HeldOutChoice:
        """The fit's choice by ``rule`` with its nested cross-validated estimate
        (:func:`memrl.poem.selection.select_candidate`) over the fixed demonstrations' trial matrix
        and, when saved, the kNN demonstrations' (then :meth:`accuracy` replays it only if it chose
        the fixed ones)."""
        sources = {"fixed": self.matrix, **({"knn": self.knn_matrix} if self.knn_matrix is not None else {})}
        return select_candidate(sources, rule=rule, most_similar_last=most_similar_last)

    def choice_accuracy(self, choice: HeldOutChoice, *, most_similar_last: bool = True) -> float:
        """Test accuracy of a :meth:`held_out_choice` (``ValueError`` when it chose the kNN
        demonstrations, whose test prompts were not scored, or an order outside the scored ones)."""
        if choice.source != "fixed":
            raise ValueError(f"the choice reads the {choice.source!r} demonstrations; only the fixed ones' test "
                             "scores were saved")
        return self.accuracy(choice.setting, most_similar_last=most_similar_last)
