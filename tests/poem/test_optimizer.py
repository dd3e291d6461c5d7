"""fit/select/save/load on a small real slice of SST-2 with the real SmolLM2 and MiniLM."""

import numpy as np
import pytest

from memrl.encoders import Encoder
from memrl.lm import HFScorer
from memrl.poem import PoemConfig, PoemExampleSelector, PoemMismatchError, PoemOptimizer
from memrl.tasks.classification import load_task

N = 3  # 3! = 6 orders per input keeps the real-LM fit to a few seconds


@pytest.fixture(scope="module")
def fitted(sst2, scorer, encoder):
    opt = PoemOptimizer(sst2, scorer, encoder, PoemConfig(n_examples=N, k=3, select="fixed", examples="fixed"))
    inputs = sst2.train[:2] + sst2.train[-2:]  # both labels
    report = opt.fit(inputs, progress=False)
    return opt, report, inputs


def test_fit_tries_every_order_and_counts_lm_calls(fitted):
    opt, report, inputs = fitted
    assert report.trials == report.lm_calls == len(inputs) * 6
    assert len(opt.memory) == len(inputs)
    for table in opt.tables.values():
        assert len(table) == 6  # every code once
        assert all(0.0 <= m <= 1.0 and c == 1 for m, c in table.values())  # gold_prob reward
    # fixed demonstrations: seeded and label-balanced, never among the fitted inputs
    assert {d.label for d in opt.demos} == {0, 1}
    assert sum(st[2] for st in opt.order_stats.values()) == report.trials


def test_select_makes_no_lm_call_and_explains_itself(fitted, sst2, scorer):
    opt, _, _ = fitted
    calls = scorer.calls
    sels = opt.select_many(sst2.test[:5])
    assert scorer.calls == calls
    for sel in sels:
        assert sorted(sel.perm) == list(range(N)) and len(sel.neighbours) == 3
        assert sel.neighbour_sims == sorted(sel.neighbour_sims, reverse=True)
        best = max(sel.scores.values())[0]
        assert sel.scores[sel.code][0] == best and not sel.fallback


def test_save_load_round_trip_and_mismatch_refusal(fitted, sst2, scorer, encoder, tmp_path, lm):
    opt, _, _ = fitted
    opt.save(tmp_path / "poem")
    again = PoemOptimizer.load(tmp_path / "poem", sst2, scorer, encoder)
    for q in sst2.test[:5]:
        assert again.select(q).perm == opt.select(q).perm
    assert again.best_fixed_order() == opt.best_fixed_order()
    with pytest.raises(PoemMismatchError, match="task"):
        PoemOptimizer.load(tmp_path / "poem", load_task("mr", 13), scorer, encoder)
    other_lm = HFScorer(*lm, identity="some/other-lm")
    with pytest.raises(PoemMismatchError, match="lm"):
        PoemOptimizer.load(tmp_path / "poem", sst2, other_lm, encoder)
    other_enc = Encoder("my-other-encoder", fn=encoder.encode)
    with pytest.raises(PoemMismatchError, match="encoder"):
        PoemOptimizer.load(tmp_path / "poem", sst2, scorer, other_enc)
    with pytest.raises(FileNotFoundError, match="poem.json"):
        PoemOptimizer.load(tmp_path / "nothing", sst2, scorer, encoder)


def test_drop_in_selector_builds_prompt(fitted, sst2):
    opt, _, _ = fitted
    selector = PoemExampleSelector(opt)
    demos = selector(sst2.test[0])
    prompt = selector.prompt(sst2.test[0])
    assert prompt.endswith(sst2.suffix(sst2.test[0]))
    assert prompt.startswith(sst2.prefix(demos)) and len(demos) == N


def test_knn_examples_and_sampled_orders(sst2, scorer, encoder):
    from memrl.poem.demonstrations import knn_orders

    # n = 4 with a kNN budget of 3: KATE's order and 2 sampled ones, the same on every input
    opt = PoemOptimizer(sst2, scorer, encoder, PoemConfig(n_examples=4, knn_budget=3, examples="knn", k=2))
    inputs = sst2.train[:2]
    report = opt.fit(inputs, progress=False)
    orders = knn_orders(4, 3, 1)
    assert (3, 2, 1, 0) in orders and opt.matrix.order_tuples == orders and opt.matrix.tried.all()  # dense
    assert report.lm_calls == 6 and all(len(t) == 3 for t in opt.tables.values())
    cost = report.costs["knn"]
    assert (cost.source, cost.lm_calls, cost.trials, cost.orders_per_input, cost.prompts) == ("knn", 6, 6, 3, 6)
    assert cost.forward_tokens > 0 and cost.ms_per_call == pytest.approx(1000 * cost.wall_s / 6)
    # the plan (no LM call) lists exactly the trials the fit scored, one prompt per (input, order),
    # each input's orders in sorted order (shared starts are scored one after another)
    plan = opt.fit_plan(inputs)
    assert plan.trials == report.trials and len(plan.prompts) == 6 and plan.source == "knn"
    assert [perm for jobs in plan.prompts.values() for _, perm in jobs] == orders * 2
    scored = {(i, tuple(perm)) for i, perm, _, _ in report.record.trials}
    assert {(i, tuple(perm)) for jobs in plan.prompts.values() for i, perm in jobs} == scored
    for text, jobs in plan.prompts.items():
        cands = plan.candidates[jobs[0][0]][0]
        assert text == sst2.prefix([cands[p] for p in jobs[0][1]])
    sel = opt.select(sst2.test[0])
    assert len(sel.examples) == 4 and len({e.text for e in sel.examples}) == 4
    # the selected demonstrations are the 4 training examples most similar to the query
    vecs = encoder.encode([e.key_text for e in sst2.train])
    q = encoder.encode([sst2.test[0].key_text])[0]
    top = {sst2.train[i].text for i in np.argsort(-(vecs @ q))[:4]}
    assert {e.text for e in sel.examples} == top


def test_knn_with_duplicate_training_texts(sst2, scorer, encoder):
    from dataclasses import replace

    # the input's text appears twice in the pool: both copies are skipped, and n others still drawn
    pool = sst2.train[:5] + [sst2.train[0]]
    task = replace(sst2, train=pool)
    opt = PoemOptimizer(task, scorer, encoder, PoemConfig(n_examples=3, budget=2, examples="knn", k=1))
    opt.fit([sst2.train[0]], progress=False)
    cands, sims = opt.candidates(encoder.encode([sst2.train[0].key_text])[0], exclude_text=sst2.train[0].key_text)
    assert len(cands) == 3 == len(sims) and sst2.train[0].text not in {c.text for c in cands}
    assert all(len(code) == 3 for table in opt.tables.values() for code in table)
    assert len(opt.select(sst2.test[0]).examples) == 3
    same = replace(sst2, train=[sst2.train[0]] * 3 + sst2.train[1:3])
    with pytest.raises(ValueError, match="only 2 pool examples differ from the input"):
        PoemOptimizer(same, scorer, encoder, PoemConfig(n_examples=3, budget=2, examples="knn")).fit(
            [sst2.train[0]], progress=False)


def test_guarded_selection_on_a_real_fit_is_reported_and_saved(sst2, scorer, encoder, tmp_path):
    opt = PoemOptimizer(sst2, scorer, encoder, PoemConfig(n_examples=3, select="loo_guarded", examples="fixed"))
    report = opt.fit(sst2.train[:4] + sst2.train[-4:], progress=False)
    g = opt.loo.guard
    assert set(g) >= {"nested_accuracy", "global_accuracy", "kept", "best_setting"}
    glob = {"encoding": "identity", "reward": "correct", "shrink": 1.0}
    # the guard's rule: the best leave-one-out setting survives only if choosing it holds out
    if g["kept"]:
        assert report.setting.to_dict() == g["best_setting"] and g["nested_accuracy"] > g["global_accuracy"]
    else:
        assert {k: report.setting.to_dict()[k] for k in glob} == glob
        assert opt.loo.accuracy == g["global_accuracy"] >= g["nested_accuracy"]
    # asked again, plain or guarded: the same table, the same guard
    plain = opt.leave_one_out()
    assert plain.guard is None and plain.table == opt.loo.table and plain.setting.to_dict() == g["best_setting"]
    assert opt.leave_one_out(guard=True).guard == g
    opt.save(tmp_path / "poem")
    assert PoemOptimizer.load(tmp_path / "poem", sst2, scorer, encoder).loo_summary["guard"] == g


def test_bad_inputs(sst2, scorer, encoder):
    from dataclasses import replace

    with pytest.raises(ValueError, match="empty training split"):
        PoemOptimizer(replace(sst2, train=[]), scorer, encoder).fit(progress=False)
    with pytest.raises(ValueError, match="n_examples=40 is larger than the pool of 32"):
        PoemOptimizer(sst2, scorer, encoder, PoemConfig(n_examples=40)).fit(progress=False)
    with pytest.raises(ValueError, match="reward"):
        PoemConfig(reward="accuracy")
    with pytest.raises(ValueError, match="unknown PoemConfig option\\(s\\) \\['kk'\\]"):
        PoemConfig.from_dict({"kk": 3})
    with pytest.raises(RuntimeError, match="not fitted"):
        PoemOptimizer(sst2, scorer, encoder).select("hello")


def test_multiple_choice_task_fits_with_per_query_choices(scorer, encoder):
    # choices differ per query and span several tokens: length-normalised scoring path
    task = load_task("piqa", 13)
    opt = PoemOptimizer(task, scorer, encoder, PoemConfig(n_examples=2, k=2, examples="fixed"))
    report = opt.fit(task.train[2:4], progress=False)
    assert report.lm_calls == 4 and 0.0 <= report.mean_reward <= 1.0
    sel = opt.select(task.test[0])
    prompt = task.prefix(sel.examples)
    assert all(d.choices[d.label] in prompt for d in sel.examples)  # demos show their gold answer


def test_identity_encoding_with_all_neighbours_picks_the_best_total_reward_order(sst2, scorer, encoder):
    inputs = sst2.train[:2] + sst2.train[-2:]
    opt = PoemOptimizer(sst2, scorer, encoder, PoemConfig(n_examples=N, k=len(inputs), encoding="identity", select="fixed",
                                                          examples="fixed"))
    opt.fit(inputs, progress=False)
    # identity codes are the concrete orders themselves
    assert all(set(t) == set(opt.order_stats) for t in opt.tables.values())
    # reading every neighbour with read='sum' is the order with the highest reward summed over inputs
    best = max(opt.order_stats, key=lambda p: (opt.order_stats[p][1], tuple(-x for x in p)))
    perms = {sel.perm for sel in opt.select_many(sst2.test[:6])}
    assert perms == {best}
    with pytest.raises(ValueError, match="encoding='identity' needs examples='fixed'"):
        PoemConfig(encoding="identity", examples="knn")


def test_with_encoding_rebuilds_the_same_memory_as_a_fit_under_that_encoding(fitted, sst2, scorer, encoder, tmp_path):
    opt, report, inputs = fitted  # rank-encoded fit
    calls = scorer.calls
    ident = opt.with_encoding("identity", report.record)
    assert scorer.calls == calls  # re-encoding scores nothing
    assert opt.config.encoding == "rank" and ident.config.encoding == "identity"
    direct = PoemOptimizer(sst2, scorer, encoder, PoemConfig(n_examples=N, k=3, encoding="identity", select="fixed",
                                                             examples="fixed"))
    direct.fit(inputs, progress=False)
    assert ident.tables.keys() == direct.tables.keys()
    for key in direct.tables:
        assert ident.tables[key].keys() == direct.tables[key].keys()
        for code, (mean, count) in direct.tables[key].items():
            assert ident.tables[key][code][0] == pytest.approx(mean, abs=1e-5) and ident.tables[key][code][1] == count
    queries = sst2.test[:4]
    assert [s.perm for s in ident.select_many(queries)] == [s.perm for s in direct.select_many(queries)]
    with pytest.raises(ValueError, match="encoding"):
        opt.with_encoding("onehot", report.record)
    loaded = PoemOptimizer.load(opt.save(tmp_path / "poem"), sst2, scorer, encoder)
    (tmp_path / "poem" / "poem.json").write_text('{"format": "memrl-poem", "config"')  # damaged save
    with pytest.raises(ValueError, match=r"poem.json: not valid JSON"):
        PoemOptimizer.load(tmp_path / "poem", sst2, scorer, encoder)
    # a saved optimiser keeps its trial matrix: re-encoding after load needs no fit either
    assert [s.perm for s in loaded.with_encoding("identity").select_many(queries)] == \
        [s.perm for s in direct.select_many(queries)]
