"""The layout of a ``memrl train`` run folder, known in one place.

Training writes it, evaluation expands it into models, the report and the bench scripts read it::

    <run>/
      run_options.json       flat options the run started from (``--resume`` reads them back)
      resolved_config.json   sections train / grpo / memory, as resolved (also .yaml)
      metrics.jsonl          one line per logged step (TRL's logs + memrl's timing and memory metrics)
      run_summary.json       paths, step, whole-run timing, collapse warnings
      checkpoint-<step>/     trainer checkpoints, each with the method's reward state (below)
      memrl_memory/          Memory-R(+): the memories at the end of training
      outcome_counts.json    outcome-ucb: the answer counts at the end of training
      final/                 the final model
      eval/summary.json      what ``memrl eval <run>`` measured
      training_curves.png
      before_after.md        base vs trained model on held-out problems (``before_after_problems``)
      before_after/          the per-problem records of those two evaluations
      runs/<date>_<host>/    TensorBoard event files (``--report-to tensorboard``; transformers names
                             the folder, and ``--overwrite`` leaves it: a folder named runs/ may hold
                             other runs when ``output_dir`` is ``.``)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from memrl.grpo.stats import step_timing

OPTIONS_FILE = "run_options.json"
RESOLVED_JSON = "resolved_config.json"
RESOLVED_YAML = "resolved_config.yaml"
METRICS_FILE = "metrics.jsonl"
COMPLETIONS_FILE = "completions.jsonl"
SUMMARY_FILE = "run_summary.json"
MEMORY_DIRNAME = "memrl_memory"
OUTCOME_COUNTS_FILE = "outcome_counts.json"
# Where each stateful reward keeps its state, in a checkpoint and in the run folder (by class name,
# so this module needs no reward import)
REWARD_STATE_NAMES = {"MemoryRPlus": MEMORY_DIRNAME, "OutcomeUCBReward": OUTCOME_COUNTS_FILE}
FINAL_DIRNAME = "final"
EVAL_DIRNAME = "eval"
CURVES_FILE = "training_curves.png"
BEFORE_AFTER_FILE = "before_after.md"
BEFORE_AFTER_DIRNAME = "before_after"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")

# What a finished or interrupted run leaves in its folder; a new run there would mix with it.
RUN_ARTIFACTS = ("checkpoint-*", FINAL_DIRNAME, METRICS_FILE, COMPLETIONS_FILE, MEMORY_DIRNAME, OUTCOME_COUNTS_FILE,
                 SUMMARY_FILE, EVAL_DIRNAME, CURVES_FILE, BEFORE_AFTER_FILE, BEFORE_AFTER_DIRNAME, RESOLVED_YAML,
                 RESOLVED_JSON, OPTIONS_FILE)


def run_names(method: str, model: str | os.PathLike, dataset: str | os.PathLike) -> dict[str, str]:
    """Short names that tell runs apart: the method, the model's last path part (a hub id's
    repository name; not its stem, which would cut ``Qwen2.5-0.5B`` at the dot) and the
    dataset file's stem (``gsm8k`` or ``train`` of ``.../train.jsonl``). Run folders and the
    groups ``memrl eval`` averages over are named from these."""
    return {"method": method, "model": Path(str(model).rstrip("/")).name, "dataset": Path(str(dataset)).stem}


def reward_state_path(folder: str | os.PathLike, state: Any) -> Path:
    """Where a stateful reward (:class:`MemoryRPlus`, :class:`OutcomeUCBReward`) keeps its state
    in ``folder`` (a checkpoint, or the run folder at the end)."""
    name = REWARD_STATE_NAMES.get(type(state).__name__)
    if name is None:
        raise TypeError(f"{type(state).__name__} is not a stateful reward memrl checkpoints "
                        f"(known: {', '.join(REWARD_STATE_NAMES)})")
    return Path(folder) / name


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a ``checkpoint-<step>`` folder name, else None."""
    m = _CHECKPOINT.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


class RunDir:
    """One run folder: its files by name, and reading them back."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ names
    @property
    def options_file(self) -> Path:
        return self.path / OPTIONS_FILE

    @property
    def resolved_json(self) -> Path:
        return self.path / RESOLVED_JSON

    @property
    def resolved_yaml(self) -> Path:
        return self.path / RESOLVED_YAML

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def completions_file(self) -> Path:
        return self.path / COMPLETIONS_FILE

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def memory_dir(self) -> Path:
        return self.path / MEMORY_DIRNAME

    @property
    def final_dir(self) -> Path:
        return self.path / FINAL_DIRNAME

    @property
    def eval_dir(self) -> Path:
        return self.path / EVAL_DIRNAME

    @property
    def eval_summary_file(self) -> Path:
        return self.eval_dir / "summary.json"

    @property
    def curves_file(self) -> Path:
        return self.path / CURVES_FILE

    @property
    def before_after_file(self) -> Path:
        return self.path / BEFORE_AFTER_FILE

    @property
    def before_after_dir(self) -> Path:
        return self.path / BEFORE_AFTER_DIRNAME

    def checkpoint_dir(self, step: int) -> Path:
        return self.path / f"checkpoint-{step}"

    # ------------------------------------------------------------------ what is there
    def is_run(self) -> bool:
        """Does the folder hold a run (its metrics or its resolved configuration)?"""
        return self.path.is_dir() and (self.metrics_file.is_file() or self.resolved_json.is_file())

    def checkpoints(self) -> list[Path]:
        """``checkpoint-<step>`` folders, lowest step first."""
        found = [p for p in self.path.glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) is not None]
        return sorted(found, key=checkpoint_step)  # type: ignore[arg-type]

    def artifacts(self) -> list[str]:
        """Names of the files and folders an earlier run left here (empty if none)."""
        if not self.path.is_dir():
            return []
        return sorted({p.name for pattern in RUN_ARTIFACTS for p in self.path.glob(pattern)})

    def clear(self) -> None:
        """Delete everything an earlier run left (``--overwrite``); other files stay."""
        for pattern in RUN_ARTIFACTS:
            for p in self.path.glob(pattern):
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    # ------------------------------------------------------------------ reading
    def resolved_config(self) -> dict[str, Any] | None:
        """Sections ``train``/``grpo``/``memory`` of the run, if it has them."""
        return _read_json(self.resolved_json)

    def options(self) -> dict[str, Any] | None:
        return _read_json(self.options_file)

    def summary(self) -> dict[str, Any]:
        return _read_json(self.summary_file) or {}

    def eval_summary(self) -> dict[str, Any] | None:
        """What ``memrl eval`` wrote for this run (``eval/summary.json``), if any."""
        return _read_json(self.eval_summary_file)

    def metrics(self) -> list[dict[str, Any]]:
        """Training log dicts (lines of ``metrics.jsonl`` with a step and a loss or a reward;
        torn lines of a killed run are skipped)."""
        if not self.metrics_file.is_file():
            raise FileNotFoundError(f"{self.path} has no {METRICS_FILE} (is it a `memrl train` output folder?)")
        rows = []
        for line in self.metrics_file.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "step" in row and "loss" in row or any(k.startswith("rewards/") for k in row):
                rows.append(row)
        return rows

    def step_timing(self) -> dict[str, float]:
        """Timing over every logged step of the run, resumed segments included (see
        :func:`memrl.grpo.stats.step_timing`); empty before the first timed step."""
        if not self.metrics_file.is_file():
            return {}
        return step_timing(self.metrics())

    def method(self) -> str:
        cfg = self.resolved_config()
        return cfg["train"]["method"] if cfg else self.path.name

    def label(self) -> str:
        """``<method> s<seed>`` from the resolved config, else the folder name. A method with a
        memory names its semantics, and its gate when there is one (``memory-r+/group_loo s0``,
        ``memory-r+/group_loo/zero_variance s0``): runs of two semantics are told apart in a plot."""
        cfg = self.resolved_config()
        if not cfg:
            return self.path.name
        method = cfg["train"]["method"]
        memory = cfg.get("memory") or {}
        if method.startswith("memory-") and memory.get("memory_semantics"):
            method += f"/{memory['memory_semantics']}"
            if memory.get("memory_gate", "none") != "none":
                method += f"/{memory['memory_gate']}"
        return f"{method} s{cfg['grpo'].get('seed', '?')}"

    def group(self) -> str | None:
        """What the runs averaged together share: ``"<method> | <model> | <dataset>"`` (seeds differ)."""
        cfg = self.resolved_config()
        if not cfg:
            return None
        return " | ".join(run_names(cfg["train"]["method"], cfg["train"]["model"], cfg["train"]["dataset"]).values())


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None
