"""Settings of ``memrl serve`` and the reward set it serves.

This module owns two things:

* :class:`ServeConfig`, the service's own options (address, token, limits, step boundaries,
  micro-batching, snapshots), one ``--flag`` per field through
  :func:`memrl.options.add_dataclass_arguments`;
* :func:`build_reward_spec`, which turns the **same flat options** ``memrl train`` reads (a grpo
  preset or YAML file, ``--set`` and the flags: ``method``, every ``memory_*`` and
  ``outcome_explore_*`` option, ``prompt_style``, ``checker``, ``reward_weights_by_name``,
  ``max_completion_length``) into the reward functions of
  :func:`memrl.rewards.registry.build_rewards`, so the service computes rewards with the very
  objects a TRL run would use, and checks that the chosen rewards can be answered in the chosen
  ``respond`` mode.

It does not hold state or answer requests (:mod:`memrl.serve.engine`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

from memrl.names import MEMORY_METHODS, check_choice
from memrl.options import check_field_types
from memrl.runtime import check_device
from memrl.serve.protocol import DEFAULT_MAX_TEXT_CHARS

logger = logging.getLogger(__name__)

RESPOND_MODES = ("immediate", "commit")
SNAPSHOT_WRITES = ("fork", "inline")
TOKEN_ENV = "MEMRL_SERVE_TOKEN"
# end-of-text markers OpenRLHF leaves in a decoded query (it decodes with skip_special_tokens=False)
DEFAULT_STRIP = ["<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>",
                 "<end_of_turn>", "<eos>"]


@dataclass
class ServeConfig:
    """Options of the reward service itself (the rewards come from the training options)."""

    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind (127.0.0.1: this machine only; 0.0.0.0 "
                                                             "for other machines, then set a token)."})
    port: int = field(default=5000, metadata={"help": "TCP port (0: any free port, printed at start)."})
    token: str | None = field(default=None, metadata={"help": f"Token every request but /health must send, as "
                                                             f"'Authorization: Bearer <token>' or ?token=<token> in "
                                                             f"the URL (default: ${TOKEN_ENV}, else none)."})
    respond: str = field(default="immediate", metadata={
        "help": "'immediate': answer each request at once, scored alone against the memory committed at the "
                "end of the previous step; 'commit': hold each answer until its step commits and answer with "
                "the rewards of one in-process call over the whole step (docs/serve.md).",
        "choices": RESPOND_MODES})
    commit_every: int = field(default=0, metadata={"help": "Commit the step after this many samples (B, the rollout "
                                                          "batch: prompts x samples per prompt); 0: off."})
    commit_idle_s: float = field(default=0.0, metadata={"help": "Commit a non-empty step when no request arrived "
                                                               "for this long (seconds); 0: off."})
    commit_timeout_s: float = field(default=120.0, metadata={"help": "respond=commit: commit a step whose oldest "
                                                                    "request has waited this long (a partial step); "
                                                                    "keep it below the client's timeout (OpenRLHF: "
                                                                    "180 s, then it retries)."})
    batch_wait_ms: float = field(default=5.0, metadata={"help": "Micro-batching: wait this long after a request for "
                                                               "others, so the encoder sees them in one batch."})
    max_batch: int = field(default=256, metadata={"help": "Most samples in one micro-batch."})
    max_body_mb: float = field(default=16.0, metadata={"help": "Largest request body (MiB); larger: HTTP 413."})
    max_samples: int = field(default=4096, metadata={"help": "Most samples in one request; more: HTTP 413."})
    state_dir: str | None = field(default=None, metadata={"help": "Folder for snapshots of the memory; a restart "
                                                                 "with the same folder resumes from the newest."})
    snapshot_every: int = field(default=10, metadata={"help": "Snapshot after every N commits (and on shutdown)."})
    keep_snapshots: int = field(default=2, metadata={"help": "Snapshots kept (older ones are deleted)."})
    question_regex: str | None = field(default=None, metadata={
        "help": "Regex whose first group (or group 'question') extracts the question from a string prompt "
                "(default: the last user turn of a ChatML, Llama 3, Gemma or DeepSeek chat template, else the "
                "whole prompt)."})
    strip: list[str] = field(default_factory=lambda: list(DEFAULT_STRIP), metadata={
        "help": "End-of-text markers removed from the end of each response.", "nargs": "*"})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer counting completion tokens for "
                                                                 "--method cosine when a request sends no "
                                                                 "completion_ids."})
    # the encoder's device and batch size are reward options (memory_encoder_device, memory_encoder_batch_size,
    # as in `memrl train`); these two are their former service-side names, kept as aliases
    encoder_device: str | None = field(default=None, metadata={"help": "Old name of --memory-encoder-device (default "
                                                                       "auto: CUDA when present, else the CPU)."})
    encoder_batch_size: int | None = field(default=None, metadata={"help": "Old name of --memory-encoder-batch-size."})
    # fault tolerance (docs/serve.md, "Faults"); appended here, after the options above
    max_text_chars: int = field(default=DEFAULT_MAX_TEXT_CHARS, metadata={
        "help": "Longest text (a query, prompt, response, label) in characters; longer: HTTP 413. The encoder "
                "reads 256 word pieces; the default allows 256 characters per piece."})
    max_step_jump: int = field(default=1000, metadata={"help": "Most steps a request's or commit's 'step' may move "
                                                              "past the open step (larger: HTTP 400); 0: no bound."})
    snapshot_write: str = field(default="fork", metadata={
        "help": "'fork': a forked process writes each snapshot from a copy-on-write view of the state, the "
                "service pauses only for the fork; 'inline': the worker writes it and requests wait.",
        "choices": SNAPSHOT_WRITES})
    snapshot_retry_s: float = field(default=30.0, metadata={"help": "After a failed snapshot (disk full), try again "
                                                                   "after this many seconds."})
    max_unsaved_commits: int = field(default=0, metadata={
        "help": "While snapshots fail, refuse training samples (HTTP 503) once this many commits are in memory "
                "only; 0: keep serving."})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choice("respond", self.respond, RESPOND_MODES)
        if self.encoder_device is not None:
            check_device("encoder_device", self.encoder_device)
        if self.encoder_batch_size is not None and self.encoder_batch_size < 1:
            raise ValueError(f"encoder_batch_size must be >= 1, got {self.encoder_batch_size}")
        for name in ("commit_every", "max_batch", "max_samples", "snapshot_every", "keep_snapshots"):
            low = 0 if name == "commit_every" else 1
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        for name in ("commit_idle_s", "commit_timeout_s", "batch_wait_ms", "max_body_mb"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.max_body_mb <= 0 or self.commit_timeout_s <= 0:
            raise ValueError("max_body_mb and commit_timeout_s must be > 0")
        if not isinstance(self.strip, list) or not all(isinstance(s, str) and s for s in self.strip):
            raise ValueError(f"strip must be a list of non-empty strings, got {self.strip!r}")
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None
        if self.question_regex is not None:
            import re

            try:
                re.compile(self.question_regex)
            except re.error as exc:
                raise ValueError(f"question_regex {self.question_regex!r} is not a valid regex: {exc}") from None
        check_choice("snapshot_write", self.snapshot_write, SNAPSHOT_WRITES)
        for name in ("max_text_chars", "max_step_jump", "max_unsaved_commits"):
            if getattr(self, name) < (1 if name == "max_text_chars" else 0):
                raise ValueError(f"{name} must be >= {1 if name == 'max_text_chars' else 0}, got {getattr(self, name)}")
        if not math.isfinite(self.snapshot_retry_s) or self.snapshot_retry_s < 0:
            raise ValueError(f"snapshot_retry_s must be a finite number >= 0, got {self.snapshot_retry_s}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


@dataclass
class RewardSpec:
    """The reward set of one service: the functions in reward order (TRL's ``reward_funcs``), their
    names and weights, and the stateful object among them (a :class:`~memrl.rewards.MemoryRPlus`
    or :class:`~memrl.rewards.OutcomeUCBReward`), as :func:`build_rewards` returned them."""

    method: str
    funcs: list[Any]
    names: list[str]
    weights: list[float]
    state: Any
    options: dict[str, Any]  # what a snapshot records and a resumed service must match
    id_columns: tuple[str, ...] = ()  # columns every sample must carry (memory_id_column)

    @property
    def memory(self) -> Any:
        from memrl.rewards.memory_rewards import MemoryRPlus

        return self.state if isinstance(self.state, MemoryRPlus) else None


# GRPO-config-free TrainConfig fields the service uses; the others describe training only
TRAIN_FIELDS = ("method", "prompt_style", "checker", "dataset", "reward_weights_by_name")


def build_reward_spec(values: dict[str, Any], *, encoder: Any = None, encoder_device: str | None = None,
                      encoder_batch_size: int | None = None, tokenizer: Any = None) -> RewardSpec:
    """The rewards ``memrl train`` would build from the flat options ``values``.

    ``values`` are resolved exactly as ``memrl train`` resolves them
    (:func:`memrl.grpo.config.resolve_config`: unknown keys refused, presets' derived fields
    filled). ``encoder`` (an :class:`~memrl.encoders.Encoder`) is shared when given, else
    :class:`~memrl.rewards.MemoryRPlus` builds it from ``memory_encoder`` on
    ``memory_encoder_device`` with ``memory_encoder_batch_size``, as in ``memrl train``.
    ``encoder_device`` and ``encoder_batch_size`` are the old service-side names of those two
    options (:class:`ServeConfig`): given, they set them.
    """
    from memrl.grpo.config import resolve_config
    from memrl.rewards.baselines import CosineLengthReward
    from memrl.rewards.memory_config import RUNTIME_FIELDS
    from memrl.rewards.registry import build_rewards, reward_names, reward_weight_list
    from memrl.tasks.math import default_checker

    values = dict(values)
    for alias, name, value in (("encoder_device", "memory_encoder_device", encoder_device),
                               ("encoder_batch_size", "memory_encoder_batch_size", encoder_batch_size)):
        if value is not None:
            if values.get(name, value) != value:
                raise ValueError(f"{alias}={value!r} and {name}={values[name]!r} disagree: {alias} is the old name "
                                 f"of {name}; set only {name}")
            values[name] = value
    train, grpo, memory_cfg, exploration_cfg = resolve_config(values)
    if train.method == "entropy":
        raise ValueError("method 'entropy' is TRL's entropy bonus in the loss, not a reward: serve --method r1 "
                         "and set the entropy coefficient in your trainer")
    if train.method == "r1-random":
        raise ValueError("method 'r1-random' is a study control (R1 plus noise drawn per trainer step); "
                         "a service sees no trainer step to draw it from: serve --method r1")
    checker = train.checker or default_checker(train.dataset)
    funcs, state = build_rewards(train.method, style=train.prompt_style, answer_column="answer", checker=checker,
                                 max_completion_length=grpo.max_completion_length or 256,
                                 memory_config=memory_cfg, encoder=encoder, exploration_config=exploration_cfg)
    if tokenizer is not None:
        for f in funcs:
            if isinstance(f, CosineLengthReward):
                f.tokenizer = tokenizer
    names = reward_names(funcs)
    weights = reward_weight_list(funcs, train.reward_weights_by_name) or [1.0] * len(funcs)
    options: dict[str, Any] = {"method": train.method, "prompt_style": train.prompt_style, "checker": checker,
                               "reward_names": names, "reward_weights": weights}
    if train.method in MEMORY_METHODS:  # where the encoder runs may change between restarts
        options["memory"] = {k: v for k, v in dataclasses.asdict(state.config).items() if k not in RUNTIME_FIELDS}
    if train.method.startswith("outcome-"):
        options["exploration"] = dataclasses.asdict(exploration_cfg)
    id_columns = (memory_cfg.memory_id_column,) if train.method in MEMORY_METHODS and memory_cfg.memory_id_column else ()
    return RewardSpec(train.method, funcs, names, weights, state, options, id_columns)


def check_respond_mode(spec: RewardSpec, respond: str) -> None:
    """Refuse reward settings whose per-request answer would depend on arrival order or on the other
    completions of a step, when answers are given per request (``respond='immediate'``).

    Under ``respond='commit'`` every setting is served: the step is computed in one call, in a
    canonical order (see :mod:`memrl.serve.engine`).
    """
    if respond != "immediate":
        return
    hint = ("; serve it with --respond commit (each answer waits for its step's commit and is computed over the "
            "whole step, as one in-process call)")
    memory = spec.memory
    if memory is not None:
        from memrl.rewards.memory_config import GATE_NONE
        from memrl.rewards.semantics import SEMANTICS

        c = memory.config
        if respond not in memory.semantics.serve_modes:
            supported = ", ".join(name for name, semantics in SEMANTICS.items() if respond in semantics.serve_modes)
            raise ValueError(f"memory_semantics={c.memory_semantics!r} {memory.semantics.not_alone}, so it cannot be "
                             f"answered per request against the committed memory (--respond {respond} supports "
                             f"{supported}){hint}")
        if c.memory_gate != GATE_NONE:
            raise ValueError(f"memory_gate={c.memory_gate!r} keeps or drops the intrinsic rewards of a question's "
                             f"group by whether its outcome varies among the step's completions, which a single "
                             f"request does not hold{hint}")
        if c.memory_micro_batch_prompts:
            raise ValueError(f"memory_micro_batch_prompts={c.memory_micro_batch_prompts} writes part of a step before "
                             f"scoring the rest, which depends on arrival order{hint}")
    if spec.method == "outcome-batch":
        raise ValueError(f"outcome-batch penalises repeats among the completions of a question in the step, which "
                         f"a single request does not hold{hint}")
    if spec.method == "outcome-ucb":
        c = spec.state.config
        if c.outcome_explore_baseline == "mean" or c.outcome_explore_count_batch:
            raise ValueError("outcome-ucb with outcome_explore_baseline='mean' or outcome_explore_count_batch=True "
                             "depends on the other completions of the step (baseline 'constant' or 'none' gives "
                             f"the same GRPO advantages){hint}")
