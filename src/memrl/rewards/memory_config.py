"""Memory-R / Memory-R+ settings: :class:`MemoryRewardConfig`, the ``reference`` preset, and the
text rules (what is stored, what the reference counts as an answer).

:mod:`memrl.rewards.memory_rewards` holds the rewards themselves; :mod:`memrl.rewards.semantics`
documents what each ``memory_semantics`` rewards and the options its preset fills.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memrl.encoders import DEFAULT_ENCODER
from memrl.names import PROMPT_STYLES as STYLES
from memrl.names import check_choice
from memrl.options import build_config, check_field_types
from memrl.rewards.semantics import SEMANTICS, semantics_named
from memrl.runtime import check_device

KEY_RULES = ("own", "first_prompt")
SUCCESS_RULES = ("outcome", "exact_answer")
STORE_MODES = ("reasoning", "completion", "reference")
NORMALIZERS = ("batch", "sequential")
FLAT_RULES = ("neutral", "reference")
WARMUP_UNITS = ("steps", "failure_keys")
# memory_gate: 'zero_variance' keeps the intrinsic rewards only in groups whose outcome does not vary
GATE_NONE = "none"
GATES = (GATE_NONE, "zero_variance")
# where and how the encoder runs: not what a run computes (vectors agree to ~1e-6 across devices and
# batch sizes), so a resumed run or a restarted service may change them
RUNTIME_FIELDS = ("memory_encoder_device", "memory_encoder_batch_size")
EXPLOIT_EMPTY = 0.0
EXPLORE_EMPTY = 1.0
FLAT_NEUTRAL = 0.0


def semantics_preset(semantics: str, explore: bool = True) -> dict[str, Any]:
    """The values ``memory_semantics`` gives the options left unset (:mod:`memrl.rewards.semantics`)."""
    return semantics_named(semantics).preset(explore)


# Reference values of options no preset touches (they are memrl's defaults too, except the tag):
# what MemoryRPlus compares against when it warns that a `reference` run deviates.
REFERENCE_FIXED = {"memory_top_k": 1, "memory_norm_window": 100, "memory_explore_warmup_keys": 500,
                   "memory_exploit_weight": 1.0, "memory_explore_weight": 1.0, "memory_style": "reasoning"}

_PRESET = "preset: unset follows memory_semantics"


@dataclass
class MemoryRewardConfig:
    """Memory-R / Memory-R+ settings; defaults are the paper's GSM8K ones.

    Field names carry a ``memory_`` prefix so they can share one command-line namespace with
    TRL's ``GRPOConfig`` (TRL-style ``metadata["help"]`` feeds ``--help`` and YAML configs).
    Options whose default is ``None`` are filled from ``memory_semantics`` (see the module
    docstring for the table and the precedence rule).
    """

    memory_explore: bool = field(default=True, metadata={"help": "Memory-R+ (True) or Memory-R, exploit only (False)."})
    memory_top_k: int = field(default=1, metadata={"help": "K stored questions read per query (paper: 1 on GSM8K, 20 on AI-MO)."})
    memory_max_keys: int | None = field(default=None, metadata={"help": f"N, most questions kept per memory (FIFO eviction); {_PRESET}: 7473 (GSM8K's |D|, the paper's N = |D|), reference 10000."})
    memory_max_values: int | None = field(default=None, metadata={"help": f"L, most responses kept per question (oldest dropped); {_PRESET}: 100, reference 100 (Memory-R+) or 1000 (Memory-R)."})
    memory_norm_window: int = field(default=100, metadata={"help": "w, raw values in the running min-max window."})
    memory_norm_eps: float = field(default=1e-8, metadata={"help": "ε in (R − min)/(max − min + ε) of the batch normaliser (the reference's sequential one has none)."})
    memory_norm_tolerance: float | None = field(default=None, metadata={"help": f"A window whose spread max − min is at most this is flat (memory_norm_flat decides its value); {_PRESET}: 1e-6, reference 0 (only max == min)."})
    memory_norm_flat: str | None = field(default=None, metadata={"help": f"Value of a flat window: 'neutral' (0.0, no advantage) or 'reference' (exploit 1 − raw distance, explore 0.0); {_PRESET}: neutral, reference 'reference'.", "choices": FLAT_RULES})
    memory_normalizer: str | None = field(default=None, metadata={"help": f"'batch' (one pair of bounds over the window plus the whole call, order-invariant) or 'sequential' (the reference: each value appended, then normalised, in call order); {_PRESET}: batch, reference sequential.", "choices": NORMALIZERS})
    memory_explore_warmup_steps: int = field(default=50, metadata={"help": "Optimizer steps with explore off when memory_warmup_unit='steps' (memrl's default 50 follows the paper's text; the reference code counts failure keys instead)."})
    memory_explore_warmup_keys: int = field(default=500, metadata={"help": "Explore is off until the failure memory holds this many keys when memory_warmup_unit='failure_keys' (the reference code: 500)."})
    memory_warmup_unit: str | None = field(default=None, metadata={"help": f"What the explore warm-up counts: 'steps' (optimizer steps) or 'failure_keys' (keys in the failure memory, checked per completion after its write under the write-then-score orders); {_PRESET}: steps, reference failure_keys.", "choices": WARMUP_UNITS})
    memory_exploit_weight: float = field(default=1.0, metadata={"help": "λ_s, weight of the normalised exploit reward."})
    memory_explore_weight: float = field(default=1.0, metadata={"help": "λ_e, weight of the normalised explore reward."})
    memory_success_threshold: float = field(default=0.5, metadata={"help": "θ_s: outcome > θ_s goes to the success memory."})
    memory_failure_threshold: float = field(default=0.5, metadata={"help": "θ_f: outcome ≤ θ_f goes to the failure memory."})
    memory_success_rule: str | None = field(default=None, metadata={"help": f"What decides success: 'outcome' (the outcome function, memrl's numeric check) or 'exact_answer' (the reference: stripped text after the last <answer> up to </answer> equals the text after #### in the gold, no normalisation; 1/0 against the thresholds); {_PRESET}: outcome, reference exact_answer.", "choices": SUCCESS_RULES})
    memory_store: str | None = field(default=None, metadata={"help": f"What is encoded and stored: 'reasoning' (the first <think>/<reasoning> span, else the whole completion), 'completion', or 'reference' (text after the last opening tag up to the next closing tag, stripped; no tag: the whole completion, stripped); {_PRESET}: reasoning, reference 'reference'.", "choices": STORE_MODES})
    memory_style: str = field(default="think", metadata={"help": "Tag style of the reasoning span: 'think' or 'reasoning' (the reference's prompt uses <reasoning>)."})
    memory_semantics: str = field(default="score_then_write", metadata={"help": "; ".join(f"'{s.name}' ({s.summary})" for s in SEMANTICS.values()) + ".", "choices": tuple(SEMANTICS)})
    memory_gate: str = field(default=GATE_NONE, metadata={"help": "'none', or 'zero_variance': the intrinsic rewards only for GRPO groups (the completions of one question in a step) whose outcome does not vary, 0 in every other group (its reward is R1's alone); the memory is still written from every group.", "choices": GATES})
    memory_key_rule: str | None = field(default=None, metadata={"help": f"Memory key of a completion: 'own' (its own question) or 'first_prompt' (the reference's bug: the first question of its reward call, for writes and reads); {_PRESET}: own, reference first_prompt.", "choices": KEY_RULES})
    memory_micro_batch_prompts: int | None = field(default=None, metadata={"help": f"Process each reward call in chunks of this many prompts x G completions, in order, as TRL 0.14 called rewards per micro-batch (0: the whole call at once); {_PRESET}: 0, reference 2."})
    memory_group_size: int = field(default=0, metadata={"help": "G, completions per prompt, for memory_micro_batch_prompts; 0 infers it from the first run of identical questions of a call (the largest over processes). Set it when a dataset repeats a question back to back."})
    memory_key_column: str = field(default="question", metadata={"help": "Dataset column holding the question text (falls back to the prompt's last user turn)."})
    memory_id_column: str | None = field(default=None, metadata={"help": "Optional dataset column with a question id used as the memory key id."})
    memory_backend: str = field(default="exact", metadata={"help": "kNN backend: 'exact' (numpy) or 'faiss'."})
    memory_dtype: str = field(default="float32", metadata={"help": "Vector storage: 'float32' or 'float16'."})
    memory_encoder: str = field(default=DEFAULT_ENCODER, metadata={"help": "sentence-transformers encoder for questions and responses."})
    memory_encoder_device: str = field(default="auto", metadata={"help": "torch device of the encoder: 'auto' (the process's CUDA device when torch sees CUDA, the trainer's; else the CPU), 'cpu', 'cuda' or 'cuda:N'; resolved in the process that encodes."})
    memory_encoder_batch_size: int = field(default=64, metadata={"help": "Texts per encoder forward pass."})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choice("memory_semantics", self.memory_semantics, tuple(SEMANTICS))
        filled = {}
        for name, value in semantics_preset(self.memory_semantics, self.memory_explore).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
                filled[name] = value
        # not a field: asdict() and comparisons ignore it; replace()/from_dict(__dict__) read it
        self._preset_filled = filled
        check_device("memory_encoder_device", self.memory_encoder_device)
        for name in ("memory_top_k", "memory_max_keys", "memory_max_values", "memory_norm_window",
                     "memory_encoder_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("memory_explore_warmup_steps", "memory_explore_warmup_keys", "memory_micro_batch_prompts",
                     "memory_group_size", "memory_norm_tolerance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        choices = {"memory_store": STORE_MODES, "memory_style": STYLES, "memory_key_rule": KEY_RULES,
                   "memory_success_rule": SUCCESS_RULES, "memory_normalizer": NORMALIZERS,
                   "memory_norm_flat": FLAT_RULES, "memory_warmup_unit": WARMUP_UNITS, "memory_gate": GATES,
                   "memory_backend": ("exact", "faiss"), "memory_dtype": ("float32", "float16")}
        for name, allowed in choices.items():
            check_choice(name, getattr(self, name), allowed)
        if self.memory_failure_threshold > self.memory_success_threshold:
            raise ValueError(
                "memory_failure_threshold must be <= memory_success_threshold, otherwise a completion "
                "could be stored as both a success and a failure"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MemoryRewardConfig:
        """Build from option values. A dict made from a built config's ``__dict__`` (as
        :meth:`replace` does) re-applies ``memory_semantics``'s preset to the options the preset
        filled and that the dict leaves at the filled value."""
        values = dict(values)
        for name, value in (values.pop("_preset_filled", None) or {}).items():
            if name in values and values[name] == value:
                values[name] = None
        return build_config(cls, values)

    def replace(self, **changes: Any) -> MemoryRewardConfig:
        """A copy with ``changes``; options the preset filled follow the new ``memory_semantics``
        and ``memory_explore`` (``dataclasses.replace`` would keep them as they are)."""
        return type(self).from_dict({**self.__dict__, **changes})

    @classmethod
    def reference(cls, explore: bool = True, **options: Any) -> MemoryRewardConfig:
        """The reference code's Memory-R+ (``explore=True``) or Memory-R: ``memory_semantics=
        "reference"`` with its ``<reasoning>`` tag; ``options`` override any setting, e.g.
        ``MemoryRewardConfig.reference(memory_key_rule="own")`` to fix only the key bug."""
        return cls.from_dict({"memory_semantics": "reference", "memory_explore": explore,
                              "memory_style": "reasoning", **options})

    def reference_deviations(self) -> dict[str, tuple[Any, Any]]:
        """``{option: (this value, the reference code's value)}`` for every reproduced option that
        differs from the reference (empty for a faithful ``reference`` config)."""
        ref = {**semantics_preset("reference", self.memory_explore), **REFERENCE_FIXED}
        return {k: (getattr(self, k), v) for k, v in ref.items() if getattr(self, k) != v}


def reasoning_span(text: str, style: str = "think") -> str:
    """The text inside the first ``<think>``/``<reasoning>`` block; the whole text if there is none
    (tiny models often skip the tags, and their output is still what they tried)."""
    start, end = f"<{style}>", f"</{style}>"
    i = text.find(start)
    if i < 0:
        return text
    j = text.find(end, i + len(start))
    span = text[i + len(start) : j if j >= 0 else len(text)].strip()
    return span or text


def reference_span(text: str, style: str = "reasoning") -> str:
    """The reference code's stored text: what follows the *last* ``<style>`` tag, up to the first
    closing tag after it, stripped. Without an opening tag it starts at the beginning, without a
    closing one it runs to the end (so a completion without tags is stored whole, stripped), and
    an empty block stays empty.

    >>> reference_span("<reasoning> a </reasoning><reasoning> b </reasoning><answer>1</answer>")
    'b'
    >>> reference_span("  no tags  ")
    'no tags'
    """
    after_open = text.rpartition(f"<{style}>")[2]
    return after_open.partition(f"</{style}>")[0].strip()


def stored_text(text: str, mode: str = "reasoning", style: str = "think") -> str:
    """What ``memory_store`` encodes and stores for a completion."""
    if mode == "completion":
        return text
    if mode == "reference":
        return reference_span(text, style)
    return reasoning_span(text, style)


def reference_answer(text: str) -> str:
    """The reference's extracted answer: after the last ``<answer>``, up to the next
    ``</answer>``, stripped; a completion without tags is its own answer (so a bare ``"72"``
    succeeds).

    >>> reference_answer("<answer>\\n72\\n</answer>"), reference_answer(" 72 "), reference_answer("<answer>72.0</answer>")
    ('72', '72', '72.0')
    """
    return text.rpartition("<answer>")[2].partition("</answer>")[0].strip()


def reference_gold(gold: Any) -> str:
    """The reference's gold answer: the text after ``####`` (up to a second one), stripped; a gold
    without ``####`` (an already short answer) stripped as is."""
    text = str(gold)
    if "####" in text:
        return text.partition("####")[2].partition("####")[0].strip()
    return text.strip()
