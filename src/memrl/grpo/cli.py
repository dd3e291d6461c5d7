"""``memrl train``, ``memrl eval`` and ``memrl report``: argparse front ends of the GRPO side.

Every flag of memrl's own settings is generated from its config dataclass
(:func:`memrl.options.add_dataclass_arguments`), so ``--help`` shows each field's help text and
default, and a default is written once, in the dataclass. Heavy imports (torch, TRL) stay inside
the command functions so ``memrl --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from memrl.grpo.config import (
    DEFAULT_PRESET,
    PRESET_FAMILY,
    TrainConfig,
    preview_output_dir,
    read_yaml_config,
)
from memrl.grpo.evaluate import EvalConfig
from memrl.grpo.rundir import RunDir
from memrl.options import add_dataclass_arguments, build_config, given_values, parse_set, preset_names, preset_path
from memrl.rewards.exploration import OutcomeExplorationConfig
from memrl.rewards.memory_rewards import MemoryRewardConfig
from memrl.rewards.registry import DERIVED_MEMORY_FIELDS
from memrl.tasks.math import dataset_names

logger = logging.getLogger(__name__)

# GRPOConfig fields with a flag of their own (any other GRPOConfig field: --set key=value)
GRPO_FLAGS = ("output_dir", "max_steps", "seed", "report_to")


# ----------------------------------------------------------------------------- train
def add_train_subparser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="GRPO training with R1 / Cosine / Memory-R / Memory-R+ rewards",
        description="Train a model with TRL's GRPOTrainer. Options come from --config (a YAML file or a "
                    f"preset shipped with memrl: {', '.join(preset_names(PRESET_FAMILY))}; default "
                    f"{DEFAULT_PRESET}), then --set key=value overrides (any option below or any TRL "
                    "GRPOConfig field), then the flags.",
    )
    p.add_argument("--config", default=None, help=f"YAML file or preset name (default: {DEFAULT_PRESET})")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="override any option (repeatable), e.g. --set learning_rate=5e-6")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="resume from a checkpoint folder, or the newest in --output-dir when no path is given")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --output-dir that holds an earlier run, deleting that run")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    g = p.add_argument_group("GRPO options (TRL GRPOConfig; every other field through --set)")
    g.add_argument("--output-dir", dest="output_dir", type=str,
                   help="run folder; placeholders {method} {seed} {dataset} {model} (default: the preset's)")
    g.add_argument("--max-steps", dest="max_steps", type=int, help="optimizer steps (default: the preset's)")
    g.add_argument("--seed", type=int, help="seed of the run: data order, sampling, init (default: the preset's)")
    g.add_argument("--report-to", dest="report_to", nargs="+", metavar="BACKEND",
                   help="also send the logged metrics to these trackers (TRL's report_to: tensorboard, wandb, "
                        "trackio, ...; default: none, metrics.jsonl only)")
    add_dataclass_arguments(p, TrainConfig, title="memrl options (TrainConfig)")
    add_dataclass_arguments(p, MemoryRewardConfig, title="Memory-R / Memory-R+ options (MemoryRewardConfig)",
                            skip=DERIVED_MEMORY_FIELDS)
    add_dataclass_arguments(p, OutcomeExplorationConfig,
                            title="outcome-ucb / outcome-batch options (OutcomeExplorationConfig)")
    p.set_defaults(func=_cmd_train)
    return p


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flat option values: preset/YAML, then ``--set``, then explicit flags.

    With ``--resume`` the run's own saved options (``run_options.json`` in the run folder: the
    checkpoint's parent, or the output folder for a bare ``--resume``) replace the preset, so a
    run continues with the settings it started with; ``--config``, ``--set`` and flags given
    again still apply on top (``--max-steps 80`` to train further).
    """
    from memrl.grpo.train import LATEST

    flags = {key: getattr(args, key) for key in GRPO_FLAGS if getattr(args, key, None) is not None}
    flags.update(given_values(args, TrainConfig))
    flags.update(given_values(args, MemoryRewardConfig))
    flags.update(given_values(args, OutcomeExplorationConfig))
    values = read_yaml_config(preset_path(args.config or DEFAULT_PRESET, PRESET_FAMILY))
    if args.resume is not None:
        if args.resume in LATEST:
            run_dir = Path(flags.get("output_dir") or preview_output_dir({**values, **parse_set(args.overrides), **flags}))
        else:
            run_dir = Path(args.resume).parent
        saved = RunDir(run_dir).options()
        if saved is not None:
            values = saved
            if args.config:
                values.update(read_yaml_config(preset_path(args.config, PRESET_FAMILY)))
            values["output_dir"] = str(run_dir)
            logger.info("resuming with the options saved in %s", RunDir(run_dir).options_file)
    values.update(parse_set(args.overrides))
    values.update(flags)
    return values


def _cmd_train(args: argparse.Namespace) -> int:
    import yaml

    from memrl.grpo.config import config_to_dict, resolve_config
    from memrl.grpo.train import run_training

    values = config_from_args(args)
    train, grpo, memory, exploration = resolve_config(values)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(train, grpo, memory, exploration), sort_keys=False))
        return 0
    print(f"memrl train: {train.method} on {train.dataset} with {train.model}, {grpo.max_steps} steps -> "
          f"{grpo.output_dir}")
    summary = run_training(train, grpo, memory, resume=args.resume, overwrite=args.overwrite,
                           options={**values, "output_dir": grpo.output_dir}, exploration_cfg=exploration)
    timing = summary.get("timing", {})
    print("\nDone in {:.0f}s ({:.1f}s/step; generation {:.0%}, rewards {:.0%} of a step).".format(
        summary["train_seconds"], timing.get("seconds_per_step", float("nan")),
        timing.get("generation_share", float("nan")), timing.get("reward_share", float("nan"))))
    print(f"  checkpoints: {', '.join(summary['checkpoints']) or '-'}")
    print(f"  final model: {summary['final_model']}")
    if summary["memory"]:
        print(f"  memory:      {summary['memory']}  {summary['memory_state']}")
    print(f"  metrics:     {summary['metrics']}")
    if summary.get("plot"):
        print(f"  plot:        {summary['plot']}")
    for w in summary["collapse_warnings"]:
        print(f"  WARNING step {w['step']}: {w['message']}")
    if summary.get("before_after"):
        print(f"  before/after: {summary['before_after']['path']}\n")
        print(summary["before_after"]["table"])
    held_out = train.dataset if train.dataset in dataset_names("test") else "gsm8k"
    print(f"Evaluate with: memrl eval {grpo.output_dir} --benchmarks {held_out} --limit 50")
    return 0


# ----------------------------------------------------------------------------- eval
def add_eval_subparser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="evaluate models / checkpoints / run directories on math benchmarks",
        description=f"Accuracy on {', '.join(dataset_names('test'))} or local files; a run directory "
                    "expands to its checkpoints (last and best reported), several runs to mean ± std.")
    p.add_argument("targets", nargs="+", help="model aliases, hub ids, checkpoint folders or run directories")
    p.add_argument("--out", help="output folder (default: <run>/eval for one run, else eval_results)")
    add_dataclass_arguments(p, EvalConfig, title="evaluation options (EvalConfig)")
    p.set_defaults(func=_cmd_eval)
    return p


def _cmd_eval(args: argparse.Namespace) -> int:
    from memrl.grpo.evaluate import format_table, run_eval

    cfg = build_config(EvalConfig, given_values(args, EvalConfig))
    summary = run_eval(args.targets, cfg, args.out)
    print(format_table(summary))
    print(f"\nper-example JSONL and summary.json in {summary['out_dir']}")
    return 0


# ----------------------------------------------------------------------------- report
def add_report_subparser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="plots and a Markdown table from run directories",
                              description="Training curves (methods side by side), eval accuracy per "
                                          "checkpoint and a summary table from `memrl train` output folders.")
    p.add_argument("runs", nargs="+", help="run directories (output_dir of memrl train)")
    p.add_argument("--out", default="report", help="output folder (default: report)")
    p.add_argument("--smoothing", type=float, default=0.0, help="EMA weight of the past in [0, 1), e.g. 0.6")
    p.set_defaults(func=_cmd_report)
    return p


def _cmd_report(args: argparse.Namespace) -> int:
    from memrl.grpo.report import build_report

    written = build_report(args.runs, args.out, args.smoothing)
    print(written.pop("table"))
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
