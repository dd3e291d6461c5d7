"""POEM — prompt optimisation with episodic memory (Do et al., ECAI 2024; arXiv 2408.07465).

Per-query ordering of few-shot demonstrations: ``fit`` stores (input embedding, similarity-rank
order code, reward) in an :class:`memrl.memory.EpisodicMemory`; ``select`` reads the best code
from the nearest training inputs and decodes it with the query's own ranks (no LM call).
See ``docs/poem.md``.
"""

from memrl.poem.config import PoemConfig
from memrl.poem.fitting import FitPlan, SourceFit
from memrl.poem.matrix import LooResult, TrialMatrix, loo_select
from memrl.poem.optimizer import FitReport, FitTrials, PoemMismatchError, PoemOptimizer, Selection
from memrl.poem.orders import (
    decode_label_order,
    decode_order,
    encode_label_order,
    encode_order,
    kate_code,
    label_ranks,
    sample_orders,
    similarity_ranks,
)
from memrl.poem.reading import best_action
from memrl.poem.selection import HeldOutChoice, select_candidate
from memrl.poem.selector import PoemExampleSelector
from memrl.poem.settings import Setting

__all__ = [
    "PoemConfig", "PoemOptimizer", "PoemExampleSelector", "PoemMismatchError", "Selection",
    "FitPlan", "FitReport", "FitTrials", "best_action", "encode_order", "decode_order", "similarity_ranks",
    "sample_orders", "kate_code", "encode_label_order", "decode_label_order", "label_ranks",
    "TrialMatrix", "Setting", "LooResult", "loo_select", "HeldOutChoice", "select_candidate", "SourceFit",
]
