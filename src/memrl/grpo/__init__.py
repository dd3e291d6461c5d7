"""GRPO with memrl's rewards: ``memrl train`` / ``memrl eval`` / ``memrl report``.

* :mod:`memrl.grpo.config` — :class:`TrainConfig` and how a flat option dict becomes the three
  config objects (TrainConfig, TRL's GRPOConfig, MemoryRewardConfig);
* :mod:`memrl.grpo.train` — one training run (:func:`run_training`), resume included;
* :mod:`memrl.grpo.trainer` — the ``GRPOTrainer`` subclass, memrl's only contact with TRL internals;
* :mod:`memrl.grpo.callbacks` — metrics JSONL, step timer, memory checkpoints, collapse warnings;
* :mod:`memrl.grpo.rundir` — the run folder's layout (:class:`RunDir`);
* :mod:`memrl.grpo.evaluate` / :mod:`memrl.grpo.stats` / :mod:`memrl.grpo.report` — accuracy of
  models and checkpoints (intervals and tests from :mod:`memrl.stats`), run timing, and
  plots/tables of runs;
* :mod:`memrl.grpo.cli` — the argparse front ends.

Submodules are imported on use (TRL and torch are slow to import).
"""
