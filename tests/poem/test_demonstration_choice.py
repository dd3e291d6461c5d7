"""examples="choose": POEM fits the fixed and the per-query (kNN) demonstrations on the same inputs and
the selection chooses the source with the read setting (real SmolLM2 + MiniLM on a tiny SST-2 slice)."""

from dataclasses import replace

import numpy as np
import pytest

from memrl.poem import PoemConfig, PoemOptimizer
from memrl.poem.evaluate import evaluate_task
from memrl.poem.settings import Setting

CHOOSE = PoemConfig(n_examples=2, examples="choose", select="one_se", knn_budget=2)


@pytest.fixture(scope="module")
def tiny(sst2):
    return replace(sst2, train=sst2.train[:5] + sst2.train[-5:], dev=[])  # 10 examples, both labels


@pytest.fixture(scope="module")
def chosen(tiny, scorer, encoder):
    opt = PoemOptimizer(tiny, scorer, encoder, CHOOSE)
    return opt, opt.fit(progress=False)


def test_both_sources_are_fitted_on_the_same_inputs_and_their_costs_reported(chosen):
    opt, report = chosen
    fixed, knn = opt.matrices["fixed"], opt.matrices["knn"]
    assert fixed.keys == knn.keys and len(fixed.keys) == report.inputs == 8  # 10 minus the 2 fixed demonstrations
    assert fixed.tried.all() and knn.tried.all()  # dense: the same 2 orders on every input
    cf, ck = report.costs["fixed"], report.costs["knn"]
    assert (cf.lm_calls, cf.prompts, cf.orders_per_input) == (16, 2, 2)  # 2 shared prefixes for every input
    # a prefix per (input, order), but inputs with the same nearest demonstrations share theirs
    assert (ck.lm_calls, ck.orders_per_input) == (16, 2) and cf.prompts < ck.prompts <= 16
    assert report.lm_calls == opt.lm_calls_fit == 32 and report.trials == 32
    assert ck.forward_tokens > 0 and cf.forward_tokens > 0


def test_the_selection_chooses_a_source_and_the_optimiser_reads_it(chosen, tiny, scorer, encoder):
    opt, report = chosen
    sel = report.selection
    assert sel.candidates_scored == 540 + 360 and set(sel.source_choices) == {"fixed", "knn"}
    assert report.source == opt.source == sel.source and opt.setting == sel.setting
    assert all(0.0 <= e <= 1.0 for e in sel.source_estimates.values())
    # each source read on demand from its own matrix, with no LM call
    calls = scorer.calls
    fixed = opt.with_setting(Setting("identity", "correct", 1, "sum", 1.0), source="fixed")
    knn = opt.with_setting(Setting("rank", "correct", 1, "sum", 1.0), source="knn")
    q = tiny.test[0]
    assert set(fixed.select(q).examples) == set(opt.demos)
    vecs = encoder.encode([ex.key_text for ex in tiny.train])
    top = {tiny.train[i].text for i in np.argsort(-(vecs @ encoder.encode([q.key_text])[0]))[:2]}
    assert {e.text for e in knn.select(q).examples} == top
    assert scorer.calls == calls
    with pytest.raises(ValueError, match="identity"):
        opt.with_setting(Setting("identity", "correct", 1, "sum", 1.0), source="knn")
    # a kNN read takes new demonstrations at once; a fixed one needs a refit
    with pytest.raises(ValueError, match="without a refit"):
        fixed.add_examples([tiny.train[0]])


def test_a_choice_round_trips_through_save_and_load(chosen, tiny, scorer, encoder, tmp_path):
    import json

    opt, _ = chosen
    opt.save(tmp_path / "poem")
    meta = json.loads((tmp_path / "poem" / "poem.json").read_text())
    assert meta["version"] == 3 and meta["source"] == opt.source and meta["sources"] == ["fixed", "knn"]
    assert meta["fit_costs"]["knn"]["lm_calls"] == 16
    again = PoemOptimizer.load(tmp_path / "poem", tiny, scorer, encoder)
    assert again.source == opt.source and again.setting == opt.setting
    for source in ("fixed", "knn"):
        assert np.array_equal(again.matrices[source].scores, opt.matrices[source].scores, equal_nan=True)
    assert [s.perm for s in again.select_many(tiny.test[:4])] == [s.perm for s in opt.select_many(tiny.test[:4])]
    assert [e.text for e in again.select(tiny.test[0]).examples] == [e.text for e in opt.select(tiny.test[0]).examples]


def test_choose_needs_the_selection_that_compares_sources():
    with pytest.raises(ValueError, match="examples='choose' needs select='one_se'"):
        PoemConfig(examples="choose", select="loo")
    with pytest.raises(ValueError, match="knn_budget"):
        PoemConfig(knn_budget=0)


def test_evaluation_reads_each_source_from_the_one_fit(tiny, scorer, encoder):
    methods = ["poem", "poem_fixed", "poem_knn", "oracle", "best_fixed", "random", "kate_knn"]
    res = evaluate_task(tiny, scorer, encoder, CHOOSE, methods=methods, max_test=4, progress=False)
    rows, fit = res["methods"], res["poem_fit"]
    assert fit["source"] == rows["poem"]["source"] and set(fit["costs"]) == {"fixed", "knn"}
    assert rows["poem"]["lm_calls_fit"] == fit["lm_calls"] == 32
    # the one-source rows are the same selection restricted to a source: no fit of their own
    assert rows["poem_fixed"]["source"] == "fixed" and rows["poem_fixed"]["lm_calls_fit"] == 16
    assert rows["poem_knn"]["source"] == "knn" and rows["poem_knn"]["lm_calls_fit"] == 16
    sel = fit["selection"]
    for source in ("fixed", "knn"):
        assert rows[f"poem_{source}"]["selection_estimate"] == pytest.approx(sel["source_estimates"][source], abs=1e-12)
    assert rows["poem"]["selection_estimate"] == pytest.approx(sel["estimate"], abs=1e-12)
    # the baselines run on the fixed demonstrations
    assert rows["oracle"]["orders"] == 2 and rows["random"]["candidate_orders"] == 2
    assert rows["random"]["accuracy"] == pytest.approx(rows["oracle"]["fixed_mean"], abs=1e-12)
    assert rows["best_fixed"]["lm_calls_fit"] == 16
