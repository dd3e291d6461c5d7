"""The one place memrl touches TRL's private ``GRPOTrainer`` API.

TRL 1.x has no public hook for the time a step spends generating and computing rewards, for the
per-function reward matrix of a step, nor for adding a metric to its log from outside a reward
function. :class:`MemrlGRPOTrainer` overrides the private methods involved; :func:`missing_trl_hooks`
names any that a TRL upgrade renamed, and a test calls it so such an upgrade fails loudly instead
of silently losing the timing and the reward diagnostics.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from trl import GRPOTrainer

from memrl.grpo.callbacks import StepTimer
from memrl.names import CORRECTNESS_REWARDS
from memrl.rewards.diagnostics import batch_diagnostics

logger = logging.getLogger(__name__)

# private GRPOTrainer methods overridden below, and the metric buffer written to
TRL_METHODS = ("_generate", "_calculate_rewards")
TRL_METRIC_BUFFER = "_metrics"
# instance attributes read by the diagnostics
TRL_ATTRIBUTES = ("reward_func_names", "reward_weights", "num_generations", "scale_rewards")


def missing_trl_hooks(trainer: Any = None) -> list[str]:
    """Names of the private TRL members memrl relies on that this TRL lacks (empty when all are
    there). Pass a built trainer to check the instance attributes too."""
    missing = [f"GRPOTrainer.{name}" for name in TRL_METHODS if not callable(getattr(GRPOTrainer, name, None))]
    if trainer is not None:
        buffer = getattr(trainer, TRL_METRIC_BUFFER, None)
        if not (isinstance(buffer, dict) and "train" in buffer):
            missing.append(f"GRPOTrainer.{TRL_METRIC_BUFFER}['train']")
        missing += [f"GRPOTrainer.{name}" for name in TRL_ATTRIBUTES if not hasattr(trainer, name)]
    return missing


def completion_records(step: int, inputs: Any, completions: Any, completion_ids_list: Any,
                       reward_rows: list[list[float]], reward_names: list[str], group_size: int) -> list[dict[str, Any]]:
    """One record per sampled completion: step, group, question, text, token count and each
    reward (NaN, a reward that skipped the sample, becomes None)."""
    out = []
    for i, (inp, completion, ids, row) in enumerate(zip(inputs, completions, completion_ids_list, reward_rows)):
        text = completion[-1]["content"] if isinstance(completion, list) else str(completion)
        rewards = {name: (None if v != v else float(v)) for name, v in zip(reward_names, row)}
        out.append({"step": step, "group": i // group_size, "question": inp.get("question"), "answer": inp.get("answer"),
                    "completion": text, "tokens": len(ids), "rewards": rewards})
    return out


class MemrlGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` that times generation and reward computation per step (``time/*``
    metrics) and logs what each reward term follows (``diag/*`` metrics, see
    :func:`memrl.rewards.diagnostics.batch_diagnostics`): its within-group AUC against
    correctness, its correlation with completion length in groups without correctness variance,
    and its share of the advantage variance."""

    def __init__(self, *args: Any, completions_log: Any = None, completions_steps: Any = (), **kwargs: Any) -> None:
        """``completions_log``: a JSONL path that receives the sampled completions of the optimizer
        steps in ``completions_steps`` (see :func:`completion_records`); nothing is written without it."""
        super().__init__(*args, **kwargs)
        self.completions_log = completions_log
        self.completions_steps = frozenset(int(s) for s in completions_steps)
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

    def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> Any:
        with self.step_timer.part("reward"):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.model.training:  # training batches only: evaluation groups may be of another size
            try:
                self._log_diagnostics(rewards_per_func, completion_ids_list)
            except Exception as exc:  # diagnostics must never stop a training run
                logger.warning("reward diagnostics failed this step: %s", exc)
            step = self.state.global_step + 1  # the optimizer step this batch was generated for
            if self.completions_log is not None and step in self.completions_steps and self.accelerator.is_main_process:
                try:
                    self._save_completions(step, inputs, completions, completion_ids_list, rewards_per_func)
                except OSError as exc:  # a log file must never stop a training run
                    logger.warning("could not save the completions of step %d: %s", step, exc)
        return rewards_per_func

    def _save_completions(self, step: int, inputs: Any, completions: Any, completion_ids_list: Any,
                          rewards_per_func: Any) -> None:
        """Append this process's completions of ``step`` to the log (replacing that step's records
        if a resumed run generates it again)."""
        from pathlib import Path

        from memrl.io import atomic_write_jsonl
        from memrl.tasks.files import iter_jsonl

        n = len(completions)
        start = self.accelerator.process_index * n  # TRL gathers every process's reward rows
        values = rewards_per_func[start:start + n].detach().float().cpu().tolist()
        records = completion_records(step, inputs, completions, completion_ids_list, values,
                                     list(self.reward_func_names), self.num_generations)
        earlier = iter_jsonl(self.completions_log) if Path(self.completions_log).is_file() else ()
        kept = [r for _, r in earlier if r.get("step") != step]
        atomic_write_jsonl(self.completions_log, kept + records)

    def _log_diagnostics(self, rewards_per_func: Any, completion_ids_list: Any) -> None:
        """``diag/*`` metrics of this step's rewards (every process's rows: TRL gathered them)."""
        names = list(self.reward_func_names)
        judge = next((n for n in names if n in CORRECTNESS_REWARDS), None)
        if judge is None:
            return
        values = rewards_per_func.detach().float().cpu().numpy()
        lengths = [len(ids) for ids in completion_ids_list]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            lengths = gather_object(lengths)  # rank order, as the reward rows
        if len(lengths) != values.shape[0]:
            return
        terms = {name: values[:, j] for j, name in enumerate(names)}
        correct = (terms[judge] > CORRECTNESS_REWARDS[judge]).astype(np.float64)
        groups = np.arange(values.shape[0]) // self.num_generations
        weights = dict(zip(names, self.reward_weights.detach().float().cpu().tolist()))
        diag = batch_diagnostics(terms, correct, groups, np.asarray(lengths, dtype=np.float64), weights=weights,
                                 scale_rewards=self.scale_rewards)
        for key, value in diag.items():
            self.log_metric_value(key, value)
