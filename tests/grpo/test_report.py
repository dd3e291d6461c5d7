"""`memrl report`: plots and the Markdown table from (synthetic) run directories."""

from __future__ import annotations

import json

import pytest

from memrl.cli import main
from memrl.grpo.report import build_report, ema, read_metrics, run_colours, summary_table


def _run(root, name, method, seed, correctness):
    run = root / name
    run.mkdir()
    (run / "resolved_config.json").write_text(json.dumps({"train": {"method": method}, "grpo": {"seed": seed}}))
    lines = []
    for step, c in enumerate(correctness, 1):
        row = {"step": step, "loss": 0.1, "rewards/correctness_reward/mean": c,
               "rewards/xmlcount_reward/mean": 0.1 * step, "completions/mean_length": 40 + step, "reward": c}
        if method.startswith("memory"):
            row |= {"memory/success_values": 2.0 * step, "memory/failure_values": 6.0 * step,
                    "rewards/memory_exploit_reward/mean": 0.5}
        lines.append(json.dumps(row))
    lines.append(json.dumps({"step": len(correctness), "train_runtime": 12.0}))  # the end-of-train log
    lines.append('{"step": 99, "torn')  # a line cut by a killed run
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "run_summary.json").write_text(json.dumps({"timing": {"seconds_per_step": 42.0}}))
    (run / "eval").mkdir()
    (run / "eval" / "summary.json").write_text(json.dumps({
        "results": [{"benchmark": "gsm8k", "step": s, "accuracy": a} for s, a in ((1, 0.1), (2, 0.3))],
        "per_benchmark": {"gsm8k": {"last": 0.3, "best": 0.3}}}))
    return run


def test_ema():
    assert ema([1.0, 3.0], 0.0) == [1.0, 3.0]
    assert ema([0.0, float("nan"), 1.0], 0.5)[2] == 0.5
    with pytest.raises(ValueError):
        ema([1.0], 1.0)


def test_run_colours_separate_seeds_within_a_method_hue():
    import matplotlib

    labels = ["r1 s0", "r1 s1", "memory-r+ s0", "memory-r+ s1", "cosine s0"]
    colours = run_colours(labels, matplotlib.colormaps["tab10"])
    assert set(colours) == set(labels) and len(set(colours.values())) == len(labels)
    # seeds of one method: the same hue, the later seed darker
    a, b = colours["r1 s0"], colours["r1 s1"]
    ratios = {round(y / x, 6) for x, y in zip(a, b) if x > 0}
    assert len(ratios) == 1 and ratios.pop() < 1.0
    assert colours["cosine s0"] != colours["r1 s0"]


def test_read_metrics_skips_torn_and_summary_lines(tmp_path):
    run = _run(tmp_path, "r1-s0", "r1", 0, [0.1, 0.2, 0.3])
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_build_report_writes_plots_and_table(tmp_path):
    runs = [_run(tmp_path, "r1-s0", "r1", 0, [0.1, 0.2, 0.2]),
            _run(tmp_path, "mrp-s0", "memory-r+", 0, [0.1, 0.3, 0.4])]
    written = build_report(runs, tmp_path / "report", smoothing=0.5)
    for key in ("training_curves", "eval_accuracy"):
        data = open(written[key], "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real, non-trivial image
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "| mrp-s0 | memory-r+ | 3 |" in md and "gsm8k: 30.0 / 30.0" in md
    assert "6 ok / 18 fail" in md and "| r1-s0 | r1 | 3 |" in md


def test_summary_table_correctness_is_last_mean(tmp_path):
    run = _run(tmp_path, "x", "r1", 1, [0.0] * 5 + [1.0] * 5)
    assert "| x | r1 | 10 | 1 |" in summary_table([run])


def test_cli_report(tmp_path, capsys):
    run = _run(tmp_path, "r1-s0", "r1", 0, [0.1, 0.2])
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    assert "training_curves" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out2")]) == 1
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_diagnostic_panels_show_the_answer_terms_not_the_format_ones(tmp_path):
    from memrl.grpo.report import diagnostic_keys, plot_training_curves

    run = _run(tmp_path, "m", "memory-r+", 0, [0.1, 0.2, 0.4])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()[:3]]
    for row in rows:
        row |= {"diag/memory_exploit_reward/auc": 0.8, "diag/correctness_reward/adv_share": 0.6,
                "diag/xmlcount_reward/auc": 0.5, "diag/total/len_corr": -0.3, "diag/auc_groups": 2.0}
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = {"m": read_metrics(run)}
    assert diagnostic_keys(runs, "auc") == ["diag/memory_exploit_reward/auc"]  # format terms and counts left out
    assert diagnostic_keys(runs, "adv_share") == ["diag/correctness_reward/adv_share"]
    assert diagnostic_keys(runs, "len_corr") == ["diag/total/len_corr"]
    path = plot_training_curves([run], tmp_path / "curves.png")
    assert path.stat().st_size > 10_000
