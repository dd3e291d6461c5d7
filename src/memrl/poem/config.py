"""POEM options. Every design choice the paper leaves open is a named field here, with the
default of ``../shared/specs/poem.md`` and a help string (shown by ``memrl poem --help``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from memrl.options import build_config, check_field_types
from memrl.poem.settings import Setting, check_choice, check_count, check_setting_fields

EXAMPLE_MODES = ("fixed", "knn", "choose")
FALLBACKS = ("kate", "kate_reverse")
SELECTS = ("one_se", "loo", "loo_guarded", "fixed")
N_EXAMPLES_WORDS = ("auto", "classes")
PRESET_FAMILY = "poem"  # presets live in memrl/configs/poem/


def sources_of(examples: str) -> tuple[str, ...]:
    """The demonstration sources an ``examples`` mode fits: ``choose`` fits both and lets the
    selection pick one (:mod:`memrl.poem.selection`).

    >>> sources_of("fixed"), sources_of("choose")
    (('fixed',), ('fixed', 'knn'))
    """
    check_choice("PoemConfig", "examples", examples, EXAMPLE_MODES)
    return ("fixed", "knn") if examples == "choose" else (examples,)


@dataclass
class PoemConfig:
    """Configuration of :class:`memrl.poem.PoemOptimizer`.

    Exploration (fit), memory read (select) and example choice are each one option.
    """

    n_examples: int | str = field(
        default="auto",
        metadata={"help": "number of demonstrations n in the prompt: an integer, 'classes' (one per "
                  "class: every class shown once) or 'auto' (max(4, number of classes)). The label-"
                  "balanced draw shows every class whenever n >= the number of classes"},
    )
    select: str = field(
        default="one_se",
        metadata={"help": "'one_se': after the fit, choose the demonstration source (examples='choose') and "
                  "encoding, reward, k, read and shrink by the "
                  "one-standard-error rule on their leave-one-out accuracies over the training inputs "
                  "(the simplest setting within one standard error of the best), with an honest estimate "
                  "of that choice by nested cross-validation (zero LM calls; the fields below are then "
                  "ignored at read time); 'loo': the setting with the best leave-one-out accuracy (its "
                  "own score is optimistic); 'loo_guarded': the same, but keep the global best "
                  "order unless choosing among settings wins on inputs it was not chosen on (nested "
                  "cross-validation, zero LM calls); 'fixed': use the fields below as given (the "
                  "paper's setting is the 'paper' preset). Only 'one_se' chooses the demonstration "
                  "source too: the others need examples='fixed' or 'knn'"},
    )
    reward: str = field(
        default="gold_prob",
        metadata={"help": "reward of one (input, order) trial: 'correct' (0/1 argmax), 'gold_prob' "
                  "(probability of the gold label, normalised over the label set) or 'margin' "
                  "(log p(gold) - max log p(other), RLPrompt/TEMPERA style)"},
    )
    read: str = field(
        default="sum",
        metadata={"help": "how neighbours' rewards are combined per action: 'sum' (paper) or "
                  "'mean' (does not favour actions tried by more neighbours)"},
    )
    k: int | str = field(default=8, metadata={"help": "neighbours retrieved from memory at select time "
                                                  "(an integer, or 'all')"})
    shrink: float = field(
        default=0.0,
        metadata={"help": "weight lambda in [0, 1] of the global prior: an action's score is (1 - lambda) x "
                  "the neighbours' score + lambda x its mean reward over all memory inputs (x the "
                  "neighbour count for read='sum'); 1 = one global order for every query"},
    )
    use_dev: bool = field(
        default=True,
        metadata={"help": "the task's dev split (16 per class) joins the fit inputs (allowed for model "
                  "selection by the standard few-shot protocol); never used as demonstrations"},
    )
    budget: int = field(
        default=24,
        metadata={"help": "orders tried per training input with fixed demonstrations: all n! when n! <= "
                  "budget, else a seeded uniform sample of `budget` distinct orders, shared by every input"},
    )
    examples: str = field(
        default="choose",
        metadata={"help": "'fixed': one seeded set of n demonstrations from the training split; "
                  "'knn': the n training examples most similar to each query (KATE), then ordered; "
                  "'choose': fit both on the same inputs and let the selection (select='one_se') choose "
                  "the source with the read setting"},
    )
    knn_budget: int = field(
        default=8,
        metadata={"help": "orders tried per fit input with kNN demonstrations: all n! when n! <= knn_budget, "
                  "else KATE's order and a seeded sample of the others, the same orders of each input's own "
                  "candidates (each costs a prompt of its own, so fewer than budget)"},
    )
    fallback: str = field(
        default="kate",
        metadata={"help": "order used when memory has nothing for a query: 'kate' (most similar "
                  "last) or 'kate_reverse' (most similar first)"},
    )
    encoding: str = field(
        default="rank",
        metadata={"help": "action encoding: 'rank' (paper: position j holds the a_j-th most similar "
                  "example, decoded with each query's own ranks) or 'identity' (the concrete order "
                  "of the fixed demonstrations; keeps which example, and so which label, sits "
                  "where; needs examples='fixed') or 'label' (position j holds (label, similarity "
                  "rank among the demonstrations of that label): keeps the label pattern and still "
                  "transfers similarity)"},
    )
    seed: int = field(default=0, metadata={"help": "seed for drawing demonstrations and sampling orders"})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_setting_fields("PoemConfig", encoding=self.encoding, reward=self.reward, k=self.k, read=self.read,
                             shrink=self.shrink)
        for name, valid in (("examples", EXAMPLE_MODES), ("fallback", FALLBACKS), ("select", SELECTS)):
            check_choice("PoemConfig", name, getattr(self, name), valid)
        if self.encoding == "identity" and self.examples != "fixed":
            raise ValueError("PoemConfig.encoding='identity' needs examples='fixed': with per-query "
                             "(knn) demonstrations a concrete order does not carry over between queries")
        if self.examples == "choose" and self.select != "one_se":
            raise ValueError(f"PoemConfig.examples='choose' needs select='one_se' (got {self.select!r}): only that "
                             "selection compares the fixed and the kNN demonstrations; use examples='fixed' or "
                             "'knn' with another select")
        check_count("PoemConfig", "n_examples", self.n_examples, N_EXAMPLES_WORDS)
        check_count("PoemConfig", "budget", self.budget)
        check_count("PoemConfig", "knn_budget", self.knn_budget)
        self.shrink = float(self.shrink)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def read_setting(self) -> Setting:
        """The read setting these fields name (what ``select="fixed"`` uses as given)."""
        return Setting(self.encoding, self.reward, self.k, self.read, self.shrink)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> PoemConfig:
        """Build from a dict (YAML/JSON), refusing unknown keys with the closest valid names."""
        return build_config(cls, data, source=source)

    @classmethod
    def from_preset(cls, name: str) -> PoemConfig:
        """A shipped preset (``memrl/configs/poem/<name>.yaml``, e.g. ``"paper"``) or a YAML file."""
        from memrl.options import preset_path, read_yaml_mapping

        path = preset_path(name, PRESET_FAMILY)
        return cls.from_dict(read_yaml_mapping(path, PRESET_FAMILY), source=str(path))
