"""``memrl train``: GRPO (TRL's ``GRPOTrainer``) with the reward method of a resolved config.

Owns what a run does: its training rows, its rewards and their weights, resuming (checkpoint,
memory and the checks that a resume continues the same experiment), and the summary it leaves.
The configuration is :mod:`memrl.grpo.config`, the run folder's layout :mod:`memrl.grpo.rundir`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from memrl.grpo.config import TrainConfig, config_to_dict
from memrl.grpo.rundir import RunDir, reward_state_path
from memrl.io import atomic_write_json, atomic_write_text
from memrl.rewards.exploration import OutcomeExplorationConfig
from memrl.rewards.memory_config import RUNTIME_FIELDS
from memrl.rewards.memory_rewards import MemoryRewardConfig
from memrl.rewards.registry import build_rewards, reward_weight_list

logger = logging.getLogger(__name__)

# `--resume` without a path (or with one of these) means the newest checkpoint of the run
LATEST = ("", "latest", "true", "True")


def build_train_rows(train: TrainConfig, seed: int) -> tuple[list[dict[str, Any]], str]:
    """Training rows (``prompt``, ``question``, ``answer``) and the answer checker to use."""
    from memrl.tasks.math import DatasetSpec, load_rows, to_training_rows, trains_on_random_subset

    spec = DatasetSpec(name=train.dataset, split=train.dataset_split, question_column=train.question_column,
                       answer_column=train.answer_column, limit=train.dataset_limit, seed=seed,
                       shuffle=train.dataset_shuffle or trains_on_random_subset(train.dataset),
                       skip_bad_rows=train.skip_bad_rows, checker=train.checker, arith_level=train.arith_level)
    rows, checker = load_rows(spec)
    return to_training_rows(rows, train.prompt_style, train.shots, seed=seed), checker


# ----------------------------------------------------------------------------- run
def find_checkpoint(output_dir: str | os.PathLike, resume: str) -> Path:
    """The checkpoint to resume: ``latest``/empty → the newest ``checkpoint-*`` in ``output_dir``."""
    if resume in LATEST:
        found = RunDir(output_dir).checkpoints()
        if not found:
            raise FileNotFoundError(f"--resume: no checkpoint-* folder in {output_dir}")
        return found[-1]
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume: checkpoint folder not found: {path}")
    return path


# Settings a resumed run must share with the run it continues (the data, the prompts, the
# memory's shape): changing them mid-run would silently train a different experiment.
RESUME_INVARIANTS = ("model", "dataset", "dataset_split", "dataset_limit", "arith_level", "method",
                     "prompt_style", "shots", "question_column", "answer_column", "checker", "random_reward_std")


def check_resume_matches(run_dir: Path, train: TrainConfig, memory_cfg: MemoryRewardConfig,
                         exploration_cfg: OutcomeExplorationConfig | None = None) -> None:
    """Refuse to resume a run whose saved configuration differs in what defines the experiment
    (the train invariants, every memory option but where its encoder runs, every
    outcome-exploration option)."""
    saved = RunDir(run_dir).resolved_config()
    if saved is None:
        return
    now = {"train": dataclasses.asdict(train), "memory": dataclasses.asdict(memory_cfg),
           "exploration": dataclasses.asdict(exploration_cfg or OutcomeExplorationConfig())}
    diffs = [f"{k}: saved {saved['train'][k]!r}, now {now['train'][k]!r}"
             for k in RESUME_INVARIANTS if k in saved.get("train", {}) and saved["train"][k] != now["train"][k]]
    for section in ("memory", "exploration"):  # a run saved before a section existed has none to compare
        diffs += [f"{k}: saved {v!r}, now {now[section].get(k)!r}" for k, v in saved.get(section, {}).items()
                  if k not in RUNTIME_FIELDS and json.loads(json.dumps(now[section].get(k))) != v]
    if diffs:
        raise ValueError(f"cannot resume {run_dir}: its configuration differs in " + "; ".join(diffs)
                         + ". Resume with the run's own settings (`memrl train --resume <checkpoint>` reads them "
                         "from the run folder) or start a new run in another --output-dir.")


def run_training(train: TrainConfig, grpo: Any, memory_cfg: MemoryRewardConfig, resume: str | None = None,
                 encoder: Any = None, callbacks: Sequence[Any] = (), overwrite: bool = False,
                 options: dict[str, Any] | None = None,
                 exploration_cfg: OutcomeExplorationConfig | None = None) -> dict[str, Any]:
    """Train; return a summary dict (paths, timing, collapse warnings, final metrics).

    Args:
        train, grpo, memory_cfg, exploration_cfg: the resolved configuration (:func:`resolve_config`).
        resume: a checkpoint folder, or ``latest`` for the newest in ``grpo.output_dir``.
        encoder: optional :class:`~memrl.encoders.Encoder` to share (tests); built if None.
        callbacks: extra ``TrainerCallback`` objects (called after memrl's own).
        overwrite: a new (not resumed) run in a folder holding an earlier run deletes that run's
            checkpoints, metrics, memory and final model; without it such a run is refused.
        options: the flat options the run was started from (saved as ``run_options.json``, which
            ``memrl train --resume`` reads back).
    """
    from datasets import Dataset

    from memrl.distributed import rank
    from memrl.grpo.callbacks import (
        CollapseMonitor,
        MetricsJsonlCallback,
        RewardStateCallback,
        lines_above_progress_bars,
        use_progress_bar,
    )
    from memrl.grpo.trainer import MemrlGRPOTrainer
    from memrl.lm.loading import load_model
    from memrl.runtime import set_seed

    out = Path(grpo.output_dir)
    run = RunDir(out)
    earlier = run.artifacts() if resume is None else []
    if earlier:
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a run ({', '.join(earlier)}); pass --resume to continue "
                "it, --overwrite to replace it, or choose another --output-dir")
        if rank() == 0:
            logger.warning("overwrite: deleting the earlier run in %s", out)
            run.clear()
    out.mkdir(parents=True, exist_ok=True)
    set_seed(grpo.seed)
    checkpoint = find_checkpoint(out, resume) if resume is not None else None
    if checkpoint is not None:
        check_resume_matches(checkpoint.parent, train, memory_cfg, exploration_cfg)
    if rank() == 0:
        if options is not None:
            atomic_write_json(run.options_file, options)
        resolved = config_to_dict(train, grpo, memory_cfg, exploration_cfg)
        atomic_write_text(run.resolved_yaml, yaml.safe_dump(resolved, sort_keys=False))
        atomic_write_json(run.resolved_json, resolved)

    rows, checker = build_train_rows(train, grpo.seed)
    dataset = Dataset.from_list(rows)
    rewards, reward_state = build_rewards(train.method, style=train.prompt_style, answer_column="answer",
                                          checker=checker, max_completion_length=grpo.max_completion_length or 256,
                                          memory_config=memory_cfg, encoder=encoder, exploration_config=exploration_cfg,
                                          random_reward_std=train.random_reward_std, seed=grpo.seed)
    weights = reward_weight_list(rewards, train.reward_weights_by_name)
    if weights is not None:
        grpo.reward_weights = weights
    if reward_state is not None and checkpoint is not None:
        state_path = reward_state_path(checkpoint, reward_state)
        if not state_path.exists() and resume in LATEST:
            # the state is written just after the trainer's checkpoint: a crash in between leaves
            # the newest checkpoint without it, and the one before is the newest complete state
            older = [c for c in reversed(run.checkpoints()) if reward_state_path(c, reward_state).exists()]
            if older:
                logger.warning("%s has no saved %s (interrupted while saving?); resuming from %s instead",
                               checkpoint, state_path.name, older[0])
                checkpoint, state_path = older[0], reward_state_path(older[0], reward_state)
        if not state_path.exists():
            raise FileNotFoundError(f"{checkpoint} has no saved memory ({state_path.name}); cannot resume "
                                    f"method {train.method!r} with the same reward state")
        reward_state.load(state_path)
        logger.info("restored reward state from %s: %r", state_path, reward_state)

    t_load = time.perf_counter()
    model, tokenizer = load_model(train.model, attn_implementation=train.attn_implementation)
    logger.info("loaded %s in %.1fs", train.model, time.perf_counter() - t_load)
    trainer = MemrlGRPOTrainer(model=model, reward_funcs=rewards, args=grpo, train_dataset=dataset,
                               processing_class=tokenizer, completions_log=run.completions_file,
                               completions_steps=train.save_completions_steps)
    monitor = CollapseMonitor(window=train.collapse_window)
    trainer.add_callback(monitor)
    trainer.add_callback(MetricsJsonlCallback(run.metrics_file))
    if reward_state is not None:
        trainer.add_callback(RewardStateCallback(reward_state))
    for cb in callbacks:
        trainer.add_callback(cb)
    use_progress_bar(trainer)  # one bar with the key numbers instead of TRL's printed log dicts

    t0 = time.perf_counter()
    with lines_above_progress_bars():
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_s = time.perf_counter() - t0
    trainer.save_model(str(run.final_dir))

    summary: dict[str, Any] = {
        "output_dir": str(out),
        "final_model": str(run.final_dir),
        "checkpoints": [str(p) for p in run.checkpoints()],
        # the saved reward state: Memory-R(+)'s memories or outcome-ucb's answer counts
        "memory": str(reward_state_path(out, reward_state)) if reward_state is not None else None,
        "metrics": str(run.metrics_file),
        "method": train.method,
        "seed": grpo.seed,
        "global_step": trainer.state.global_step,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "train_seconds": train_s,
        # every logged step, resumed segments included; this process's own timer as a fallback
        # (a run that logs no steps, or ranks other than the main one)
        "timing": run.step_timing() or trainer.step_timer.summary(),
        "collapse_warnings": monitor.warnings,
        "memory_state": repr(reward_state) if reward_state is not None else None,
    }
    if rank() == 0:
        if train.plot:
            try:
                from memrl.grpo.report import plot_training_curves

                summary["plot"] = str(plot_training_curves([out], run.curves_file))
            except Exception as exc:  # a plot must never lose a finished run
                logger.warning("could not plot training curves: %s", exc)
        atomic_write_json(run.summary_file, summary)
        if train.before_after_problems:  # after the summary is safe: an evaluation that fails loses no run
            from memrl.grpo.report import evaluate_before_after

            summary["before_after"] = evaluate_before_after(run, train, grpo, trainer.model, tokenizer)
            atomic_write_json(run.summary_file, summary)
    summary["_memory_object"] = reward_state
    return summary


