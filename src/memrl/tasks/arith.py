"""Procedural arithmetic word problems: a task a tiny model can partly solve from step 0.

Four difficulty levels:

1. a bare sum: ``What is 5 + 19?``
2. a one-step word problem (add or subtract);
3. a two-step word problem (add then subtract);
4. a multi-step problem with a multiplication.

Train and test sets are disjoint by construction: every problem is assigned to a split by a hash
of its text (about 1 in 5 goes to ``test``), and each split draws from its own seeded stream
until it has enough distinct problems of its own split.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

LEVELS = (1, 2, 3, 4)
TEST_FRACTION = 0.2

_NAMES = ("Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jack", "Lena", "Omar")
_ITEMS = ("apples", "marbles", "stickers", "books", "coins", "pencils", "cards", "shells")


def split_of(question: str) -> str:
    """``test`` for about ``TEST_FRACTION`` of all questions (by hash), else ``train``."""
    h = int.from_bytes(hashlib.blake2b(question.encode(), digest_size=8).digest(), "big")
    return "test" if (h % 1000) < TEST_FRACTION * 1000 else "train"


def _level1(r: random.Random) -> tuple[str, int]:
    a, b = r.randint(1, 50), r.randint(1, 50)
    return f"What is {a} + {b}?", a + b


def _level2(r: random.Random) -> tuple[str, int]:
    name, item = r.choice(_NAMES), r.choice(_ITEMS)
    a, b = r.randint(2, 40), r.randint(1, 30)
    if r.random() < 0.5:
        return f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?", a + b
    a = a + b  # keep the result positive
    return f"{name} has {a} {item}. {name} gives away {b} {item}. How many {item} does {name} have left?", a - b


def _level3(r: random.Random) -> tuple[str, int]:
    name, item = r.choice(_NAMES), r.choice(_ITEMS)
    a, b = r.randint(5, 40), r.randint(1, 30)
    c = r.randint(1, a + b - 1)
    q = (f"{name} has {a} {item}. {name} buys {b} more {item} and then gives {c} {item} to a friend. "
         f"How many {item} does {name} have now?")
    return q, a + b - c


def _level4(r: random.Random) -> tuple[str, int]:
    name, item = r.choice(_NAMES), r.choice(_ITEMS)
    boxes, per_box = r.randint(2, 9), r.randint(2, 12)
    extra = r.randint(1, 20)
    given = r.randint(1, boxes * per_box + extra - 1)
    q = (f"{name} buys {boxes} boxes of {item} with {per_box} {item} in each box, and already has {extra} "
         f"{item}. Then {name} gives away {given} {item}. How many {item} does {name} have now?")
    return q, boxes * per_box + extra - given


_GENERATORS: dict[int, Callable[[random.Random], tuple[str, int]]] = {1: _level1, 2: _level2, 3: _level3, 4: _level4}


def make_problem(rng: random.Random, level: int) -> dict[str, str]:
    """One problem ``{"question", "answer"}`` (answer: the integer as a string) at ``level``."""
    if level not in _GENERATORS:
        raise ValueError(f"arith level must be one of {LEVELS}, got {level!r}")
    question, answer = _GENERATORS[level](rng)
    return {"question": question, "answer": str(answer)}


def generate_problems(n: int, level: int = 1, seed: int = 0, split: str = "train") -> list[dict[str, str]]:
    """``n`` distinct problems of ``split`` at ``level``, reproducible from ``seed``.

    Args:
        n: number of problems.
        level: difficulty 1..4 (see the module docstring).
        seed: seed of the stream (the same seed and split always give the same list).
        split: ``train`` or ``test``; the two never share a question.

    Raises ``ValueError`` when the level's problem space is too small for ``n`` distinct problems.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if level not in _GENERATORS:
        raise ValueError(f"arith level must be one of {LEVELS}, got {level!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    # distinct streams per (seed, split, level) so the splits do not consume the same draws
    rng = random.Random(f"arith-{seed}-{split}-{level}")
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(f"arith level {level}: could not find {n} distinct {split} problems")
        p = make_problem(rng, level)
        if p["question"] in seen or split_of(p["question"]) != split:
            continue
        seen.add(p["question"])
        out.append(p)
    return out
