"""PoemFewShot with a real DSPy install: compile on SST-2 examples with the real SmolLM2 scorer, then run
the compiled program end to end against the real SmolLM2 served over loopback (chat completions)."""

import pytest

pytest.importorskip("dspy")

import dspy  # noqa: E402

from helpers.completions_server import CompletionsServer  # noqa: E402
from memrl.integrations.dspy import PoemFewShot, PoemProgram  # noqa: E402
from memrl.poem import PoemMismatchError  # noqa: E402

WORDS = ("negative", "positive")  # label values of the DSPy examples (SST-2 labels 0 / 1)


def as_dspy(examples):
    return [dspy.Example(review=ex.text, sentiment=WORDS[ex.label]).with_inputs("review") for ex in examples]


@pytest.fixture(scope="module")
def trainset(sst2):
    return as_dspy(sst2.train[:4] + sst2.train[-4:])  # 4 per label


@pytest.fixture(scope="module")
def teleprompter(scorer, encoder):
    return PoemFewShot(scorer, encoder, input_field="review", label_field="sentiment", n_examples=2, k=3)


@pytest.fixture(scope="module")
def student():
    return dspy.Predict("review -> sentiment")


@pytest.fixture(scope="module")
def compiled(teleprompter, student, trainset):
    return teleprompter.compile(student, trainset=trainset)


def test_compile_fits_poem_and_returns_a_new_program(compiled, student, trainset, sst2, scorer):
    assert isinstance(compiled, PoemProgram) and compiled.program is not student
    assert student.demos == [] and compiled.program.demos == []  # neither is given fixed demos
    assert compiled.predictor_names == ["self"]
    opt = compiled.optimizer
    assert opt.task.label_names == WORDS and opt.task.verbalizer == WORDS
    # the default POEM: 2 fixed demonstrations, the other 6 examples are fitted on, 2! orders each, under
    # the fixed and under their own kNN demonstrations = 12 + 12 LM calls; the selection chose one
    report = compiled.fit_report
    assert report.inputs == 6 and report.lm_calls == 24 == opt.lm_calls_fit
    assert report.costs["fixed"].lm_calls == report.costs["knn"].lm_calls == 12
    assert opt.config.examples == "choose" and report.source == opt.source and report.selection is not None
    calls = scorer.calls
    for query in sst2.test[:5]:
        demos = compiled.select(review=query.text)
        chosen = opt.select(query.text).examples
        # the trainset's own dspy.Example objects, in POEM's order
        assert [d.review for d in demos] == [ex.text for ex in chosen]
        assert all(any(d is t for t in trainset) for d in demos)
    assert scorer.calls == calls  # selection makes no LM call
    with pytest.raises(TypeError, match="'review'"):
        compiled.select(text="no review field")


def test_compile_checks_the_mapping_and_its_arguments(teleprompter, student, trainset, scorer, encoder):
    with pytest.raises(ValueError, match=r"trainset\[1\] has no 'sentiment' field"):
        teleprompter.to_task([trainset[0], dspy.Example(review="no label")])
    strict = PoemFewShot(scorer, encoder, input_field="review", label_field="sentiment", labels=["negative", "neutral"])
    with pytest.raises(ValueError, match="'positive' is not one of the labels"):
        strict.to_task(trainset)
    with pytest.raises(ValueError, match="no predictor of the student has 'review' as an input"):
        teleprompter.compile(dspy.Predict("question -> answer"), trainset=trainset)
    with pytest.raises(TypeError, match="teacher"):
        teleprompter.compile(student, trainset=trainset, teacher=student)
    with pytest.raises(TypeError, match="unknown PoemFewShot option"):
        PoemFewShot(scorer, encoder, input_field="review", label_field="sentiment", n_exemples=2)


class TwoStep(dspy.Module):
    """A program with two predictors, only the first of which predicts the label."""

    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict("review -> sentiment")
        self.explain = dspy.Predict("review, sentiment -> explanation")

    def forward(self, review):
        sentiment = self.classify(review=review).sentiment
        return self.explain(review=review, sentiment=sentiment)


def test_restore_from_a_saved_memory_without_refit(compiled, teleprompter, trainset, sst2, scorer, tmp_path):
    compiled.optimizer.save(tmp_path / "poem")
    calls = scorer.calls
    restored = teleprompter.restore(TwoStep(), tmp_path / "poem", trainset=trainset)
    assert scorer.calls == calls
    assert restored.predictor_names == ["classify"]  # the predictor with review -> sentiment
    for query in sst2.test[:5]:
        assert [d.review for d in restored.select(review=query.text)] == [d.review for d in compiled.select(review=query.text)]
    with pytest.raises(PoemMismatchError, match="task"):
        teleprompter.restore(TwoStep(), tmp_path / "poem", trainset=trainset[:-1])


@pytest.fixture(scope="module")
def server(tiny_model):
    with CompletionsServer(*tiny_model, model_name="smol", generate=True, max_new_tokens=48) as srv:
        yield srv


def test_compiled_program_answers_over_loopback_with_poem_ordered_demos(compiled, server, sst2):
    lm = dspy.LM("openai/smol", api_base=server.url, api_key="local", cache=False, temperature=0.0,
                 max_tokens=48, num_retries=0)
    # three queries, not all with the same order of the two demonstrations
    queries = sst2.test[:40]
    orders = [tuple(d.review for d in compiled.select(review=q.text)) for q in queries]
    other = next((i for i, o in enumerate(orders) if o != orders[0]), None)
    assert other is not None, "all 40 queries got the same POEM order"
    picked = [0, other, 2 if other == 1 else 1]
    program = compiled.deepcopy()  # a DSPy copy shares the fitted POEM optimiser
    assert program.optimizer is compiled.optimizer and program.program is not compiled.program
    program.set_lm(lm)
    for i in picked:
        query, demos = queries[i].text, program.select(review=queries[i].text)
        before = len(server.received)
        pred = program(review=query)
        assert isinstance(pred.sentiment, str) and pred.sentiment.strip()  # an answer came back
        sent = server.received[before:]
        assert sent and all(path == "/v1/chat/completions" for path, _ in sent)
        for _, body in sent:  # every request (incl. DSPy's JSON-adapter retry) holds POEM's demos in order
            turns = body["messages"][1:]  # after the system message: user/assistant per demo, then the query
            assert [m["role"] for m in turns] == ["user", "assistant"] * len(demos) + ["user"]
            for j, demo in enumerate(demos):
                assert demo.review in turns[2 * j]["content"] and demo.sentiment in turns[2 * j + 1]["content"]
            assert query in turns[-1]["content"]
        # DSPy's own record, on the LM object set on the program (not a per-call copy of it), agrees
        assert lm.history[-1]["messages"] == sent[-1][1]["messages"]
    assert len(lm.history) == len(server.received)
    assert program.program.demos == [] and program.program.lm is lm  # demos were set on per-call copies only
