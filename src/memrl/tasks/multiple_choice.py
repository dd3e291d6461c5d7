"""Multiple-choice understanding sets from ``commonsense_mc/`` (MosaicML Eval Gauntlet copies,
plus the original CommonsenseQA dev file).

Every set becomes :class:`Example` rows with the option **texts** as ``choices``; the LM scores
every choice as a continuation of the query, by length-normalised log-probability (choices differ
in length). The prompt is ``"<query>\\nAnswer:"`` and a choice is scored as ``" <choice>"``.

Forms (``MCSpec.form``):

* ``gauntlet``: the file's ``{"query", "choices", "gold"}`` rows as shipped (piqa, openbook_qa,
  arc_challenge, boolq).
* ``gauntlet-texts``: a gauntlet file whose choices are letters and whose query lists the options
  (``"...\\nChoices:\\nA. <text>\\nB. <text>\\nAnswer:"``): the option texts are parsed out of the
  query and become the choices; the query keeps the context and question only (siqa).
* ``csqa-hf``: ``commonsense_qa_dev_hf.jsonl`` (HF ``tau/commonsense_qa`` validation, the
  original 5 choices): ``"Question: <question>"`` with the 5 choice texts (commonsense_qa).

Why texts, not letters: SmolLM2-135M cannot map a letter to the option it names and puts nearly
all its mass on " A" (zero-shot on the seed-13 test subsample, with or without a doubled cue:
CommonsenseQA "A" on 99-100 of 100 items, SIQA on 99-100 of 100). The letter forms stay available as ``commonsense_qa_letters``
and ``siqa_letters`` (the gauntlet rows as shipped) for larger LMs that can read an option list.

The answer cue is written once: the siqa and commonsense_qa gauntlet queries already end with
"Answer:", and the template appends it, so a query ending with the cue has it removed when read
(per row; every row of those two files has it, no row of the other files). Demonstrations and
the query then render alike, ``"...\\nAnswer: <choice>"``.

When two choices of a row have the same text (24 CommonsenseQA rows, a few ARC/SIQA rows), the
gold index is that of the first of them: identical texts get identical scores and the argmax
takes the first, so a model choosing the gold text counts as correct.

Only one file exists per set (a dev or test split), so the few-shot pool is carved out of it:
for data seed ``s`` a seeded sample of ``train_size`` rows (default 64) is the training pool,
another ``train_size`` rows the dev split, and the remaining rows the test set. The split is
the same for every method of a study. ``commonsense_qa`` and ``commonsense_qa_letters`` have the
same 1221 questions in the same order, so they carve out the same questions.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from memrl.paths import data_dir
from memrl.tasks.fewshot import Example, FewShotTask, PromptTemplate
from memrl.tasks.files import iter_jsonl, require_fields


@dataclass(frozen=True)
class MCSpec:
    """A multiple-choice set: its file under ``commonsense_mc/`` and how its rows are read."""

    file: str
    form: str = "gauntlet"  # "gauntlet" | "gauntlet-texts" | "csqa-hf" (module docstring)


MC_TASKS: dict[str, MCSpec] = {
    "piqa": MCSpec("piqa.jsonl"),
    "siqa": MCSpec("siqa.jsonl", "gauntlet-texts"),
    "siqa_letters": MCSpec("siqa.jsonl"),
    "openbook_qa": MCSpec("openbook_qa.jsonl"),
    "arc_challenge": MCSpec("arc_challenge.jsonl"),
    "boolq": MCSpec("boolq.jsonl"),
    "commonsense_qa": MCSpec("commonsense_qa_dev_hf.jsonl", "csqa-hf"),
    "commonsense_qa_letters": MCSpec("commonsense_qa.jsonl"),
}

MC_CUE = "Answer:"
# The queries end with a newline or the question; "Answer:" marks where the choice goes, so
# demonstrations and the query look the same.
MC_TEMPLATE = PromptTemplate(input="{text}\n" + MC_CUE, answer_prefix=" ", demo_separator="\n\n")

_OPTION_LIST = re.compile(r"\nChoices:\n((?:[A-Z]\. [^\n]*(?:\n|$))+)$")


def _strip_cue(text: str) -> str:
    """``text`` without a trailing answer cue (the template adds it)."""
    text = text.strip()
    while text.endswith(MC_CUE):
        text = text[: -len(MC_CUE)].rstrip()
    return text


def _example(text: str, choices: tuple[str, ...], gold: object, path: Path, row: int) -> Example:
    if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
        raise ValueError(f"{path}, row {row}: field 'gold'={gold!r} is not a choice index")
    if not text or len(choices) < 2 or not all(choices):
        raise ValueError(f"{path}, row {row}: empty query, an empty choice or fewer than 2 choices")
    # identical texts score identically and argmax takes the first: count choosing the text as right
    return Example(text=text, label=choices.index(choices[gold]), choices=choices)


def read_mc_file(path: Path, *, texts_from_query: bool = False) -> list[Example]:
    """Rows of a gauntlet JSONL file as :class:`Example` (``choices`` set, ``label`` = gold).

    A trailing "Answer:" in the query is removed (the template writes it). With
    ``texts_from_query`` the choices are letters and the query lists the options as
    ``"Choices:\\nA. <text>\\n..."``: the texts become the choices and the list leaves the query.
    """
    out = []
    for i, rec in iter_jsonl(path):
        require_fields(rec, ("query", "choices", "gold"), path, i)
        choices = tuple(str(c).strip() for c in rec["choices"])
        text = _strip_cue(str(rec["query"]))
        if texts_from_query:
            m = _OPTION_LIST.search(text)
            lines = m.group(1).splitlines() if m else []
            if [ln[:1] for ln in lines] != list(choices):
                raise ValueError(f"{path}, row {i}: the query does not list the options {list(choices)} "
                                 "as 'Choices:\\nA. <text>\\n...'")
            text, choices = text[: m.start()].strip(), tuple(ln[3:].strip() for ln in lines)
        out.append(_example(text, choices, rec["gold"], path, i))
    return out


def read_csqa_hf_file(path: Path) -> list[Example]:
    """CommonsenseQA in the HF export format (``question``, ``choices.{label,text}``,
    ``answerKey``) as :class:`Example`: ``"Question: <question>"`` and the choice texts."""
    out = []
    for i, rec in iter_jsonl(path):
        require_fields(rec, ("question", "choices", "answerKey"), path, i)
        opts = rec["choices"]
        if not isinstance(opts, dict) or not isinstance(opts.get("label"), list) \
                or not isinstance(opts.get("text"), list) or len(opts["label"]) != len(opts["text"]):
            raise ValueError(f"{path}, row {i}: field 'choices' is not {{'label': [...], 'text': [...]}}")
        labels = [str(x) for x in opts["label"]]
        key = str(rec["answerKey"])
        if key not in labels:
            raise ValueError(f"{path}, row {i}: field 'answerKey'={key!r} is not one of {labels}")
        choices = tuple(str(t).strip() for t in opts["text"])
        out.append(_example("Question: " + str(rec["question"]).strip(), choices, labels.index(key), path, i))
    return out


def load_mc_task(name: str, seed: int = 13, *, train_size: int = 64) -> FewShotTask:
    """Load a multiple-choice set with a seeded train/dev/test carve-out (see module docstring)."""
    if name not in MC_TASKS:
        raise ValueError(f"unknown multiple-choice task {name!r}; choose one of {sorted(MC_TASKS)}")
    spec = MC_TASKS[name]
    path = data_dir() / "commonsense_mc" / spec.file
    if spec.form == "csqa-hf":
        rows = read_csqa_hf_file(path)
    else:
        rows = read_mc_file(path, texts_from_query=spec.form == "gauntlet-texts")
    if len(rows) < 3 * train_size:
        raise ValueError(f"{path}: {len(rows)} rows is too few for train_size={train_size}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    train = [rows[i] for i in order[:train_size]]
    dev = [rows[i] for i in order[train_size : 2 * train_size]]
    test = [rows[i] for i in sorted(order[2 * train_size :])]
    n_choices = len(rows[0].choices or ())
    return FewShotTask(
        name=name, seed=seed, source=f"commonsense_mc:{path} ({spec.form}, seeded carve-out, {train_size} train)",
        train=train, dev=dev, test=test,
        label_names=tuple(str(i) for i in range(n_choices)),
        template=MC_TEMPLATE, verbalizer=None, length_normalise=True,
    )
