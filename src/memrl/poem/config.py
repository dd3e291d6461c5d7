"""POEM options. Every design choice the paper leaves open is a named field here, with the
default of ``../shared/specs/poem.md`` and a help string (shown by ``memrl poem --help``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from memrl.options import build_config, check_field_types

REWARDS = ("correct", "gold_prob", "margin")
READS = ("sum", "mean")
EXAMPLE_MODES = ("fixed", "knn")
FALLBACKS = ("kate", "kate_reverse")
ENCODINGS = ("rank", "identity")


@dataclass
class PoemConfig:
    """Configuration of :class:`memrl.poem.PoemOptimizer`.

    Exploration (fit), memory read (select) and example choice are each one option.
    """

    n_examples: int = field(default=4, metadata={"help": "number of demonstrations n in the prompt"})
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
    k: int = field(default=8, metadata={"help": "neighbours retrieved from memory at select time"})
    budget: int = field(
        default=24,
        metadata={"help": "orders tried per training input: all n! when n! <= budget, else a "
                  "uniform sample of `budget` distinct orders"},
    )
    examples: str = field(
        default="fixed",
        metadata={"help": "'fixed': one seeded set of n demonstrations from the training split; "
                  "'knn': the n training examples most similar to each query (KATE), then ordered"},
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
                  "where; needs examples='fixed')"},
    )
    seed: int = field(default=0, metadata={"help": "seed for drawing demonstrations and sampling orders"})

    def __post_init__(self) -> None:
        check_field_types(self)
        checks = (("reward", REWARDS), ("read", READS), ("examples", EXAMPLE_MODES), ("fallback", FALLBACKS),
                  ("encoding", ENCODINGS))
        for name, valid in checks:
            if getattr(self, name) not in valid:
                raise ValueError(f"PoemConfig.{name}={getattr(self, name)!r}; choose one of {list(valid)}")
        if self.encoding == "identity" and self.examples != "fixed":
            raise ValueError("PoemConfig.encoding='identity' needs examples='fixed': with per-query "
                             "(knn) demonstrations a concrete order does not carry over between queries")
        for name in ("n_examples", "k", "budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"PoemConfig.{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> PoemConfig:
        """Build from a dict (YAML/JSON), refusing unknown keys with the closest valid names."""
        return build_config(cls, data, source=source)
