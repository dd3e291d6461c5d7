import pytest

from memrl.tasks.classification import load_local_task, load_task, task_names
from memrl.tasks.fewshot import PromptTemplate
from memrl.tasks.multiple_choice import load_mc_task


@pytest.mark.parametrize(
    "name, n_train, n_test, n_labels",
    [("sst2", 32, 872, 2), ("mr", 32, 2000, 2), ("sst5", 80, 2210, 5), ("subj", 32, 2000, 2),
     ("trec", 96, 500, 6), ("agnews", 64, 7600, 4), ("rte", 32, 277, 2), ("cb", 48, 56, 3)],
)
def test_registered_tasks_load(name, n_train, n_test, n_labels):
    task = load_task(name, 21)
    assert (len(task.train), len(task.test), len(task.verbalizer)) == (n_train, n_test, n_labels)
    counts = [sum(ex.label == c for ex in task.train) for c in range(n_labels)]
    assert counts == [16] * n_labels  # 16 shots per class
    q = task.test[0]
    assert task.suffix(q).endswith(task.template.input.rsplit("}", 1)[-1])


def test_layouts_differ_where_documented():
    # LM-BFF SST-2 test is the 872-row GLUE dev set; RLPrompt's is the 1821-row test set
    assert len(load_task("sst2-rlprompt", 13).test) == 1821
    assert load_task("rte", 13).train[0].text_b  # a pair task


def test_multiple_choice_carve_out_is_disjoint_and_seeded():
    a, b = load_mc_task("piqa", 13), load_mc_task("piqa", 13)
    assert [e.text for e in a.train] == [e.text for e in b.train]
    assert not {e.text for e in a.train} & {e.text for e in a.test}
    assert a.verbalizer is None and a.length_normalise
    assert a.continuations(a.test[:2])[0] == [" " + c for c in a.test[0].choices]


def test_unknown_task_and_seed():
    with pytest.raises(ValueError, match="unknown task 'sst-9'"):
        load_task("sst-9")
    with pytest.raises(ValueError, match="seeds"):
        load_task("sst2", 7)
    assert "agnews" in task_names()


def test_prompt_override_changes_identity():
    t = load_task("sst2", 13)
    t2 = t.with_prompt(verbalizer=["bad", "good"])
    assert t2.identity() != t.identity() and t2.verbalizer == ("bad", "good")
    with pytest.raises(ValueError, match="2 labels"):
        t.with_prompt(verbalizer=["a", "b", "c"])
    t3 = t.with_prompt(PromptTemplate(input="Text: {text}\nMood:"))
    assert t3.suffix(t.test[0]).startswith("Text: ")


def test_local_files(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood stuff,pos\nawful,neg\nfine,pos\n")
    (tmp_path / "test.jsonl").write_text('{"text": "meh", "label": "neg"}\n')
    task = load_local_task(tmp_path / "train.csv", tmp_path / "test.jsonl")
    assert task.label_names == ("neg", "pos") and task.train[0].label == 1

    def refused(name: str, content: str, match: str, as_train: bool = False) -> None:
        """Loading with ``name`` (holding ``content``) as the train or test file fails with ``match``."""
        (tmp_path / name).write_text(content)
        train, test = (name, "test.jsonl") if as_train else ("train.csv", name)
        with pytest.raises(ValueError, match=match):
            load_local_task(tmp_path / train, tmp_path / test)

    refused("bad.tsv", "text\tlabel\nok\tpos\nhmm\tneutral\n", r"bad.tsv, row 2: unknown label 'neutral' in field 'label'")
    refused("nolabel.csv", "text,y\nok,1\n", r"nolabel.csv, row 1: missing field 'label'")
    refused("empty.csv", "text,label\n", "no rows", as_train=True)
    refused("empty.csv", "text,label\n", r"empty.csv: the file has no rows")  # an empty test file too
    # a short CSV row / a JSON null is a missing value, not the text "None" or a label of its own
    refused("short.csv", "text,label\ngood stuff,pos\nawful\n", r"short.csv, row 2: missing value in field 'label'",
            as_train=True)
    refused("null.jsonl", '{"text": null, "label": "neg"}\n', r"null.jsonl, row 1: missing value in field 'text'")
    # the same task name over other data is another task: a POEM memory of one refuses the other
    (tmp_path / "train2.csv").write_text("text,label\nlovely,pos\nawful,neg\nfine,pos\n")
    assert load_local_task(tmp_path / "train2.csv", tmp_path / "test.jsonl").identity() != task.identity()
