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
    assert ema([1.0, 3.0], 0.0) == pytest.approx([1.0, 3.0], abs=1e-12)
    assert ema([0.0, float("nan"), 1.0], 0.5)[2] == pytest.approx(0.5, abs=1e-12)
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


# ----------------------------------------------------------------------------- plots that read
def _rows(n, **series):
    """``n`` logged steps with the given per-step values (a list, or one value for every step)."""
    return [{"step": i + 1, "loss": 0.1, **{k.replace("__", "/"): (v[i] if isinstance(v, list) else v)
                                           for k, v in series.items()}} for i in range(n)]


def test_only_metrics_with_two_differing_values_are_drawn_and_the_rest_is_named():
    from memrl.grpo.report import plan_training_curves, series_left_out

    assert series_left_out([0.5]) == "one logged value" and series_left_out([]) == "no logged value"
    assert series_left_out([0.5, 0.5, float("nan")]) == "constant at 0.5"
    assert series_left_out([0.5, 0.5 + 1e-12]) == "constant at 0.5"  # rounding noise is no variation
    assert series_left_out([0.1, float("nan"), 0.4]) is None
    rows = _rows(4, **{"rewards__correctness_reward__mean": [0.0, 0.25, 0.5, 0.5], "reward": [1.0, 1.5, 2.0, 2.5],
                       "rewards__xmlcount_reward__mean": 0.5, "rewards__memory_exploit_reward__mean": [0.1, 0.3, 0.2, 0.4],
                       "rewards__memory_explore_reward__mean": 0.0, "memory__success_values": [1.0, 2.0, 3.0, 4.0],
                       "memory__failure_values": [7.0, 13.0, 19.0, 24.0], "memory__success_keys": [1.0, 2.0, 2.0, 2.0],
                       "memory__failure_keys": 2.0, "frac_reward_zero_std": 0.5})
    rows[2]["diag/memory_exploit_reward/auc"] = 0.75  # diagnostics defined at one step only
    rows[3]["diag/total/auc"] = 0.5
    panels, left_out = plan_training_curves({"memory-r+ s0": rows})
    titles = {p["title"]: p["keys"] for p in panels}
    assert list(titles) == ["outcome reward (correctness; cosine-length for cosine)", "reward (total)",
                            "intrinsic reward terms", "memory: stored completions", "memory: questions"]
    assert titles["intrinsic reward terms"] == ["rewards/memory_exploit_reward/mean"]
    assert titles["memory: questions"] == ["memory/success_keys"]
    assert left_out == ["groups without reward variance (constant at 0.5)", "format rewards: xmlcount (constant at 0.5)",
                        "intrinsic reward terms: memory_explore (constant at 0)",
                        "memory: questions: failure (constant at 2)",
                        "within-group AUC vs correctness: memory_exploit, total (one logged value)"]
    steps, values = panels[0]["series"][("memory-r+ s0", "rewards/correctness_reward/mean")]
    assert steps == [1, 2, 3, 4] and values == pytest.approx([0.0, 0.25, 0.5, 0.5])


def test_a_run_with_one_step_has_nothing_to_plot(tmp_path):
    from memrl.grpo.report import plot_training_curves

    run = _run(tmp_path, "one", "r1", 0, [0.25])
    with pytest.raises(ValueError, match="nothing to plot.*two logged values"):
        plot_training_curves([run], tmp_path / "curves.png")


def test_curves_of_one_run_and_of_several_are_drawn(tmp_path):
    from memrl.grpo.report import plot_training_curves

    one = _run(tmp_path, "m", "memory-r+", 0, [0.1, 0.2, 0.4])
    two = _run(tmp_path, "r", "r1", 0, [0.1, 0.1, 0.3])
    for runs in ([one], [one, two]):
        path = plot_training_curves(runs, tmp_path / f"curves{len(runs)}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


# ----------------------------------------------------------------------------- before / after
def _records(correct, completions):
    return [{"question": f"q{i}", "correct": c, "completion": t} for i, (c, t) in enumerate(zip(correct, completions))]


TAGGED = "<think>\n2+3\n</think>\n<answer>\n5\n</answer>"  # 41 characters


def _before_after_inputs():
    base = _records([True, False, False, True, False, False, False, False, False, False],
                    [TAGGED] * 4 + ["<answer> 7"] + ["x" * 100] * 5)  # an unclosed tag is not a written one
    trained = _records([True, True, False, True, True, False, False, True, False, False], [TAGGED] * 9 + ["y" * 10])
    metrics = _rows(12, **{"rewards__correctness_reward__mean": [0.0, 0.125, 0.125, 0.25, 0.0, 0.25, 0.25, 0.5, 0.5,
                                                                 0.375, 0.625, 0.5],
                           "frac_reward_zero_std": [0.5, 0.5, 0.0, 0.5, 1.0, 0.5, 0.5, 0.0, 0.5, 0.0, 0.0, 0.5],
                           "memory__success_keys": 10.0, "memory__failure_keys": 20.0,
                           "memory__success_values": 60.0, "memory__failure_values": 130.0})
    metrics.append({"step": 12, "train_runtime": 300.0})  # the end-of-training log is no step
    return base, trained, metrics


def test_before_after_figures_from_hand_built_records():
    from memrl.grpo.report import before_after

    base, trained, metrics = _before_after_inputs()
    f = before_after(base, trained, metrics)
    b, a = f["before"], f["after"]
    assert (b["n"], b["correct"], a["correct"]) == (10, 2, 5)
    assert b["accuracy"] == pytest.approx(0.2) and a["accuracy"] == pytest.approx(0.5)
    # Wilson 95%: 2/10 -> [0.0567, 0.5098], 5/10 -> [0.2366, 0.7634]
    assert b["accuracy_ci95"] == pytest.approx([0.05668, 0.50984], abs=1e-4)
    assert a["accuracy_ci95"] == pytest.approx([0.23659, 0.76341], abs=1e-4)
    assert b["answer_tag_rate"] == pytest.approx(0.4) and a["answer_tag_rate"] == pytest.approx(0.9)
    assert len(TAGGED) == 41 and b["mean_completion_chars"] == pytest.approx((4 * 41 + 10 + 5 * 100) / 10)
    assert a["mean_completion_chars"] == pytest.approx((9 * 41 + 10) / 10)
    # first / last 5 of the 12 logged steps
    assert f["window"] == 5 and f["steps"] == 12
    assert b["train_correct"] == pytest.approx(0.1) and a["train_correct"] == pytest.approx(0.5)
    assert b["zero_std_share"] == pytest.approx(0.5) and a["zero_std_share"] == pytest.approx(0.2)
    assert b["memory"] == {"success_keys": 0.0, "failure_keys": 0.0, "success_values": 0.0, "failure_values": 0.0}
    assert a["memory"] == {"success_keys": pytest.approx(10.0), "failure_keys": pytest.approx(20.0),
                           "success_values": pytest.approx(60.0), "failure_values": pytest.approx(130.0)}
    # problems 1, 4, 7 solved only after training, none only before: exact McNemar p = 2 * 0.5**3
    assert f["paired"]["only_after"] == 3 and f["paired"]["only_before"] == 0
    assert f["paired"]["mcnemar_p"] == pytest.approx(0.25)


def test_before_after_of_a_short_run_without_memory_and_on_other_problems():
    from memrl.grpo.report import before_after

    base, trained, metrics = _before_after_inputs()
    short = [{k: v for k, v in r.items() if not k.startswith("memory/")} for r in metrics[:3]]
    f = before_after(base, trained, short)
    # 3 steps: the first and the last step alone, so the two windows do not overlap
    assert f["window"] == 1 and f["steps"] == 3
    assert f["before"]["train_correct"] == pytest.approx(0.0) and f["after"]["train_correct"] == pytest.approx(0.125)
    assert f["before"]["memory"] is None and f["after"]["memory"] is None
    with pytest.raises(ValueError, match="same problems"):
        before_after(base, trained[::-1], metrics)
    with pytest.raises(ValueError, match="no logged training step"):
        before_after(base, trained, metrics[-1:])


def test_before_after_markdown_table():
    from memrl.grpo.report import BEFORE_AFTER_NOTE, before_after, before_after_markdown

    base, trained, metrics = _before_after_inputs()
    md = before_after_markdown(before_after(base, trained, metrics), "10 arith test problems.", "One seed.",
                               curves="c.png")
    assert md.startswith("# Before / after 12 training steps\n\n10 arith test problems.\n")
    assert "| held-out accuracy [95% Wilson interval] | 2/10 = 20.0% [5.7, 51.0] | 5/10 = 50.0% [23.7, 76.3] |" in md
    assert "| answer tags written (held-out) | 40.0% | 90.0% |" in md
    assert "| mean completion length (held-out, characters) | 67 | 38 |" in md
    assert "| training correctness (first / last 5 steps, sampled) | 10.0% | 50.0% |" in md
    assert "| groups without reward variance (first / last 5 steps) | 50.0% | 20.0% |" in md
    assert ("| memory size (success + failure memory) | 0 + 0 questions, 0 + 0 completions "
            "| 10 + 20 questions, 60 + 130 completions |") in md
    assert "3 solved only after training, 0 only before (exact McNemar p = 0.25)" in md
    assert md.endswith("\n\nOne seed.\n\n![training curves](c.png)\n")
    assert "{" not in BEFORE_AFTER_NOTE.format(model="smollm2-135m", steps=12, method="memory-r+")
