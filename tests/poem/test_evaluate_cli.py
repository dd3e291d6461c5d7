"""evaluate_task and the `memrl poem` CLI end to end on tiny real slices."""

import argparse
import json
from dataclasses import replace

import pytest

from memrl.poem import PoemConfig
from memrl.poem.cli import add_poem_subparser, main
from memrl.poem.evaluate import METHODS, evaluate_task
from memrl.poem.report import aggregate, markdown_table


def test_evaluate_task_all_methods(sst2, scorer, encoder):
    task = replace(sst2, train=sst2.train[:4] + sst2.train[-4:])  # 6 fit inputs x 2 orders
    res = evaluate_task(task, scorer, encoder, PoemConfig(n_examples=2, k=3), max_test=6,
                        random_draws=2, probe_orders=2, progress=False)
    assert set(res["methods"]) == set(METHODS) and res["n_test"] == 6
    poem = res["methods"]["poem"]
    assert poem["lm_calls_fit"] == res["poem_fit"]["lm_calls"] == 12
    assert poem["lm_calls_select"] == 0 and res["select_ms_per_query"] < 50
    assert res["methods"]["random"]["lm_calls_eval"] == 12 and len(res["methods"]["random"]["draws"]) == 2
    assert res["methods"]["globale"]["lm_calls_select"] == 2 * res["methods"]["globale"]["probes"]
    for r in res["methods"].values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["accuracy"] * 6 == pytest.approx(round(r["accuracy"] * 6))
    table = aggregate([res, {**res, "seed": 21}])
    assert table["sst2"]["poem"]["seeds"] == 2 and table["sst2"]["poem"]["std"] == 0.0
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
    assert main(["poem", "fit", *common, "--seed", "13", "--out", str(tmp_path / "fit")]) == 0
    assert "4 inputs, 8 trials, 8 LM calls" in capsys.readouterr().out
    out = tmp_path / "eval"
    # no --n-examples here: the loaded optimiser's settings (n = 2) must drive every method
    code = main(["poem", "eval", "--tasks", "local", "--train-file", str(train), "--test-file", str(test),
                 "--no-progress", "--methods", "poem,kate,random,zero_shot,best_fixed",
                 "--load", str(tmp_path / "fit"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "poem" in printed and "kate" in printed and "LM calls fit" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["runs"][0]["methods"]["poem"]["lm_calls_fit"] == 8  # from the loaded memory
    assert data["runs"][0]["config"]["n_examples"] == 2
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
