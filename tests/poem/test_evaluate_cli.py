"""evaluate_task and the `memrl poem` CLI end to end on tiny real slices."""

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest

from memrl.poem import PoemConfig
from memrl.poem.cli import add_poem_subparser, main
from memrl.poem.evaluate import METHODS, evaluate_task, subsample
from memrl.poem.replay import Replay
from memrl.poem.report import aggregate, markdown_table
from memrl.poem.scorebook import oracle_and_spread
from memrl.poem.settings import Setting


def test_evaluate_task_all_methods(sst2, scorer, encoder, tmp_path):
    task = replace(sst2, train=sst2.train[:4] + sst2.train[-4:], dev=[])  # 6 fit inputs x 2 orders
    arrays: dict = {}
    res = evaluate_task(task, scorer, encoder, PoemConfig(n_examples=2, k=3, select="fixed", examples="fixed"),
                        max_test=6,
                        min_probes=4, progress=False, arrays=arrays)
    # every row but poem_fixed (the choice restricted to one source: examples="choose" only)
    assert set(res["methods"]) == set(METHODS) - {"poem_fixed"} and res["n_test"] == 6
    # the test items by id (so seeds pool by item), not by text
    assert res["items"] == [q.item_id for q in subsample(task.test, 6)]
    assert not any(q.text in json.dumps(res) for q in subsample(task.test, 6))
    poem = res["methods"]["poem"]
    assert poem["lm_calls_fit"] == res["poem_fit"]["lm_calls"] == 12
    assert poem["lm_calls_select"] == 0 and res["select_ms_per_query"] < 50
    # the random order as its exact expectation over the 2 candidate orders (no draw, no predictions)
    rnd = res["methods"]["random"]
    assert rnd["lm_calls_eval"] == 12 and rnd["candidate_orders"] == 2 and "predictions" not in rnd
    assert res["methods"]["globale"]["lm_calls_select"] == 2 * res["methods"]["globale"]["probes"]
    for name, r in res["methods"].items():
        counts = 6 * (2 if name == "random" else 1)  # the random row: a mean over 2 orders
        assert 0.0 <= r["accuracy"] <= 1.0 and r["accuracy"] * counts == pytest.approx(round(r["accuracy"] * counts))
    # evaluation as a matrix: every query under both orders of the 2 demonstrations
    orc, best = res["methods"]["oracle"], res["methods"]["best_fixed"]
    assert orc["orders"] == 2 and orc["lm_calls_eval"] == 12
    assert orc["fixed_min"] <= best["accuracy"] <= orc["fixed_max"] <= orc["accuracy"]
    assert sorted(orc["per_order_accuracy"].values()) == [orc["fixed_min"], orc["fixed_max"]]
    # rows derived from the oracle's matrix: look-ups, no new LM call
    for name in ("best_fixed", "random", "poem_identity", "poem_paper", "poem_guarded"):
        assert res["methods"][name]["lm_calls_made"] == 0, name
    guard = res["methods"]["poem_guarded"]["guard"]
    assert guard["kept"] == (guard["nested_accuracy"] > guard["global_accuracy"])
    assert orc["lm_calls_made"] <= 12 and orc["fixed_mean"] == pytest.approx(np.mean(list(orc["per_order_accuracy"].values())))
    assert rnd["accuracy"] == pytest.approx(orc["fixed_mean"], abs=1e-12)  # mean over orders of their accuracy
    # GlobalE/LocalE: probes sampled under every candidate order, the count and ties recorded
    ge = res["methods"]["globale"]
    # (2 samples per order, then topped up while fewer than 4 distinct texts), every probe distinct
    assert ge["candidate_orders"] == 2 and 4 <= ge["probes"] <= ge["probes_drawn"] and ge["min_probes"] == 4
    assert ge["probes_drawn"] % 2 == 0 and ge["probe_source"].startswith("sampled")
    assert 1 <= ge["ties"] <= 2 and ge["lm_calls_made"] == ge["lm_calls_select"]
    # the paper's read rule on the same fit; POEM on per-query kNN demonstrations with its own fit
    paper = res["methods"]["poem_paper"]
    assert paper["setting"] == PoemConfig.from_preset("paper").read_setting().to_dict()
    assert paper["lm_calls_fit"] == 12
    knn = res["methods"]["poem_knn"]
    assert knn["lm_calls_fit"] == 8 * 2 and knn["setting"]["encoding"] in ("rank", "label")
    gold = [q.label for q in subsample(task.test, 6)]
    assert res["methods"]["kate_knn"]["lm_calls_eval"] == 6
    for name in ("poem", "best_fixed", "kate", "zero_shot"):  # per-query predictions, same items
        pred = res["methods"][name]["predictions"]
        assert len(pred) == 6 and np.mean(np.array(pred) == gold) == pytest.approx(res["methods"][name]["accuracy"])
    # the saved arrays replay the fixed-order rows with no LM call, and hold no input text
    assert arrays["fit_scores"].shape == (6, 2, 2) and arrays["test_scores"].shape == (6, 2, 2)
    assert arrays["test_vecs"].shape == (6, encoder.dim) and list(arrays["test_gold"]) == gold
    assert arrays["demo_vecs"].shape == (2, encoder.dim) and len(arrays["demo_labels"]) == 2
    correct = arrays["test_scores"].argmax(axis=2) == np.array(gold)[:, None]
    assert rnd["expected_correct"] == pytest.approx(correct.mean(axis=1).tolist(), abs=1e-12)  # per item
    for perm, acc in zip(arrays["test_orders"], correct.mean(axis=0)):
        assert orc["per_order_accuracy"][",".join(map(str, perm))] == pytest.approx(acc)
    col = [tuple(o) for o in arrays["test_orders"]].index(tuple(best["order"]))
    assert list(arrays["test_scores"][:, col].argmax(axis=1)) == best["predictions"]
    assert all(len(h) == 16 for h in arrays["fit_key_hash"]) and not set(arrays["fit_key_hash"]) & {
        ex.key_text for ex in task.train}
    # ... and POEM's read rules: each row's test predictions, replayed from the numbers alone
    replay = Replay.from_arrays(arrays)
    for name in ("poem", "poem_paper", "poem_guarded"):
        setting = Setting(**res["methods"][name]["setting"])
        assert list(replay.predictions(setting)) == res["methods"][name]["predictions"], name
    assert replay.leave_one_out(guard=True).guard == guard
    np.savez(tmp_path / "pair.npz", **arrays)
    assert Replay.load(tmp_path / "pair.npz").accuracy(setting) == pytest.approx(res["methods"][name]["accuracy"])
    with pytest.raises(ValueError, match="missing \\['test_scores'"):
        Replay.from_arrays({k: v for k, v in arrays.items() if k != "test_scores"}, source="x.npz")
    table = aggregate([res, {**res, "seed": 21}])
    assert table["sst2"]["poem"]["seeds"] == 2 and table["sst2"]["poem"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert "| sst2 |" in markdown_table(table)
    with pytest.raises(ValueError, match="unknown methods"):
        evaluate_task(task, scorer, encoder, methods=["tempera"])


@pytest.fixture()
def local_files(tmp_path):
    rows = [("a wonderful, moving film", "pos"), ("dull and far too long", "neg"), ("I loved the cast", "pos"),
            ("a waste of two hours", "neg"), ("sharp, funny and warm", "pos"), ("the plot makes no sense", "neg")]
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in
                            [("great fun", "pos"), ("terrible acting", "neg"), ("boring", "neg")]))
    return train, test


def test_cli_fit_then_eval(local_files, tmp_path, capsys):
    train, test = local_files
    common = ["--task", "local", "--train-file", str(train), "--test-file", str(test), "--n-examples", "2",
              "--no-progress"]
    # the default: fixed and kNN demonstrations both fitted on the 4 inputs, 2 orders each
    assert main(["poem", "fit", *common, "--seed", "13", "--out", str(tmp_path / "fit")]) == 0
    printed = capsys.readouterr().out
    assert "4 inputs, 16 trials, 16 LM calls" in printed and "the one-SE rule chose source=" in printed
    assert "fixed demonstrations: 2 orders per input, 8 LM calls" in printed
    assert "knn demonstrations: 2 orders per input, 8 LM calls" in printed
    out = tmp_path / "eval"
    # no --n-examples here: the loaded optimiser's settings (n = 2) must drive every method
    code = main(["poem", "eval", "--tasks", "local", "--train-file", str(train), "--test-file", str(test),
                 "--no-progress", "--methods", "poem,poem_fixed,poem_knn,kate,random,zero_shot,best_fixed",
                 "--load", str(tmp_path / "fit"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "poem" in printed and "kate" in printed and "LM calls fit" in printed
    data = json.loads((out / "results.json").read_text())
    rows = data["runs"][0]["methods"]
    assert rows["poem"]["lm_calls_fit"] == 16  # from the loaded memory
    assert data["runs"][0]["config"]["n_examples"] == 2 and data["runs"][0]["config"]["examples"] == "choose"
    saved = json.loads((tmp_path / "fit" / "poem.json").read_text())
    assert rows["poem"]["source"] == saved["source"] and rows["poem"]["setting"] == saved["setting"]
    assert rows["poem"]["selection_estimate"] == saved["selection"]["estimate"]
    # the loaded choice, restricted to each source, with that source's fit calls (no refit)
    assert rows["poem_fixed"]["lm_calls_fit"] == rows["poem_knn"]["lm_calls_fit"] == 8
    assert rows["best_fixed"]["lm_calls_fit"] == 8 and rows["random"]["candidate_orders"] == 2
    assert (out / "results.md").read_text().startswith("| task |")
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_rejects_bad_config(local_files, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_examples: 2\nneighbours: 5\n")
    train, test = local_files
    code = main(["poem", "fit", "--task", "local", "--train-file", str(train), "--test-file", str(test),
                 "--config", str(bad), "--out", str(tmp_path / "x")])
    assert code == 2 and "unknown PoemConfig option(s) ['neighbours']" in capsys.readouterr().err


def test_subparser_wires_into_a_parent_parser():
    parser = argparse.ArgumentParser(prog="memrl")
    add_poem_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["poem", "eval", "--tasks", "sst2,mr", "--seeds", "13,21", "--out", "x", "--k", "4"])
    assert args.tasks == ["sst2", "mr"] and args.seeds == [13, 21] and args.cfg_k == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["poem", "eval", "--tasks", "sst2", "--seeds", "a,b", "--out", "x"])


def _one_seed_table():
    methods = ("poem", "best_fixed", "kate", "kate_reverse", "random", "globale", "locale", "zero_shot", "poem_identity")
    run = {"task": "sst2", "seed": 13, "methods": {m: {"accuracy": 0.5 + 0.04 * i, "accuracy_std": 0.0,
                                                       "lm_calls_fit": 0, "lm_calls_select": 0, "lm_calls_eval": 10,
                                                       "wall_s": 1.0} for i, m in enumerate(methods)}}
    return aggregate([run]), methods


def test_single_seed_tables_show_no_spread_and_the_chart_keeps_its_legend():
    from memrl.poem.report import bar_chart, text_table

    table, methods = _one_seed_table()
    assert "±" not in markdown_table(table) and "±" not in text_table(table)  # no "± 0.0" for one seed
    fig = bar_chart(table, "one seed")
    fig.canvas.draw()
    legend, box = fig.legends[0], fig.bbox
    extent = legend.get_window_extent()
    assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0  # no entry cut off
    assert [t.get_text() for t in legend.get_texts()] == list(methods)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "50" in labels and "82" in labels  # every bar carries its value


def test_local_task_takes_a_verbalizer_and_a_template(local_files, tmp_path, capsys):
    from memrl.poem.cli import _task

    parser = argparse.ArgumentParser(prog="memrl")
    add_poem_subparser(parser.add_subparsers(dest="command"))
    train, test = local_files
    args = parser.parse_args(["poem", "fit", "--task", "local", "--train-file", str(train), "--test-file", str(test),
                              "--verbalizer", "neg=terrible,pos=great", "--template", r"Review: {text}\nSentiment:",
                              "--out", str(tmp_path / "x")])
    task = _task(args, "local", 13)
    assert task.verbalizer == ("terrible", "great") and task.label_names == ("neg", "pos")
    assert task.suffix(task.test[0]) == "Review: great fun\nSentiment:"
    assert task.continuations(task.test[:1]) == [" terrible", " great"]
    with pytest.raises(SystemExit):
        parser.parse_args(["poem", "fit", "--task", "local", "--verbalizer", "neg:terrible", "--out", "x"])


def test_bad_task_or_data_is_reported_before_any_model_loads(local_files, tmp_path, capsys):
    train, test = local_files
    # a model that does not exist: had it been loaded first, that would be the error reported
    model = ["--model", str(tmp_path / "no-such-model")]
    assert main(["poem", "eval", "--tasks", "sst9", "--out", str(tmp_path / "e"), *model]) == 2
    assert "sst9" in capsys.readouterr().err
    test.write_text('{"text": "fine", "label": "pos"}\n{"text": "", "label": "neg"}\n')
    assert main(["poem", "fit", "--task", "local", "--train-file", str(train), "--test-file", str(test),
                 "--out", str(tmp_path / "f"), *model]) == 2
    err = capsys.readouterr().err
    assert "test.jsonl" in err and "row 2" in err and "no-such-model" not in err
    assert main(["poem", "eval", "--tasks", "sst2", "--methods", "poem,tempera", "--out", str(tmp_path / "g"), *model]) == 2
    assert "tempera" in capsys.readouterr().err
    assert main(["poem", "eval", "--tasks", "sst2", "--min-probes", "0", "--out", str(tmp_path / "h"), *model]) == 2
    assert "--min-probes must be >= 1" in capsys.readouterr().err


def test_oracle_and_spread_from_a_hand_built_correctness_matrix():
    correct = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 1]], dtype=float)  # 4 queries x 3 orders
    stats = oracle_and_spread(correct)
    assert stats == {"oracle": 0.75, "fixed_min": 0.0, "fixed_median": 0.5, "fixed_max": 0.5,
                     "fixed_mean": pytest.approx(1 / 3), "orders": 3}


def test_real_kate_retrieves_the_most_similar_training_examples_most_similar_last(sst2, encoder):
    from memrl.poem.methods import kate_prefixes

    q = encoder.encode([sst2.test[0].key_text])
    tv = encoder.encode([ex.key_text for ex in sst2.train])
    (prefix,) = kate_prefixes(sst2, tv, q, 3)
    top = np.argsort(-(tv @ q[0]))[:3]
    assert prefix == sst2.prefix([sst2.train[int(i)] for i in top[::-1]])


def test_entropy_baselines_on_a_multiple_choice_task_use_unlabelled_inputs(scorer, encoder):
    from memrl.tasks.classification import load_task

    piqa = load_task("piqa", 13)
    task = replace(piqa, train=piqa.train[:8], dev=[])
    res = evaluate_task(task, scorer, encoder, PoemConfig(n_examples=2, select="fixed", examples="fixed"), max_test=4,
                        methods=["oracle", "globale", "locale", "random"], min_probes=3,
                        progress=False)
    ge, le = res["methods"]["globale"], res["methods"]["locale"]
    assert ge["probe_source"].startswith("unlabelled") and ge["probes"] == 3 and ge["candidate_orders"] == 2
    assert ge["lm_calls_select"] == ge["lm_calls_made"] == 2 * 3  # every candidate order on every probe
    assert le["lm_calls_made"] == ge["lm_calls_made"]  # one probe computation serves both rows
    assert res["methods"]["random"]["lm_calls_made"] == 0  # the oracle's scores of every candidate order
    assert {tuple(o) for o in (ge["order"], le["order"])} <= {(0, 1), (1, 0)}


def test_paired_comparison_pools_items_over_seeds():
    from memrl.poem.report import paired_comparison
    from memrl.stats import mcnemar_exact_p

    runs = [{"gold": [0, 1, 1, 0], "methods": {"a": {"predictions": [0, 1, 0, 0]}, "b": {"predictions": [1, 1, 1, 1]}}},
            {"gold": [1, 1], "methods": {"a": {"predictions": [1, 1]}, "b": {"predictions": [0, 1]}}},
            {"gold": [1], "methods": {"a": {"predictions": [1]}}}]  # no b: not counted
    r = paired_comparison(runs, "a", "b")
    # seed 1: only a right on items 0 and 3, only b on item 2; seed 2: only a on item 0
    assert (r["only_a"], r["only_b"], r["n"], r["seeds"]) == (3, 1, 6, 2)
    assert r["diff"] == pytest.approx(2 / 6) and r["p"] == pytest.approx(mcnemar_exact_p(3, 1))
    assert paired_comparison(runs, "a", "c") is None


def test_paired_test_counts_an_item_once_over_the_seeds_that_score_it():
    from memrl.poem.report import paired_comparison
    from memrl.stats import mcnemar_exact_p

    # two seeds score the same items x, y, z (every LM-BFF seed shares one test split)
    gold = [1, 1, 1]
    runs = [{"gold": gold, "items": ["x", "y", "z"],
             "methods": {"a": {"predictions": [1, 1, 0]}, "b": {"predictions": [0, 0, 1]}}},
            {"gold": gold, "items": ["x", "y", "z"],
             "methods": {"a": {"predictions": [1, 0, 0]}, "b": {"predictions": [0, 1, 1]}}}]
    r = paired_comparison(runs, "a", "b")
    # trials: a alone right on x (twice) and y (once); b alone on z (twice) and y (once)
    assert (r["only_a"], r["only_b"], r["n"], r["seeds"], r["items"]) == (3, 3, 6, 2, 3)
    # per item: x favours a (+2), y is even (+1 - 1), z favours b (-2): one item each way
    assert (r["better"], r["worse"]) == (1, 1) and r["p"] == pytest.approx(1.0, abs=1e-12)
    # counted per trial, x and z would look like four independent items
    runs[1]["items"] = ["x2", "y2", "z2"]
    r2 = paired_comparison(runs, "a", "b")
    assert (r2["better"], r2["worse"]) == (3, 3) and r2["p"] == pytest.approx(mcnemar_exact_p(3, 3))


def test_paired_comparison_with_the_random_orders_expected_correctness():
    from memrl.poem.report import paired_comparison
    from memrl.stats import paired_permutation_test

    # the random row holds each item's expected correctness (the share of the candidate orders
    # right on it), no predictions; seeds share items x, y, z
    gold = [1, 1, 1]
    runs = [{"gold": gold, "items": ["x", "y", "z"],
             "methods": {"poem": {"predictions": [1, 1, 0]}, "random": {"expected_correct": [0.25, 1.0, 0.5]}}},
            {"gold": gold, "items": ["x", "y", "z"],
             "methods": {"poem": {"predictions": [1, 0, 0]}, "random": {"expected_correct": [0.5, 0.75, 0.25]}}}]
    r = paired_comparison(runs, "poem", "random")
    # per trial a - b: x +0.75, +0.5; y 0, -0.75; z -0.5, -0.25
    assert r["fractional"] and (r["n"], r["seeds"], r["items"]) == (6, 2, 3)
    assert r["only_a"] == pytest.approx(1.25, abs=1e-12) and r["only_b"] == pytest.approx(1.5, abs=1e-12)
    assert r["diff"] == pytest.approx((3 - 3.25) / 6, abs=1e-12)  # poem 3 of 6 right, random 3.25 expected
    # per item: x +1.25 (better), y -0.75, z -0.75 (worse)
    assert (r["better"], r["worse"]) == (1, 2)
    assert r["p"] == pytest.approx(paired_permutation_test([("x", 1.0, 0.25), ("x", 1.0, 0.5), ("y", 1.0, 1.0),
                                                            ("y", 0.0, 0.75), ("z", 0.0, 0.5), ("z", 0.0, 0.25)])["p"],
                                   abs=1e-12)
    assert paired_comparison(runs, "random", "poem")["p"] == pytest.approx(r["p"], abs=1e-12)


def test_item_ids_are_the_same_under_every_data_seed_and_differ_between_items():
    from memrl.tasks.classification import load_task

    a, b = load_task("sst2", 13), load_task("sst2", 21)
    assert [q.item_id for q in a.test[:50]] == [q.item_id for q in b.test[:50]]
    assert len({q.item_id for q in a.test}) == len({(q.text, q.label) for q in a.test})
    from memrl.tasks.fewshot import Example

    q = Example("Which is heavier?", 0, choices=("a brick", "a feather"))
    assert q.item_id == Example("Which is heavier?", 0, choices=("a brick", "a feather")).item_id
    assert q.item_id != Example("Which is heavier?", 0, choices=("a rock", "a feather")).item_id
    assert q.item_id != Example("Which is heavier?", 1, choices=("a brick", "a feather")).item_id


def test_the_oracle_is_shown_but_never_marked_best():
    runs = [{"task": "sst2", "seed": 13, "methods": {
        m: {"accuracy": acc, "lm_calls_fit": 0, "lm_calls_select": 0, "lm_calls_eval": 10, "wall_s": 1.0}
        for m, acc in (("poem", 0.7), ("oracle", 0.95), ("kate", 0.6))}}]
    row = next(line for line in markdown_table(aggregate(runs)).splitlines() if line.startswith("| sst2"))
    assert row == "| sst2 | **70.0** | 95.0 | 60.0 |"
