"""Four GSM8K training problems for the Memory-R+, serve and GPU tests, read from the shared data
when the tests run (``$MEMRL_DATA_DIR``, else ``../shared/data``): the repository keeps no copy of
the dataset. The tests' completions around them are written by hand."""

from __future__ import annotations

from memrl.rewards.outcome import parse_gold
from memrl.tasks.math import DatasetSpec, load_rows

# 0-based rows of GSM8K's train split (row 3 is left out: the tests were written for these four)
TRAIN_ROW = {"clips": 0, "weng": 1, "betty": 2, "james": 4}


def _load() -> dict[str, tuple[str, str]]:
    rows, _ = load_rows(DatasetSpec(name="gsm8k", split="train", limit=max(TRAIN_ROW.values()) + 1))
    return {name: (rows[i]["question"], rows[i]["answer"]) for name, i in TRAIN_ROW.items()}


PROBLEMS: dict[str, tuple[str, str]] = _load()  # name -> (question, solution ending "#### <answer>")
QUESTION_AND_GOLD: dict[str, tuple[str, str]] = {name: (q, parse_gold(a)) for name, (q, a) in PROBLEMS.items()}
