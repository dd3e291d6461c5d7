"""PoemLangChainSelector inside a real langchain-core FewShotPromptTemplate (real SmolLM2, MiniLM, SST-2)."""

import pytest

pytest.importorskip("langchain_core")

from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate  # noqa: E402

from memrl.integrations.langchain import PoemLangChainSelector  # noqa: E402
from memrl.poem import PoemConfig, PoemExampleSelector, PoemOptimizer, Setting  # noqa: E402

N = 3  # 3! = 6 orders per training input: a few seconds of real-LM fit


@pytest.fixture(scope="module")
def fitted(sst2, scorer, encoder):
    # the default POEM (fixed and kNN demonstrations, the one-SE choice), unchanged but for the size
    opt = PoemOptimizer(sst2, scorer, encoder, PoemConfig(n_examples=N, k=3))
    opt.fit(sst2.train[:2] + sst2.train[-2:], progress=False)  # both labels, 4 x 6 orders x 2 sources = 48 LM calls
    return opt


def two_queries_with_different_orders(opt, queries):
    """Two queries whose POEM demonstrations (in order) differ."""
    sels = opt.select_many(queries)
    first = sels[0]
    for q, sel in zip(queries[1:], sels[1:]):
        if sel.examples != first.examples:
            return [(queries[0], first), (q, sel)]
    raise AssertionError(f"all {len(queries)} queries got the demonstrations {first.examples}")


def sst2_prompt(selector):
    return FewShotPromptTemplate(
        example_selector=selector,
        example_prompt=PromptTemplate.from_template("Review: {input}\nSentiment: {output}"),
        suffix="Review: {input}\nSentiment:",
        input_variables=["input"],
    )


def test_few_shot_prompt_holds_the_demonstrations_in_poem_order(fitted, sst2, scorer):
    prompt = sst2_prompt(PoemLangChainSelector(fitted))
    calls = scorer.calls
    for query, sel in two_queries_with_different_orders(fitted, sst2.test[:40]):
        text = prompt.format(input=query.text)
        # the demonstrations appear once each, in the order POEM selected for this query ...
        positions = [text.index(f"Review: {d.text}\nSentiment: {sst2.verbalizer[d.label]}\n\n") for d in sel.examples]
        assert positions == sorted(positions) and len(set(positions)) == N
        assert all(text.count(d.text) == 1 for d in sel.examples)
        # ... and with matching templates the LangChain prompt is exactly memrl's own POEM prompt
        assert text == PoemExampleSelector(fitted).prompt(query)
        assert text.endswith(f"Review: {query.text}\nSentiment:")
    assert scorer.calls == calls  # selecting and formatting made no LM call


def test_select_examples_returns_template_dicts(fitted, sst2):
    selector = PoemLangChainSelector(fitted, input_key="review", output_key="label", labels=["negative", "positive"])
    query = sst2.test[0]
    dicts = selector.select_examples({"review": query.text, "other": "ignored"})
    sel = fitted.select(query)
    assert dicts == [{"review": d.text, "label": ["negative", "positive"][d.label]} for d in sel.examples]
    with pytest.raises(KeyError, match="'review'.*input_key"):
        selector.select_examples({"input": query.text})


def test_the_default_selector_reads_the_chosen_demonstrations(fitted, sst2, scorer):
    assert fitted.config.examples == "choose" and fitted.config.select == "one_se"
    assert fitted.source in ("fixed", "knn") and set(fitted.matrices) == {"fixed", "knn"}
    selector = PoemLangChainSelector(fitted)
    calls = scorer.calls
    for query in sst2.test[:3]:
        dicts = selector.select_examples({"input": query.text})
        assert [d["input"] for d in dicts] == [ex.text for ex in fitted.select(query).examples] and len(dicts) == N
    assert scorer.calls == calls


def test_add_example_needs_a_refit_with_fixed_demonstrations(fitted):
    fixed = fitted.with_setting(Setting("identity", "correct", 1, "sum", 1.0), source="fixed")
    selector = PoemLangChainSelector(fixed)
    pool = list(fixed.demos)
    with pytest.raises(ValueError, match="cannot take new demonstrations without a refit"):
        selector.add_example({"input": "a brand-new review", "output": "great"})
    assert fixed.demos == pool


def test_add_example_grows_the_knn_pool_without_refit(sst2, scorer, encoder):
    opt = PoemOptimizer(sst2, scorer, encoder, PoemConfig(n_examples=2, k=2, examples="knn"))
    opt.fit(sst2.train[:2] + sst2.train[-2:], progress=False)  # 2 orders x 4 inputs = 8 LM calls
    selector = PoemLangChainSelector(opt)
    query = sst2.test[3].text
    new_demo = {"input": query + " Truly.", "output": "terrible"}  # nearly the query itself: most similar
    assert new_demo["input"] not in [d["input"] for d in selector.select_examples({"input": query})]
    calls = scorer.calls
    selector.add_example(new_demo)
    assert scorer.calls == calls and len(opt.pool) == len(sst2.train) + 1
    demos = selector.select_examples({"input": query})
    assert new_demo in demos and len(demos) == 2
    with pytest.raises(ValueError, match="not one of the task's label strings"):
        selector.add_example({"input": "x", "output": "positive"})
