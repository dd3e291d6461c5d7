"""Configuration of ``memrl train``: four dataclasses sharing one flat key namespace.

* :class:`TrainConfig`: memrl's own settings (model, dataset, method, prompt style, shots, ...);
* TRL's ``GRPOConfig``: every GRPO/Trainer field (``learning_rate``, ``num_generations``,
  ``max_steps``, ``output_dir``, ``seed``, ``beta``, ``entropy_coef``, ``use_vllm``, ...);
* :class:`~memrl.rewards.memory_rewards.MemoryRewardConfig`: the ``memory_*`` fields;
* :class:`~memrl.rewards.exploration.OutcomeExplorationConfig`: the ``outcome_explore_*`` fields.

A YAML file (``--config``: a path or the name of a preset in ``memrl/configs/grpo/``; presets
``extends: base``) gives values, flat or under ``train:``/``grpo:``/``memory:``/``exploration:`` sections;
``--set key=value`` and the flags override it. Unknown keys are refused with the closest valid
names. The resolved configuration is written to the run folder before training starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from memrl.grpo.rundir import run_names
from memrl.names import CHECKERS, METHODS, PROMPT_STYLES, check_choice
from memrl.options import check_field_types, read_yaml_mapping, unknown_options_error, yaml_number
from memrl.rewards.exploration import OutcomeExplorationConfig
from memrl.rewards.memory_rewards import MemoryRewardConfig
from memrl.rewards.registry import memory_config_for
from memrl.tasks.math import dataset_names

logger = logging.getLogger(__name__)

PRESET_FAMILY = "grpo"
DEFAULT_PRESET = "quickstart"
# where a run goes when its config names no output_dir (placeholders: see format_output_dir)
DEFAULT_OUTPUT_DIR = "runs/{method}-{dataset}-s{seed}"
SECTIONS = ("train", "grpo", "memory", "exploration")
# `--method entropy` is R1 plus TRL's entropy bonus; this coefficient unless entropy_coef is set
ENTROPY_DEFAULT_COEF = 0.01

# Fields forced for CPU training (offline.md: bf16 + gradient checkpointing made a step 8x slower).
CPU_SAFE: dict[str, Any] = {"bf16": False, "fp16": False, "gradient_checkpointing": False}
# transformers 5 renamed gradient_checkpointing (the old name warns); use whichever exists
_CKPT_RENAMED = "activation_checkpointing"


@dataclass
class TrainConfig:
    """memrl's own training settings (TRL's ``GRPOConfig`` holds the optimisation ones).

    Args:
        model: hub id, local checkpoint folder or alias (``smollm2-135m`` = the offline bundle).
        dataset: a name in :data:`memrl.tasks.math.DATASETS` with the split asked for (``arith``,
            ``gsm8k``, ``numina-tir``, ...) or a local JSONL/CSV/parquet path.
        method: one of :data:`memrl.names.METHODS`.
    """

    model: str = field(default="smollm2-135m", metadata={"help": "Hub id, local folder, or alias (smollm2-135m)."})
    dataset: str = field(default="arith", metadata={"help": f"{', '.join(dataset_names('train'))}, or a local "
                                                              ".jsonl/.csv/.parquet path."})
    dataset_split: str = field(default="train", metadata={"help": "Split of a built-in dataset."})
    dataset_limit: int | None = field(default=None, metadata={"help": "Most training problems (numina-tir: the paper's 2000)."})
    dataset_shuffle: bool = field(default=False, metadata={"help": "Take a seeded random subset (before dataset_limit)."})
    question_column: str = field(default="question", metadata={"help": "Question column of a local file."})
    answer_column: str = field(default="answer", metadata={"help": "Gold answer column of a local file."})
    skip_bad_rows: bool = field(default=False, metadata={"help": "Skip and count malformed rows instead of failing."})
    arith_level: int = field(default=1, metadata={"help": "arith difficulty: 1 sums .. 4 multi-step with multiplication."})
    checker: str | None = field(default=None, metadata={"help": "Answer checker (default per dataset).",
                                                        "choices": CHECKERS})
    method: str = field(default="memory-r+", metadata={"help": "Reward method.", "choices": METHODS})
    prompt_style: str = field(default="think", metadata={"help": "think (<think>) or reasoning (<reasoning>) tags.",
                                                          "choices": PROMPT_STYLES})
    shots: int = field(default=0, metadata={"help": "Worked exemplars in each training prompt (paper: 1 for Llama)."})
    reward_weights_by_name: dict[str, float] | None = field(
        default=None, metadata={"help": "Weights by reward name, e.g. {correctness_reward: 2.0}; others 1.0."})
    random_reward_std: float = field(
        default=0.3, metadata={"help": "Method r1-random: std of the Gaussian control reward; match it to the "
                                       "intrinsic rewards' within-group spread (memory/intrinsic_group_std of "
                                       "a Memory-R+ run)."})
    collapse_window: int = field(default=5, metadata={"help": "Logged steps the collapse detectors look at."})
    save_completions_steps: list[int] = field(
        default_factory=list, metadata={"help": "Optimizer steps whose sampled completions (question, text, every "
                                                "reward) go to completions.jsonl, so a stall can be read.",
                                        "nargs": "*"})
    plot: bool = field(default=True, metadata={"help": "Write training_curves.png at the end."})
    before_after_problems: int = field(
        default=0, metadata={"help": "Held-out test problems on which the base and the trained model are compared "
                                     "after training (greedy, in the training prompt format); writes "
                                     "before_after.md beside the run. 0: no comparison."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel of the policy (default: the model's own, SDPA for "
                                        "SmolLM2); bench/step_cost_bench.py measures the choice.",
                                "choices": ("sdpa", "eager")})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choice("method", self.method, METHODS)
        check_choice("prompt_style", self.prompt_style, PROMPT_STYLES)
        check_choice("checker", self.checker, CHECKERS, nullable=True)
        if self.shots < 0:
            raise ValueError(f"shots must be >= 0, got {self.shots}")
        if self.arith_level not in (1, 2, 3, 4):
            raise ValueError(f"arith_level must be 1..4, got {self.arith_level}")
        if not self.random_reward_std > 0:
            raise ValueError(f"random_reward_std must be > 0, got {self.random_reward_std}")
        if any(step < 1 for step in self.save_completions_steps):
            raise ValueError(f"save_completions_steps are optimizer steps (>= 1), got {self.save_completions_steps}")
        if self.before_after_problems < 0:
            raise ValueError(f"before_after_problems must be >= 0 (0: no comparison), got {self.before_after_problems}")
        if self.before_after_problems and self.dataset not in dataset_names("test"):
            raise ValueError(f"before_after_problems needs a dataset with a held-out test split "
                             f"({', '.join(dataset_names('test'))}); {self.dataset!r} has none (set it to 0)")
        if self.dataset_limit is not None and self.dataset_limit < 1:
            raise ValueError(f"dataset_limit must be >= 1 (or null for all rows), got {self.dataset_limit}")


# ----------------------------------------------------------------------------- config resolution
@lru_cache(maxsize=1)
def grpo_fields() -> dict[str, dataclasses.Field]:
    """TRL's ``GRPOConfig`` fields by name (imported on first use: TRL is slow to import)."""
    from trl import GRPOConfig

    return {f.name: f for f in fields(GRPOConfig) if f.init}


def _owner_of(key: str) -> str | None:
    if key in {f.name for f in fields(TrainConfig)}:
        return "train"
    if key in {f.name for f in fields(MemoryRewardConfig)}:
        return "memory"
    if key in {f.name for f in fields(OutcomeExplorationConfig)}:
        return "exploration"
    if key in grpo_fields():
        return "grpo"
    return None


def valid_keys() -> list[str]:
    return sorted({f.name for cls in (TrainConfig, MemoryRewardConfig, OutcomeExplorationConfig) for f in fields(cls)}
                  | set(grpo_fields()))


def read_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Flat ``{key: value}`` from a YAML file with flat keys and/or ``train``/``grpo``/``memory``/
    ``exploration`` sections (``extends:`` resolved first). A key under a section must belong to that section's
    dataclass."""
    path = Path(path)
    data = read_yaml_mapping(path, PRESET_FAMILY)
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
                flat[sub] = yaml_number(v)
        else:
            flat[key] = yaml_number(value)
    return flat


def resolve_config(values: dict[str, Any]) -> tuple[TrainConfig, Any, MemoryRewardConfig, OutcomeExplorationConfig]:
    """Split flat ``values`` into ``(TrainConfig, GRPOConfig, MemoryRewardConfig,
    OutcomeExplorationConfig)``.

    Unknown keys raise ``ValueError`` naming the closest valid ones. CPU-safe settings are applied
    when no GPU is present (``use_cpu``, no bf16/fp16, no gradient checkpointing).
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
        raise unknown_options_error(unknown, valid_keys(),
                                    hint="`memrl train --help` lists memrl's options; any GRPOConfig field works too")
    train = TrainConfig(**parts["train"])
    memory = memory_config_for(train.method, train.prompt_style, parts["memory"])
    exploration = OutcomeExplorationConfig.from_dict(parts["exploration"])
    grpo_values = dict(parts["grpo"])
    if train.method == "entropy":
        grpo_values.setdefault("entropy_coef", ENTROPY_DEFAULT_COEF)
        if not grpo_values["entropy_coef"]:
            raise ValueError("method 'entropy' needs entropy_coef > 0 (TRL's entropy bonus); "
                             f"leave it unset for {ENTROPY_DEFAULT_COEF} or pass --set entropy_coef=...")
    grpo_values["output_dir"] = format_output_dir(grpo_values.get("output_dir", DEFAULT_OUTPUT_DIR), train,
                                                  grpo_values.get("seed", grpo_fields()["seed"].default))
    grpo_values.setdefault("report_to", "none")
    grpo_values.setdefault("logging_steps", 1)
    # keep every dataset column: rewards read 'question' and 'answer'
    grpo_values.setdefault("remove_unused_columns", False)
    if not torch.cuda.is_available():
        grpo_values.setdefault("use_cpu", True)
        safe = dict(CPU_SAFE)
        if _CKPT_RENAMED in grpo_fields():
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
    return train, grpo, memory, exploration


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


def preview_output_dir(values: dict[str, Any]) -> str:
    """The folder ``values`` would train into (the template filled in), without building configs."""
    train_keys = {f.name for f in fields(TrainConfig)}
    train = TrainConfig(**{k: v for k, v in values.items() if k in train_keys})
    return format_output_dir(values.get("output_dir", DEFAULT_OUTPUT_DIR), train,
                             values.get("seed", grpo_fields()["seed"].default))


def config_to_dict(train: TrainConfig, grpo: Any, memory: MemoryRewardConfig,
                   exploration: OutcomeExplorationConfig | None = None) -> dict[str, Any]:
    """Sections of the resolved configuration (JSON/YAML-safe)."""
    grpo_dict = {k: v for k, v in grpo.to_dict().items() if k in grpo_fields()}
    return {"train": dataclasses.asdict(train), "grpo": json.loads(json.dumps(grpo_dict, default=str)),
            "memory": dataclasses.asdict(memory),
            "exploration": dataclasses.asdict(exploration or OutcomeExplorationConfig())}
