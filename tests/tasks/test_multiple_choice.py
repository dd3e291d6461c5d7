"""Multiple-choice prompts (issue 15): one answer cue per prompt, choice texts as continuations.

Reads the real shipped files under MEMRL_DATA_DIR (skipped when absent); no model is loaded.
"""

import json
import re

import pytest

from memrl.tasks.multiple_choice import (
    MC_CUE,
    MC_TASKS,
    load_mc_task,
    read_csqa_hf_file,
    read_mc_file,
)

LETTER_FORMS = {"commonsense_qa_letters", "siqa_letters"}


def _assert_one_cue(prompt: str) -> None:
    assert prompt.endswith("\n" + MC_CUE)
    assert "Answer:\nAnswer:" not in prompt
    assert not prompt[: -len(MC_CUE)].rstrip().endswith(MC_CUE)  # the cue twice at the end


@pytest.mark.parametrize("name", sorted(MC_TASKS))
def test_every_mc_set_renders_one_answer_cue_and_scores_choice_texts(name, shared_data):
    task = load_mc_task(name, 13)
    q = task.test[0]
    _assert_one_cue(task.prefix([]) + task.suffix(q))  # zero-shot
    one_shot = task.prefix(task.train[:1]) + task.suffix(q)
    _assert_one_cue(one_shot)
    assert one_shot.count(f"{MC_CUE} {task.answer(task.train[0])}\n\n") == 1  # the demo: cue + answer once
    # no row of the set keeps the cue in its text (the template writes it)
    assert not [ex for ex in task.train + task.dev + task.test if ex.text.rstrip().endswith(MC_CUE)]
    conts = task.continuations([q])[0]
    assert conts == [" " + c for c in q.choices] and len(conts) == task.num_choices >= 2
    if name in LETTER_FORMS:  # the documented alternative: letters naming options listed in the query
        assert all(re.fullmatch(r" [A-E]", c) for c in conts) and "\nChoices:\nA. " in q.text
    else:  # option texts, never bare letters
        # (a single letter may be a real option, ARC's carbon "C"; a row of only letters is not)
        assert not [ex for ex in task.test if all(re.fullmatch(r"[A-E]", c) for c in ex.choices)]
        if name in {"commonsense_qa", "siqa"}:  # the sets that shipped letters: real words now
            assert all(re.search(r"[a-z]{2}", c, re.IGNORECASE) for ex in task.test for c in ex.choices)
        assert "\nChoices:\n" not in q.text


def _listed_options(text: str) -> list[str]:
    return re.findall(r"^[A-E]\. (.*)$", text, re.MULTILINE)


@pytest.mark.parametrize("name", ["commonsense_qa", "siqa"])
def test_text_form_matches_letter_form_row_by_row(name, shared_data):
    texts, letters = load_mc_task(name, 13), load_mc_task(f"{name}_letters", 13)
    for split in ("train", "dev", "test"):
        a, b = getattr(texts, split), getattr(letters, split)
        assert len(a) == len(b)  # same file length and order: the same questions carved out
        for x, y in zip(a, b):
            options = _listed_options(y.text)
            assert y.text.startswith(x.text)
            assert x.choices[x.label] == options[y.label]  # same gold answer
            assert set(options) <= set(x.choices)  # CSQA: gauntlet kept 4 of the original 5
    assert texts.num_choices == (5 if name == "commonsense_qa" else 2)


def test_commonsense_qa_reads_the_original_five_choices(shared_data):
    rows = read_csqa_hf_file(shared_data / "commonsense_mc" / "commonsense_qa_dev_hf.jsonl")
    assert len(rows) == 1221 and {len(r.choices) for r in rows} == {5}
    assert all(r.text.startswith("Question: ") and not r.text.endswith(MC_CUE) for r in rows)


def test_readers_refuse_malformed_rows_and_take_the_first_of_equal_choices(tmp_path):
    # synthetic rows written here (no shipped data is copied into the tests)
    hf = tmp_path / "hf.jsonl"
    row = {"question": "Q?", "choices": {"label": ["A", "B", "C"], "text": ["x", "y", "x"]}, "answerKey": "C"}
    hf.write_text(json.dumps(row) + "\n")
    (ex,) = read_csqa_hf_file(hf)
    assert ex.text == "Question: Q?" and ex.choices == ("x", "y", "x") and ex.label == 0
    hf.write_text(json.dumps({**row, "answerKey": "E"}) + "\n")
    with pytest.raises(ValueError, match=r"row 1: field 'answerKey'='E'"):
        read_csqa_hf_file(hf)

    gauntlet = tmp_path / "g.jsonl"
    good = {"query": "Context: c\nQuestion: q\nChoices:\nA. one\nB. two\nAnswer:", "choices": ["A", "B"], "gold": 1}
    gauntlet.write_text(json.dumps(good) + "\n")
    (ex,) = read_mc_file(gauntlet)
    assert ex.text.endswith("B. two") and ex.choices == ("A", "B")
    (ex,) = read_mc_file(gauntlet, texts_from_query=True)
    assert (ex.text, ex.choices, ex.label) == ("Context: c\nQuestion: q", ("one", "two"), 1)
    gauntlet.write_text(json.dumps({**good, "query": "Question: q\nAnswer:"}) + "\n")
    with pytest.raises(ValueError, match="does not list the options"):
        read_mc_file(gauntlet, texts_from_query=True)
