"""The console of `memrl train`: the numbers on the progress bar, and log lines above it."""

from __future__ import annotations

import logging
import sys
import warnings

from memrl.grpo.callbacks import lines_above_progress_bars, progress_postfix


def test_the_bar_shows_correctness_total_reward_and_the_memory_size():
    logs = {"rewards/correctness_reward/mean": 0.4375, "reward": 3.2049, "memory/success_keys": 5.0,
            "memory/failure_keys": 12.0, "memory/success_values": 30.0, "memory/failure_values": 98.0,
            "loss": 0.01, "completions/mean_length": 27.0}
    assert progress_postfix(logs) == "correct 0.44 | reward 3.20 | memory 17 keys, 128 values"
    # R1: no memory; cosine: its outcome reward is not a share of correct answers
    assert progress_postfix({"rewards/correctness_reward/mean": 0.0, "reward": 1.5}) == "correct 0.00 | reward 1.50"
    assert progress_postfix({"rewards/cosine_length_reward/mean": -0.25}) == "outcome -0.25"
    assert progress_postfix({"train_runtime": 300.0, "train_loss": 0.1}) is None  # the end-of-training log


def test_warnings_are_lines_above_the_bar_and_info_waits(capsys):
    console = logging.StreamHandler(sys.stderr)  # as `memrl` sets up logging (basicConfig)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(console)
    level = root.level
    root.setLevel(logging.INFO)
    log = logging.getLogger("memrl.test_console")
    try:
        before = list(root.handlers)
        with lines_above_progress_bars():
            assert console not in root.handlers  # swapped for one that writes through tqdm
            log.info("saved a checkpoint")  # not while the bar runs
            log.warning("step 3: length collapse")
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.warn("a library warning", UserWarning, stacklevel=1)
        assert root.handlers == before  # put back after
        log.info("done")
    finally:
        root.removeHandler(console)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "WARNING step 3: length collapse\n" in err and "UserWarning: a library warning\n" in err
    assert "saved a checkpoint" not in err and "INFO done\n" in err
