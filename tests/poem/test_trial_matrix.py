"""The fit's full trial matrix: kept, saved with the optimiser, and enough to recompute every
reward and to choose the setting by leave-one-out (real SmolLM2 + MiniLM on a tiny SST-2 slice)."""

import json

import numpy as np
import pytest

from memrl.poem import PoemConfig, PoemOptimizer
from memrl.poem.matrix import TrialMatrix
from memrl.poem.rewards import compute_reward
from memrl.poem.settings import Setting
from memrl.tasks.classification import load_task

N = 3


@pytest.fixture(scope="module")
def loo_fit(sst2, scorer, encoder):
    # the second study's default: leave-one-out's best setting over the fixed demonstrations
    opt = PoemOptimizer(sst2, scorer, encoder, PoemConfig(n_examples=N, select="loo", examples="fixed"))
    inputs = sst2.train[:3] + sst2.train[-3:]
    report = opt.fit(inputs, progress=False)
    return opt, report, inputs


def test_matrix_holds_every_trial_and_recomputes_every_reward(loo_fit):
    opt, report, inputs = loo_fit
    mx = opt.matrix
    assert mx.scores.shape == (len(inputs), 6, 2) and mx.tried.all()  # 3! orders x 2 labels, dense
    assert [tuple(o) for o in mx.orders] == sorted(tuple(o) for o in mx.orders)
    assert mx.keys == [ex.key_text for ex in inputs] and list(mx.gold) == [ex.label for ex in inputs]
    index = {tuple(int(x) for x in o): p for p, o in enumerate(mx.orders)}
    gold_prob, correct = mx.rewards("gold_prob"), mx.rewards("correct")
    for i, perm, reward, corr in report.record.trials:  # the fit's own rewards (config.reward = gold_prob)
        assert gold_prob[i, index[perm]] == pytest.approx(reward, abs=1e-12)
        assert correct[i, index[perm]] == corr
    margin = mx.rewards("margin")
    assert np.array_equal(margin > 0, correct > 0.5)  # margin positive iff correct
    assert margin == pytest.approx(compute_reward("margin", mx.scores.reshape(-1, 2),
                                                  np.repeat(mx.gold, 6)).reshape(-1, 6))


def test_loo_default_reports_its_choice_and_selects_with_it(loo_fit, sst2, scorer):
    opt, report, inputs = loo_fit
    assert report.loo is not None and report.setting == opt.setting == report.loo.setting
    assert report.loo.n_inputs == len(inputs) and 0.0 <= report.loo.accuracy <= 1.0
    assert opt.loo_summary["accuracy"] == report.loo.accuracy
    # the chosen setting is the best of the table it reports
    assert report.loo.table[0]["setting"] == opt.setting.to_dict()
    assert all(r["accuracy"] <= report.loo.accuracy for r in report.loo.table)
    calls = scorer.calls
    sels = opt.select_many(sst2.test[:4])
    assert scorer.calls == calls and all(sorted(s.perm) == [0, 1, 2] for s in sels)
    # any other setting is a re-read of the same matrix: no LM call
    paper = opt.with_setting(Setting("rank", "gold_prob", 8, "sum", 0.0))
    assert scorer.calls == calls and paper.config.select == "fixed" and paper.setting.encoding == "rank"
    glob = opt.with_setting(Setting("identity", "gold_prob", 1, "sum", 1.0))  # shrink 1: one global order
    stats = glob.order_stats
    best = max(stats, key=lambda p: stats[p][1] / stats[p][2])  # the highest mean gold probability
    assert {s.perm for s in glob.select_many(sst2.test[:6])} == {best}


def test_matrix_round_trip_through_save_and_load(loo_fit, sst2, scorer, encoder, tmp_path):
    opt, report, _ = loo_fit
    opt.save(tmp_path / "poem")
    meta = json.loads((tmp_path / "poem" / "poem.json").read_text())
    assert meta["version"] == 3 and meta["setting"] == opt.setting.to_dict() and meta["has_matrix"]
    assert meta["sources"] == ["fixed"] and (tmp_path / "poem" / "trials-fixed.npz").is_file()
    again = PoemOptimizer.load(tmp_path / "poem", sst2, scorer, encoder)
    a, b = opt.matrix, again.matrix
    for name in ("orders", "scores", "gold", "sims", "labels", "vecs"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
        assert getattr(a, name).dtype == getattr(b, name).dtype
    assert a.keys == b.keys
    for kind in ("correct", "gold_prob", "margin"):
        assert np.array_equal(a.rewards(kind), b.rewards(kind), equal_nan=True)
    gp = b.rewards("gold_prob")
    index = {tuple(int(x) for x in o): p for p, o in enumerate(b.orders)}
    assert [gp[i, index[perm]] for i, perm, _, _ in report.record.trials] == \
        pytest.approx([r for _, _, r, _ in report.record.trials], abs=1e-12)
    assert again.setting == opt.setting and again.loo_summary["accuracy"] == opt.loo_summary["accuracy"]
    for q in sst2.test[:5]:
        assert again.select(q).perm == opt.select(q).perm
    with pytest.raises(Exception, match="task"):
        PoemOptimizer.load(tmp_path / "poem", load_task("mr", 13), scorer, encoder)
    # a standalone matrix file round-trips too
    a.save(tmp_path / "m.npz")
    assert np.array_equal(TrialMatrix.load(tmp_path / "m.npz").scores, a.scores, equal_nan=True)
    # as named arrays with hashed keys (the study's replay files): no input text, same numbers
    named = a.to_arrays("fit_", hash_keys=True)
    assert "fit_keys" not in named and not any(k in named["fit_key_hash"] for k in a.keys)
    b = TrialMatrix.from_arrays(named, "fit_")
    for f in TrialMatrix.ARRAYS:
        assert np.array_equal(getattr(b, f), getattr(a, f), equal_nan=True), f
    assert len(set(b.keys)) == len(set(a.keys))


def test_one_se_selection_reports_an_honest_estimate_and_round_trips(loo_fit, sst2, scorer, encoder, tmp_path):
    plain, _, inputs = loo_fit
    opt = PoemOptimizer(sst2, scorer, encoder, PoemConfig(n_examples=N, select="one_se", examples="fixed"))
    report = opt.fit(inputs, progress=False)
    assert np.array_equal(opt.matrix.scores, plain.matrix.scores, equal_nan=True)  # the same trials
    sel = report.selection
    assert sel is not None and report.loo is None and opt.setting == sel.setting == report.setting
    assert sel.rule == "one_se" and sel.source == "fixed" and sel.n_inputs == len(inputs)
    # the in-sample score of the best of the grid is leave-one-out's own pick
    assert sel.loo_best == pytest.approx(plain.loo.accuracy, abs=1e-12) and sel.loo_accuracy <= sel.loo_best
    assert 0.0 <= sel.estimate <= 1.0 and len(sel.fold_choices) == sel.folds * sel.repeats == 15
    calls = scorer.calls
    assert all(sorted(s.perm) == [0, 1, 2] for s in opt.select_many(sst2.test[:4])) and scorer.calls == calls
    opt.save(tmp_path / "poem")
    again = PoemOptimizer.load(tmp_path / "poem", sst2, scorer, encoder)
    assert again.setting == opt.setting and again.selection_summary == sel.summary()
    assert [again.select(q).perm for q in sst2.test[:4]] == [opt.select(q).perm for q in sst2.test[:4]]


def test_a_format_v1_save_still_loads_and_says_what_it_cannot_do(sst2, scorer, encoder, tmp_path):
    opt = PoemOptimizer(sst2, scorer, encoder, PoemConfig(n_examples=2, k=2, select="fixed", examples="fixed",
                                                          use_dev=False))
    opt.fit(sst2.train[:2] + sst2.train[-2:], progress=False)
    opt.save(tmp_path / "v1")
    # rewrite as the v1 writer did: no matrix, no setting, a config without the new fields
    meta = json.loads((tmp_path / "v1" / "poem.json").read_text())
    for key in ("setting", "loo", "has_matrix", "n_examples"):
        meta.pop(key)
    for key in ("select", "shrink", "use_dev"):
        meta["config"].pop(key)
    meta["version"] = 1
    (tmp_path / "v1" / "poem.json").write_text(json.dumps(meta))
    (tmp_path / "v1" / "trials-fixed.npz").unlink()
    old = PoemOptimizer.load(tmp_path / "v1", sst2, scorer, encoder)
    assert old.matrix is None and old.config.select == "fixed" and old.config.use_dev is False
    assert old.setting == opt.setting
    assert [old.select(q).perm for q in sst2.test[:4]] == [opt.select(q).perm for q in sst2.test[:4]]
    with pytest.raises(RuntimeError, match="format v1"):
        old.with_encoding("identity")
    meta["version"] = 0
    (tmp_path / "v1" / "poem.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="expected 'memrl.poem' v1/v2/v3"):
        PoemOptimizer.load(tmp_path / "v1", sst2, scorer, encoder)


def test_a_format_v2_save_still_loads_with_its_one_matrix(loo_fit, sst2, scorer, encoder, tmp_path):
    opt, _, _ = loo_fit
    opt.save(tmp_path / "v2")
    # rewrite as the v2 writer did: trials.npz, no source / sources / costs, no knn_budget option
    meta = json.loads((tmp_path / "v2" / "poem.json").read_text())
    for key in ("source", "sources", "fit_costs", "selection"):
        meta.pop(key)
    meta["config"].pop("knn_budget")
    meta["version"] = 2
    (tmp_path / "v2" / "poem.json").write_text(json.dumps(meta))
    (tmp_path / "v2" / "trials-fixed.npz").rename(tmp_path / "v2" / "trials.npz")
    old = PoemOptimizer.load(tmp_path / "v2", sst2, scorer, encoder)
    assert old.source == "fixed" and set(old.matrices) == {"fixed"} and old.setting == opt.setting
    assert np.array_equal(old.matrix.scores, opt.matrix.scores, equal_nan=True)
    assert [old.select(q).perm for q in sst2.test[:4]] == [opt.select(q).perm for q in sst2.test[:4]]


def test_fit_inputs_include_the_dev_split_and_demos_cover_every_class(sst2, scorer, encoder):
    opt = PoemOptimizer(sst2, scorer, encoder, PoemConfig())
    opt.setup_examples()
    assert opt.n == 4  # auto: max(4, 2 classes)
    inputs = opt.default_inputs()
    demo_texts = {d.key_text for d in opt.demos}
    assert len(inputs) == len(sst2.train) - 4 + len(sst2.dev)
    assert not demo_texts & {ex.key_text for ex in inputs}
    assert {ex.key_text for ex in sst2.dev} <= {ex.key_text for ex in inputs}
    no_dev = PoemOptimizer(sst2, scorer, encoder, PoemConfig(use_dev=False))
    no_dev.setup_examples()
    assert len(no_dev.default_inputs()) == len(sst2.train) - 4
    trec = load_task("trec", 13)
    for n_examples, n in (("classes", 6), ("auto", 6), (4, 4)):
        t = PoemOptimizer(trec, scorer, encoder, PoemConfig(n_examples=n_examples))
        t.setup_examples()
        assert t.n == len(t.demos) == n
        assert len({d.label for d in t.demos}) == min(n, 6)  # every class once n >= classes
    with pytest.raises(ValueError, match="n_examples must be a positive integer or one of"):
        PoemConfig(n_examples="many")
    with pytest.raises(ValueError, match="shrink"):
        PoemConfig(shrink=1.5)


def test_sampled_orders_are_shared_by_every_input_with_fixed_demonstrations(sst2, scorer, encoder):
    from dataclasses import replace

    task = replace(sst2, dev=[])
    opt = PoemOptimizer(task, scorer, encoder, PoemConfig(n_examples=4, budget=3, k="all", select="loo",
                                                          examples="fixed"))
    report = opt.fit(sst2.train[:2] + sst2.train[-1:], progress=False)
    assert opt.matrix.scores.shape[:2] == (3, 3) and opt.matrix.tried.all()  # dense: the same 3 orders
    assert report.lm_calls == 9
    # identity codes always name a tried order; rank/label codes may realise an untried one
    assert all(r["coverage"] == pytest.approx(1.0, abs=1e-12) for r in report.loo.table if r["setting"]["encoding"] == "identity")
    assert min(r["coverage"] for r in report.loo.table) < 1.0


def test_shipped_presets_build_and_paper_is_the_papers_fixed_setting():
    from memrl.options import preset_names, preset_path, read_yaml_mapping
    from memrl.poem.cli import _config, add_poem_subparser

    configs = {name: PoemConfig.from_dict(read_yaml_mapping(preset_path(name, "poem"), "poem"))
               for name in preset_names("poem")}
    assert {"default", "paper", "knn-mean"} <= set(configs)
    assert configs["default"] == PoemConfig()
    # the default: the one-SE choice of demonstration source and read setting, with its honest estimate
    assert (PoemConfig().select, PoemConfig().examples, PoemConfig().knn_budget) == ("one_se", "choose", 8)
    paper = configs["paper"]
    assert (paper.select, paper.encoding, paper.read, paper.k, paper.shrink, paper.n_examples, paper.use_dev,
            paper.examples) == ("fixed", "rank", "sum", 8, 0.0, 4, False, "fixed")
    import argparse

    parser = argparse.ArgumentParser()
    add_poem_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["poem", "fit", "--task", "sst2", "--out", "x", "--preset", "paper", "--k", "all"])
    cfg = _config(args)
    assert cfg.select == "fixed" and cfg.k == "all" and cfg.encoding == "rank"
