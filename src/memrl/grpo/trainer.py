"""The one place memrl touches TRL's private ``GRPOTrainer`` API.

TRL 1.x has no public hook for the time a step spends generating and computing rewards, nor for
adding a metric to its log from outside a reward function. :class:`MemrlGRPOTrainer` overrides
the private methods involved; :func:`missing_trl_hooks` names any that a TRL upgrade renamed, and
a test calls it so such an upgrade fails loudly instead of silently losing the timing.
"""

from __future__ import annotations

import logging
from typing import Any

from trl import GRPOTrainer

from memrl.grpo.callbacks import StepTimer

logger = logging.getLogger(__name__)

# private GRPOTrainer methods overridden below, and the metric buffer written to
TRL_METHODS = ("_generate", "_calculate_rewards")
TRL_METRIC_BUFFER = "_metrics"


def missing_trl_hooks(trainer: Any = None) -> list[str]:
    """Names of the private TRL members memrl relies on that this TRL lacks (empty when all are
    there). Pass a built trainer to check the instance attributes too."""
    missing = [f"GRPOTrainer.{name}" for name in TRL_METHODS if not callable(getattr(GRPOTrainer, name, None))]
    if trainer is not None:
        buffer = getattr(trainer, TRL_METRIC_BUFFER, None)
        if not (isinstance(buffer, dict) and "train" in buffer):
            missing.append(f"GRPOTrainer.{TRL_METRIC_BUFFER}['train']")
    return missing


class MemrlGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` that times generation and reward computation per step (``time/*`` metrics)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        missing = missing_trl_hooks(self)
        if missing:
            import trl

            logger.warning("TRL %s lacks %s: step timing is not measured (memrl.grpo.trainer needs an update)",
                           trl.__version__, ", ".join(missing))
        self.step_timer = StepTimer(sink=self.log_metric_value)
        self.add_callback(self.step_timer)

    def log_metric_value(self, name: str, value: float) -> None:
        """Add one value to this step's logged metrics (averaged over the logging window like TRL's)."""
        buffer = getattr(self, TRL_METRIC_BUFFER, None)
        if isinstance(buffer, dict) and "train" in buffer:
            buffer["train"][name].append(value)

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        with self.step_timer.part("generation"):
            return super()._generate(*args, **kwargs)

    def _calculate_rewards(self, *args: Any, **kwargs: Any) -> Any:
        with self.step_timer.part("reward"):
            return super()._calculate_rewards(*args, **kwargs)
