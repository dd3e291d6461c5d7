"""LM scoring backends for few-shot prompting (POEM and its baselines).

* :class:`HFScorer` — transformers causal LM, batched, with a KV cache of the shared prefix.
* :class:`OpenAICompletionsScorer` — any OpenAI-compatible ``/v1/completions`` server that
  returns prompt log-probabilities (vLLM; other servers only if they honour ``echo``).
"""

from memrl.lm.base import ContinuationScores, Scorer
from memrl.lm.hf import HFScorer
from memrl.lm.openai_http import LogprobsUnavailableError, OpenAICompletionsScorer

__all__ = [
    "ContinuationScores",
    "Scorer",
    "HFScorer",
    "OpenAICompletionsScorer",
    "LogprobsUnavailableError",
]
