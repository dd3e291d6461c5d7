"""``memrl train``: GRPO (TRL's ``GRPOTrainer``) with R1 / Cosine / Memory-R / Memory-R+ rewards.

Configuration is three dataclasses sharing one flat key namespace:

* :class:`TrainConfig`: memrl's own settings (model, dataset, method, prompt style, shots, ...);
* TRL's ``GRPOConfig``: every GRPO/Trainer field (``learning_rate``, ``num_generations``,
  ``max_steps``, ``output_dir``, ``seed``, ``beta``, ``entropy_coef``, ``use_vllm``, ...);
* :class:`~memrl.rewards.memory.MemoryRewardConfig`: ``memory_*`` fields.

A YAML file (``--config``: a path or the name of a preset shipped in ``memrl/configs/``) gives values, flat or under
``train:``/``grpo:``/``memory:`` sections; ``--set key=value`` and the explicit flags override it.
Unknown keys are rejected with the list of valid ones. The resolved configuration is written to
``<output_dir>/resolved_config.yaml`` before training starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import yaml

from memrl.paths import preset_names, preset_path, run_names
from memrl.rewards.memory import MemoryRewardConfig
from memrl.utils import check_field_types

logger = logging.getLogger(__name__)

# OpenMP threads that spin while waiting make torch 5x slower when the CPU is shared (measured:
# 95 s vs 16 s for the same sampling on 2 busy cores). Passive waiting computes the same thing;
# it only takes effect if set before torch loads, which is why it is here at import time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_PRESET = "cpu-tiny"
# where a run goes when its config names no output_dir (placeholders: see format_output_dir)
DEFAULT_OUTPUT_DIR = "runs/{method}-{dataset}-s{seed}"
OPTIONS_FILE = "run_options.json"  # the flat options a run started from; `--resume` reads them back
LATEST = ("", "latest", "true", "True")
METHODS = ("r1", "cosine", "memory-r", "memory-r+")
SECTIONS = ("train", "grpo", "memory")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

# Fields forced for CPU training (offline.md: bf16 + gradient checkpointing made a step 8x slower).
CPU_SAFE: dict[str, Any] = {"bf16": False, "fp16": False, "gradient_checkpointing": False}
# transformers 5 renamed gradient_checkpointing (the old name warns); use whichever exists
_CKPT_RENAMED = "activation_checkpointing"


@dataclass
class TrainConfig:
    """memrl's own training settings (TRL's ``GRPOConfig`` holds the optimisation ones).

    Args:
        model: hub id, local checkpoint folder or alias (``smollm2-135m`` = the offline bundle).
        dataset: ``arith``, ``gsm8k``, ``numina-tir`` or a local JSONL/CSV/parquet path.
        method: ``r1``, ``cosine``, ``memory-r`` or ``memory-r+``.
    """

    model: str = field(default="smollm2-135m", metadata={"help": "Hub id, local folder, or alias (smollm2-135m)."})
    dataset: str = field(default="arith", metadata={"help": "arith, gsm8k, numina-tir, or a local .jsonl/.csv/.parquet path."})
    dataset_split: str = field(default="train", metadata={"help": "Split of a built-in dataset."})
    dataset_limit: int | None = field(default=None, metadata={"help": "Most training problems (numina-tir: the paper's 2000)."})
    dataset_shuffle: bool = field(default=False, metadata={"help": "Take a seeded random subset (before dataset_limit)."})
    question_column: str = field(default="question", metadata={"help": "Question column of a local file."})
    answer_column: str = field(default="answer", metadata={"help": "Gold answer column of a local file."})
    skip_bad_rows: bool = field(default=False, metadata={"help": "Skip and count malformed rows instead of failing."})
    arith_level: int = field(default=1, metadata={"help": "arith difficulty: 1 sums .. 4 multi-step with multiplication."})
    checker: str | None = field(default=None, metadata={"help": "Answer checker: numeric or math (default per dataset)."})
    method: str = field(default="memory-r+", metadata={"help": f"Reward method: one of {METHODS}."})
    prompt_style: str = field(default="think", metadata={"help": "think (<think>) or reasoning (<reasoning>) tags."})
    shots: int = field(default=0, metadata={"help": "Worked exemplars in each training prompt (paper: 1 for Llama)."})
    reward_weights_by_name: dict[str, float] | None = field(
        default=None, metadata={"help": "Weights by reward name, e.g. {correctness_reward: 2.0}; others 1.0."})
    collapse_window: int = field(default=5, metadata={"help": "Logged steps the collapse detectors look at."})
    plot: bool = field(default=True, metadata={"help": "Write training_curves.png at the end."})

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {METHODS}")
        if self.prompt_style not in ("think", "reasoning"):
            raise ValueError(f"prompt_style={self.prompt_style!r}: choose 'think' or 'reasoning'")
        if self.shots < 0:
            raise ValueError(f"shots must be >= 0, got {self.shots}")
        if self.checker not in (None, "numeric", "math"):
            raise ValueError(f"checker={self.checker!r}: choose 'numeric' or 'math'")
        if self.arith_level not in (1, 2, 3, 4):
            raise ValueError(f"arith_level must be 1..4, got {self.arith_level}")
        if self.dataset_limit is not None and self.dataset_limit < 1:
            raise ValueError(f"dataset_limit must be >= 1 (or null for all rows), got {self.dataset_limit}")


# ----------------------------------------------------------------------------- config resolution
def _grpo_fields() -> dict[str, dataclasses.Field]:
    from trl import GRPOConfig

    return {f.name: f for f in fields(GRPOConfig) if f.init}


def _owner_of(key: str) -> str | None:
    if key in {f.name for f in fields(TrainConfig)}:
        return "train"
    if key in {f.name for f in fields(MemoryRewardConfig)}:
        return "memory"
    if key in _grpo_fields():
        return "grpo"
    return None


def read_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Flat ``{key: value}`` from a YAML file with flat keys and/or ``train``/``grpo``/``memory``
    sections. A key under a section must belong to that section's dataclass."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of options at the top level")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(f"{path}: section {key!r} must be a mapping")
            for sub, v in value.items():
                owner = _owner_of(sub)
                if owner != key:
                    raise ValueError(f"{path}: {sub!r} under section {key!r} is not a {key} option"
                                     + (f" (it is a {owner} option)" if owner else ""))
                flat[sub] = _yaml_number(v)
        else:
            flat[key] = _yaml_number(value)
    return flat


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads ``5e-6`` (no dot) as a string; a learning rate written that way is a number."""
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` with YAML typing of values."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({exc.__class__.__name__})") from exc
        out[key.strip().replace("-", "_")] = _yaml_number(parsed)
    return out


def resolve_config(values: dict[str, Any]) -> tuple[TrainConfig, Any, MemoryRewardConfig]:
    """Split flat ``values`` into ``(TrainConfig, GRPOConfig, MemoryRewardConfig)``.

    Unknown keys raise ``ValueError`` listing the valid ones. CPU-safe settings are applied when
    no GPU is present (``use_cpu``, no bf16/fp16, no gradient checkpointing).
    """
    import torch
    from trl import GRPOConfig

    parts: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    unknown = []
    for key, value in values.items():
        owner = _owner_of(key)
        if owner is None:
            unknown.append(key)
        else:
            parts[owner][key] = value
    if unknown:
        valid = sorted({f.name for f in fields(TrainConfig)} | {f.name for f in fields(MemoryRewardConfig)}
                       | set(_grpo_fields()))
        raise ValueError(f"unknown option(s) {sorted(unknown)}. Valid options: {', '.join(valid)}")
    train = TrainConfig(**parts["train"])
    memory = MemoryRewardConfig.from_dict({**parts["memory"], "memory_style": train.prompt_style,
                                           "memory_explore": train.method == "memory-r+"})
    grpo_values = dict(parts["grpo"])
    grpo_values["output_dir"] = format_output_dir(grpo_values.get("output_dir", DEFAULT_OUTPUT_DIR), train,
                                                  grpo_values.get("seed", _grpo_fields()["seed"].default))
    grpo_values.setdefault("report_to", "none")
    grpo_values.setdefault("logging_steps", 1)
    # keep every dataset column: rewards read 'question' and 'answer'
    grpo_values.setdefault("remove_unused_columns", False)
    if not torch.cuda.is_available():
        grpo_values.setdefault("use_cpu", True)
        safe = dict(CPU_SAFE)
        if _CKPT_RENAMED in _grpo_fields():
            safe[_CKPT_RENAMED] = safe.pop("gradient_checkpointing")
            if grpo_values.pop("gradient_checkpointing", None):
                logger.warning("gradient_checkpointing is very slow on CPU; disabling it")
        for k, v in safe.items():
            if grpo_values.get(k):
                logger.warning("%s=True is very slow or unsupported on CPU; setting it to False", k)
            grpo_values[k] = v
    try:
        grpo = GRPOConfig(**grpo_values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid GRPO settings: {exc}") from exc
    return train, grpo, memory


def format_output_dir(template: str, train: TrainConfig, seed: int) -> str:
    """Fill ``{method}``, ``{seed}``, ``{dataset}`` and ``{model}`` in an ``output_dir`` template.

    Presets name their folder this way so that runs of several methods and seeds from one preset
    land in folders of their own instead of overwriting each other.
    """
    names = {**run_names(train.method, train.model, train.dataset), "seed": seed}
    try:
        return str(template).format_map(names)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"output_dir {template!r}: unknown or malformed placeholder ({exc}); "
                         f"available: {', '.join('{' + k + '}' for k in names)}") from exc


def config_to_dict(train: TrainConfig, grpo: Any, memory: MemoryRewardConfig) -> dict[str, Any]:
    """Sections of the resolved configuration (JSON/YAML-safe)."""
    grpo_dict = {k: v for k, v in grpo.to_dict().items() if k in _grpo_fields()}
    return {"train": dataclasses.asdict(train), "grpo": json.loads(json.dumps(grpo_dict, default=str)),
            "memory": dataclasses.asdict(memory)}


# ----------------------------------------------------------------------------- data and rewards
def build_train_rows(train: TrainConfig, seed: int) -> tuple[list[dict[str, Any]], str]:
    """Training rows (``prompt``, ``question``, ``answer``) and the answer checker to use."""
    from memrl.tasks.math import DatasetSpec, load_rows, to_training_rows

    spec = DatasetSpec(name=train.dataset, split=train.dataset_split, question_column=train.question_column,
                       answer_column=train.answer_column, limit=train.dataset_limit, seed=seed,
                       shuffle=train.dataset_shuffle or train.dataset == "numina-tir",
                       skip_bad_rows=train.skip_bad_rows, checker=train.checker, arith_level=train.arith_level)
    rows, checker = load_rows(spec)
    return to_training_rows(rows, train.prompt_style, train.shots, seed=seed), checker


def reward_weight_list(reward_funcs: list[Any], by_name: dict[str, float] | None) -> list[float] | None:
    """GRPOConfig ``reward_weights`` (a list in reward order) from a by-name mapping."""
    if not by_name:
        return None
    names = [getattr(f, "__name__", type(f).__name__) for f in reward_funcs]
    unknown = sorted(set(by_name) - set(names))
    if unknown:
        raise ValueError(f"reward_weights_by_name has unknown reward(s) {unknown}; this method's rewards: {names}")
    return [float(by_name.get(n, 1.0)) for n in names]


# ----------------------------------------------------------------------------- run
def checkpoints_newest_first(output_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-<step>`` folders of a run, highest step first."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def find_checkpoint(output_dir: str | os.PathLike, resume: str) -> Path:
    """The checkpoint to resume: ``latest``/empty → the newest ``checkpoint-*`` in ``output_dir``."""
    if resume in LATEST:
        found = checkpoints_newest_first(output_dir)
        if not found:
            raise FileNotFoundError(f"--resume: no checkpoint-* folder in {output_dir}")
        return found[0]
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume: checkpoint folder not found: {path}")
    return path


# What a finished or interrupted run leaves in its folder; a new run there would mix with it.
RUN_ARTIFACTS = ("checkpoint-*", "final", "metrics.jsonl", "memrl_memory", "run_summary.json", "eval",
                 "training_curves.png", "resolved_config.yaml", "resolved_config.json", OPTIONS_FILE)
# Settings a resumed run must share with the run it continues (the data, the prompts, the
# memory's shape): changing them mid-run would silently train a different experiment.
RESUME_INVARIANTS = ("model", "dataset", "dataset_split", "dataset_limit", "arith_level", "method",
                     "prompt_style", "shots", "question_column", "answer_column", "checker")


def previous_run_artifacts(output_dir: str | os.PathLike) -> list[str]:
    """Names of the files and folders of an earlier run in ``output_dir`` (empty if none)."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    return sorted({p.name for pattern in RUN_ARTIFACTS for p in out.glob(pattern)})


def _clear_previous_run(output_dir: Path) -> None:
    import shutil

    for pattern in RUN_ARTIFACTS:
        for p in output_dir.glob(pattern):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def check_resume_matches(run_dir: Path, train: TrainConfig, memory_cfg: MemoryRewardConfig) -> None:
    """Refuse to resume a run whose saved configuration differs in what defines the experiment."""
    saved_path = run_dir / "resolved_config.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text())
    now = {"train": dataclasses.asdict(train), "memory": dataclasses.asdict(memory_cfg)}
    diffs = [f"{k}: saved {saved['train'][k]!r}, now {now['train'][k]!r}"
             for k in RESUME_INVARIANTS if k in saved.get("train", {}) and saved["train"][k] != now["train"][k]]
    diffs += [f"{k}: saved {v!r}, now {now['memory'].get(k)!r}" for k, v in saved.get("memory", {}).items()
              if json.loads(json.dumps(now["memory"].get(k))) != v]
    if diffs:
        raise ValueError(f"cannot resume {run_dir}: its configuration differs in " + "; ".join(diffs)
                         + ". Resume with the run's own settings (`memrl train --resume <checkpoint>` reads them "
                         "from the run folder) or start a new run in another --output-dir.")


def run_training(train: TrainConfig, grpo: Any, memory_cfg: MemoryRewardConfig, resume: str | None = None,
                 encoder: Any = None, callbacks: Sequence[Any] = (), overwrite: bool = False,
                 options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train; return a summary dict (paths, timing, collapse warnings, final metrics).

    Args:
        train, grpo, memory_cfg: the resolved configuration (:func:`resolve_config`).
        resume: a checkpoint folder, or ``latest`` for the newest in ``grpo.output_dir``.
        encoder: optional :class:`~memrl.encoders.Encoder` to share (tests); built if None.
        callbacks: extra ``TrainerCallback`` objects (called after memrl's own).
        overwrite: a new (not resumed) run in a folder holding an earlier run deletes that run's
            checkpoints, metrics, memory and final model; without it such a run is refused.
        options: the flat options the run was started from (saved as ``run_options.json``, which
            ``memrl train --resume`` reads back).
    """
    from datasets import Dataset
    from trl import GRPOTrainer

    from memrl.callbacks import CollapseMonitor, MemoryCheckpointCallback, MetricsJsonlCallback, StepTimer
    from memrl.distributed import rank
    from memrl.models import load_model
    from memrl.rewards.registry import build_rewards
    from memrl.utils import atomic_write_json, atomic_write_text, set_seed

    out = Path(grpo.output_dir)
    earlier = previous_run_artifacts(out) if resume is None else []
    if earlier:
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a run ({', '.join(earlier)}); pass --resume to continue "
                "it, --overwrite to replace it, or choose another --output-dir")
        if rank() == 0:
            logger.warning("overwrite: deleting the earlier run in %s", out)
            _clear_previous_run(out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(grpo.seed)
    checkpoint = find_checkpoint(out, resume) if resume is not None else None
    if checkpoint is not None:
        check_resume_matches(checkpoint.parent, train, memory_cfg)
    if rank() == 0:
        if options is not None:
            atomic_write_json(out / OPTIONS_FILE, options)
        resolved = config_to_dict(train, grpo, memory_cfg)
        atomic_write_text(out / "resolved_config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        atomic_write_json(out / "resolved_config.json", resolved)

    rows, checker = build_train_rows(train, grpo.seed)
    dataset = Dataset.from_list(rows)
    rewards, memory = build_rewards(train.method, style=train.prompt_style, answer_column="answer",
                                    checker=checker, max_completion_length=grpo.max_completion_length or 256,
                                    memory_config=memory_cfg, encoder=encoder)
    weights = reward_weight_list(rewards, train.reward_weights_by_name)
    if weights is not None:
        grpo.reward_weights = weights
    if memory is not None and checkpoint is not None:
        mem_dir = checkpoint / "memrl_memory"
        if not mem_dir.is_dir() and resume in LATEST:
            # the memory is written just after the trainer's checkpoint: a crash in between leaves
            # the newest checkpoint without it, and the one before is the newest complete state
            older = [c for c in checkpoints_newest_first(out) if (c / "memrl_memory").is_dir()]
            if older:
                logger.warning("%s has no saved memory (interrupted while saving?); resuming from %s instead",
                               checkpoint, older[0])
                checkpoint, mem_dir = older[0], older[0] / "memrl_memory"
        if not mem_dir.is_dir():
            raise FileNotFoundError(f"{checkpoint} has no saved memory ({mem_dir.name}/); cannot resume "
                                    f"method {train.method!r} with the same memory state")
        memory.load(mem_dir)
        logger.info("restored memory from %s: %r", mem_dir, memory)

    t_load = time.perf_counter()
    model, tokenizer = load_model(train.model)
    logger.info("loaded %s in %.1fs", train.model, time.perf_counter() - t_load)
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=grpo, train_dataset=dataset,
                          processing_class=tokenizer)
    timer = StepTimer().attach(trainer)
    monitor = CollapseMonitor(window=train.collapse_window)
    trainer.add_callback(monitor)
    metrics_path = out / "metrics.jsonl"
    trainer.add_callback(MetricsJsonlCallback(metrics_path))
    if memory is not None:
        trainer.add_callback(MemoryCheckpointCallback(memory))
    for cb in callbacks:
        trainer.add_callback(cb)

    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_s = time.perf_counter() - t0
    trainer.save_model(str(out / "final"))

    summary: dict[str, Any] = {
        "output_dir": str(out),
        "final_model": str(out / "final"),
        "checkpoints": sorted(str(p) for p in out.glob("checkpoint-*")),
        "memory": str(out / "memrl_memory") if memory is not None else None,
        "metrics": str(metrics_path),
        "method": train.method,
        "seed": grpo.seed,
        "global_step": trainer.state.global_step,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "train_seconds": train_s,
        "timing": timer.summary(),
        "collapse_warnings": monitor.warnings,
        "memory_state": repr(memory) if memory is not None else None,
    }
    if rank() == 0:
        if train.plot:
            try:
                from memrl.report import plot_training_curves

                summary["plot"] = str(plot_training_curves([out], out / "training_curves.png"))
            except Exception as exc:  # a plot must never lose a finished run
                logger.warning("could not plot training curves: %s", exc)
        atomic_write_json(out / "run_summary.json", summary)
    summary["_memory_object"] = memory
    return summary


# ----------------------------------------------------------------------------- CLI
def add_train_subparser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="GRPO training with R1 / Cosine / Memory-R / Memory-R+ rewards",
        description="Train a model with TRL's GRPOTrainer. Options come from --config (a YAML file or a "
                    "preset name shipped with memrl: " + ", ".join(n for n in preset_names() if not n.startswith("poem"))
                    + f"; default {DEFAULT_PRESET}), then --set key=value overrides "
                    "(any TrainConfig, GRPOConfig or memory_* field), then the explicit flags.",
    )
    p.add_argument("--config", default=None, help=f"YAML file or preset name (default: {DEFAULT_PRESET})")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="override any option (repeatable), e.g. --set learning_rate=5e-6")
    p.add_argument("--model", help="hub id, local folder or alias (smollm2-135m)")
    p.add_argument("--dataset", help="arith, gsm8k, numina-tir, or a local .jsonl/.csv/.parquet file")
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--output-dir", dest="output_dir")
    p.add_argument("--max-steps", dest="max_steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--prompt-style", dest="prompt_style", choices=("think", "reasoning"))
    p.add_argument("--shots", type=int)
    p.add_argument("--skip-bad-rows", dest="skip_bad_rows", action="store_const", const=True)
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="resume from a checkpoint folder, or the newest in --output-dir when no path is given")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --output-dir that holds an earlier run, deleting that run")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=_cmd_train)
    return p


_FLAG_OPTIONS = ("model", "dataset", "method", "output_dir", "max_steps", "seed", "prompt_style", "shots",
                 "skip_bad_rows")


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flat option values: preset/YAML, then ``--set``, then explicit flags.

    With ``--resume`` the run's own saved options (``run_options.json`` in the run folder: the
    checkpoint's parent, or the output folder for a bare ``--resume``) replace the preset, so a
    run continues with the settings it started with; ``--config``, ``--set`` and flags given
    again still apply on top (``--max-steps 80`` to train further).
    """
    flags = {key: getattr(args, key) for key in _FLAG_OPTIONS if getattr(args, key, None) is not None}
    values = read_yaml_config(preset_path(args.config or DEFAULT_PRESET))
    if args.resume is not None:
        if args.resume in LATEST:
            run_dir = Path(flags.get("output_dir") or _preview_output_dir({**values, **parse_set(args.overrides), **flags}))
        else:
            run_dir = Path(args.resume).parent
        saved = run_dir / OPTIONS_FILE
        if saved.is_file():
            values = json.loads(saved.read_text())
            if args.config:
                values.update(read_yaml_config(preset_path(args.config)))
            values["output_dir"] = str(run_dir)
            logger.info("resuming with the options saved in %s", saved)
    values.update(parse_set(args.overrides))
    values.update(flags)
    return values


def _preview_output_dir(values: dict[str, Any]) -> str:
    """The folder ``values`` would train into (the template filled in), without building configs."""
    train_keys = {f.name for f in fields(TrainConfig)}
    train = TrainConfig(**{k: v for k, v in values.items() if k in train_keys})
    return format_output_dir(values.get("output_dir", DEFAULT_OUTPUT_DIR), train,
                             values.get("seed", _grpo_fields()["seed"].default))


def _cmd_train(args: argparse.Namespace) -> int:
    values = config_from_args(args)
    train, grpo, memory = resolve_config(values)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(train, grpo, memory), sort_keys=False))
        return 0
    print(f"memrl train: {train.method} on {train.dataset} with {train.model}, {grpo.max_steps} steps -> "
          f"{grpo.output_dir}")
    summary = run_training(train, grpo, memory, resume=args.resume, overwrite=args.overwrite,
                           options={**values, "output_dir": grpo.output_dir})
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
    print(f"Evaluate with: memrl eval {grpo.output_dir} --benchmarks arith --limit 50")
    return 0
