"""POEM's read-setting vocabulary: the encodings, rewards and read rules, :class:`Setting`, and their checks.

A read setting says how a fitted memory is read at select time (how orders are coded, which reward
scores a trial, how many neighbours are read, how their rewards combine, and how much a global prior
weighs). :class:`memrl.poem.PoemConfig` names one in its fields; leave-one-out chooses one; the trial
matrix and the optimiser read the memory under one. The names and their validation live here only.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

from memrl.poem.rewards import REWARD_FUNCTIONS

ENCODINGS = ("rank", "identity", "label")
REWARDS = tuple(REWARD_FUNCTIONS)  # correct, gold_prob, margin
READS = ("sum", "mean")
K_WORDS = ("all",)  # k may be a positive integer or one of these


def check_choice(owner: str, name: str, value: Any, valid: Collection[Any]) -> None:
    """Raise ``ValueError`` naming ``owner.name`` when ``value`` is not one of ``valid``."""
    if value not in valid:
        raise ValueError(f"{owner}.{name}={value!r}; choose one of {list(valid)}")


def check_count(owner: str, name: str, value: Any, words: Collection[str] = ()) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive integer (not a bool) or one of ``words``."""
    if value in words:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = f" or one of {list(words)}" if words else ""
        raise ValueError(f"{owner}.{name} must be a positive integer{extra}, got {value!r}")


def check_shrink(owner: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in [0, 1] (the prior's weight)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}.shrink must be a number in [0, 1], got {value!r}")


def check_setting_fields(owner: str, *, encoding: Any, reward: Any, k: Any, read: Any, shrink: Any) -> None:
    """Check the five fields of a read setting (``owner`` names the object in the message)."""
    check_choice(owner, "encoding", encoding, ENCODINGS)
    check_choice(owner, "reward", reward, REWARDS)
    check_count(owner, "k", k, K_WORDS)
    check_choice(owner, "read", read, READS)
    check_shrink(owner, shrink)


@dataclass(frozen=True)
class Setting:
    """A complete read-time setting of POEM (what leave-one-out chooses).

    Attributes:
        encoding: how an order is coded in memory (:data:`ENCODINGS`).
        reward: the reward of one trial (:data:`REWARDS`).
        k: neighbours read per query, a positive integer or ``"all"``.
        read: how the neighbours' rewards combine per code (:data:`READS`).
        shrink: weight in [0, 1] of the global prior.
    """

    encoding: str
    reward: str
    k: int | str
    read: str
    shrink: float

    def __post_init__(self) -> None:
        check_setting_fields("Setting", encoding=self.encoding, reward=self.reward, k=self.k, read=self.read,
                             shrink=self.shrink)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"encoding={self.encoding} reward={self.reward} k={self.k} read={self.read} shrink={self.shrink:g}"
