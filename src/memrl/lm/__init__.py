"""Language models: loading them, and scoring continuations with them.

* :mod:`memrl.lm.loading` — :func:`resolve_model` (hub id, local folder, or the offline SmolLM2
  bundle), :func:`load_model`, :func:`model_identity`, batched :func:`generate`.
* :class:`HFScorer` — transformers causal LM, batched, with a KV cache of the shared prefix.
* :class:`OpenAICompletionsScorer` — any OpenAI-compatible ``/v1/completions`` server that
  returns prompt log-probabilities (vLLM; other servers only if they honour ``echo``).
"""

from memrl.lm.base import ContinuationScores, Scorer
from memrl.lm.hf import HFScorer
from memrl.lm.loading import generate, load_model, model_identity, resolve_model
from memrl.lm.openai_http import LogprobsUnavailableError, OpenAICompletionsScorer

__all__ = [
    "ContinuationScores",
    "Scorer",
    "HFScorer",
    "OpenAICompletionsScorer",
    "LogprobsUnavailableError",
    "generate",
    "load_model",
    "model_identity",
    "resolve_model",
]
