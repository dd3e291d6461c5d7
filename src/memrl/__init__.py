"""memrl: episodic memory for language models.

Two methods share one episodic kNN memory (:class:`memrl.memory.EpisodicMemory`):

* **Memory-R+** (Le et al., 2025, arXiv 2504.02273): intrinsic exploit/explore rewards for
  GRPO fine-tuning of tiny LLMs (:mod:`memrl.rewards`).
* **POEM** (Do et al., 2024, arXiv 2408.07465): per-query ordering of few-shot examples
  chosen from a memory of (input, order, reward) (:mod:`memrl.poem`).
"""

from memrl.memory import EpisodicMemory
from memrl.version import __version__

__all__ = ["EpisodicMemory", "__version__"]
