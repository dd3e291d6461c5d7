"""Multiple-choice understanding sets from ``commonsense_mc/`` (MosaicML Eval Gauntlet copies).

Each row is ``{"query", "choices", "gold"}``; the LM scores every choice as a continuation of
the query, by length-normalised log-probability (choices differ in length).

Only one file exists per set (a dev or test split), so the few-shot pool is carved out of it:
for data seed ``s`` a seeded sample of ``train_size`` rows (default 64) is the training pool,
another ``train_size`` rows the dev split, and the remaining rows the test set. The split is
the same for every method of a study.
"""

from __future__ import annotations

import random
from pathlib import Path

from memrl.paths import data_dir
from memrl.tasks.fewshot import Example, FewShotTask, PromptTemplate
from memrl.tasks.files import iter_jsonl, require_fields

MC_TASKS = {
    "piqa": "piqa.jsonl",
    "siqa": "siqa.jsonl",
    "openbook_qa": "openbook_qa.jsonl",
    "arc_challenge": "arc_challenge.jsonl",
    "boolq": "boolq.jsonl",
    "commonsense_qa": "commonsense_qa.jsonl",
}

# The gauntlet queries already end with a newline or the question; "Answer:" marks where the
# choice goes, so demonstrations and the query look the same.
MC_TEMPLATE = PromptTemplate(input="{text}\nAnswer:", answer_prefix=" ", demo_separator="\n\n")


def read_mc_file(path: Path) -> list[Example]:
    """Rows of a gauntlet JSONL file as :class:`Example` (``choices`` set, ``label`` = gold)."""
    out = []
    for i, rec in iter_jsonl(path):
        require_fields(rec, ("query", "choices", "gold"), path, i)
        choices = tuple(str(c).strip() for c in rec["choices"])
        gold = rec["gold"]
        if not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise ValueError(f"{path}, row {i}: field 'gold'={gold!r} is not a choice index")
        text = str(rec["query"]).strip()
        if not text or len(choices) < 2:
            raise ValueError(f"{path}, row {i}: empty query or fewer than 2 choices")
        out.append(Example(text=text, label=gold, choices=choices))
    return out


def load_mc_task(name: str, seed: int = 13, *, train_size: int = 64) -> FewShotTask:
    """Load a multiple-choice set with a seeded train/dev/test carve-out (see module docstring)."""
    if name not in MC_TASKS:
        raise ValueError(f"unknown multiple-choice task {name!r}; choose one of {sorted(MC_TASKS)}")
    path = data_dir() / "commonsense_mc" / MC_TASKS[name]
    rows = read_mc_file(path)
    if len(rows) < 3 * train_size:
        raise ValueError(f"{path}: {len(rows)} rows is too few for train_size={train_size}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    train = [rows[i] for i in order[:train_size]]
    dev = [rows[i] for i in order[train_size : 2 * train_size]]
    test = [rows[i] for i in sorted(order[2 * train_size :])]
    n_choices = len(rows[0].choices or ())
    return FewShotTask(
        name=name, seed=seed, source=f"commonsense_mc:{path} (seeded carve-out, {train_size} train)",
        train=train, dev=dev, test=test,
        label_names=tuple(str(i) for i in range(n_choices)),
        template=MC_TEMPLATE, verbalizer=None, length_normalise=True,
    )
