"""`memrl train` configuration: presets, overrides, unknown keys, CLI errors; collapse detectors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from memrl.cli import main
from memrl.grpo.callbacks import length_collapse, reward_mode_collapse, signal_stall
from memrl.grpo.config import TrainConfig, format_output_dir, read_yaml_config, resolve_config
from memrl.options import parse_set, preset_names, preset_path
from memrl.poem import PoemConfig
from memrl.rewards.registry import reward_weight_list

CPU_TINY = read_yaml_config(preset_path("cpu-tiny"))


def test_every_shipped_preset_resolves():
    # presets ship inside the package (a plain `pip install` has them); each must be valid
    assert {"cpu-tiny", "gsm8k-qwen2.5-0.5b", "aimo-qwen2.5-0.5b"} <= set(preset_names("grpo"))
    assert "default" in preset_names("poem")
    for name in preset_names("poem"):
        PoemConfig.from_dict(yaml.safe_load(preset_path(name, "poem").read_text()), source=name)
    for name in preset_names("grpo"):
        resolve_config(read_yaml_config(preset_path(name, "grpo")))
    assert CPU_TINY["method"] == "memory-r+" and CPU_TINY["model"] == "smollm2-135m"
    with pytest.raises(FileNotFoundError, match="presets: .*cpu-tiny"):
        preset_path("cpu-huge")


def test_quickstart_preset_is_the_default_and_the_second_cpu_study_setting():
    from memrl.grpo.config import DEFAULT_PRESET
    from memrl.rewards.memory_rewards import MemoryRewardConfig

    values = read_yaml_config(preset_path("quickstart"))
    assert DEFAULT_PRESET == "quickstart"
    # the memory semantics is left to the library's default (a study may change it)
    assert not any(key in values for key in ("memory_semantics", "memory_warmup_unit"))
    train, grpo, memory, _ = resolve_config(values)
    assert memory.memory_semantics == MemoryRewardConfig().memory_semantics and memory.memory_explore
    # the second CPU study's run values (studies/cpu_study_v2): a recurring pool of 24 level-1 arith
    # questions, 2 worked exemplars, think tags, 2 prompts x 8 completions <= 96 tokens
    assert (train.model, train.dataset, train.arith_level, train.dataset_limit) == ("smollm2-135m", "arith", 1, 24)
    assert (train.method, train.prompt_style, train.shots) == ("memory-r+", "think", 2)
    assert grpo.per_device_train_batch_size == 16 and grpo.num_generations == 8
    assert grpo.max_completion_length == 96
    assert grpo.learning_rate == pytest.approx(1e-5) and grpo.beta == pytest.approx(0.0)
    assert grpo.temperature == pytest.approx(0.9)
    assert memory.memory_explore_warmup_steps == 10 and memory.memory_explore_warmup_keys == 10
    # sized for <= 15 minutes on 2 cores with the before/after evaluation
    assert 15 <= grpo.max_steps <= 25 and 50 <= train.before_after_problems <= 100
    assert grpo.output_dir == "runs/quickstart/memory-r+-s0" and grpo.save_steps <= grpo.max_steps


def test_before_after_needs_a_held_out_split(tmp_path):
    with pytest.raises(ValueError, match="before_after_problems must be >= 0"):
        TrainConfig(before_after_problems=-1)
    with pytest.raises(ValueError, match="held-out test split.*'data/my.jsonl' has none"):
        TrainConfig(dataset="data/my.jsonl", before_after_problems=10)
    assert TrainConfig(dataset="gsm8k", before_after_problems=10).before_after_problems == 10


def test_resolve_splits_sections_and_forces_cpu_safe_settings():
    train, grpo, memory, _ = resolve_config({**CPU_TINY, "bf16": True, "memory_top_k": 3})
    assert train.method == "memory-r+" and memory.memory_explore and memory.memory_top_k == 3
    assert grpo.per_device_train_batch_size == 8 and grpo.num_generations == 4
    assert grpo.use_cpu and not grpo.bf16  # bf16 on these CPUs is ~8x slower
    assert grpo.remove_unused_columns is False  # rewards need the question/answer columns
    _, _, memory_r, _ = resolve_config({**CPU_TINY, "method": "memory-r"})
    assert not memory_r.memory_explore


def test_unknown_key_lists_valid_options():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['learning_rat'\].*learning_rate"):
        resolve_config({"learning_rat": 1e-5})


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match="method='ppo'"):
        resolve_config({"method": "ppo"})
    with pytest.raises(ValueError, match="memory_top_k"):
        resolve_config({"memory_top_k": 0})
    with pytest.raises(ValueError, match="invalid GRPO settings"):
        # 6 completions per device cannot be split into groups of 4
        resolve_config({"per_device_train_batch_size": 6, "num_generations": 4})


def test_yaml_sections_are_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 1.0e-5\n")
    with pytest.raises(ValueError, match="'learning_rate' under section 'train' is not a train option"):
        read_yaml_config(path)
    path.write_text("grpo:\n  learning_rate: 2.0e-5\nmethod: r1\n")
    assert read_yaml_config(path) == {"learning_rate": 2.0e-5, "method": "r1"}


def test_yaml_numbers_and_yaml_errors(tmp_path):
    path = tmp_path / "c.yaml"
    # YAML 1.1 reads 5e-6 (no dot) as text; as a learning rate it must still be a number
    path.write_text("grpo:\n  learning_rate: 5e-6\nrun_name: 1e5x\n")
    assert read_yaml_config(path) == {"learning_rate": 5e-6, "run_name": "1e5x"}
    path.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match=r"c\.yaml: not valid YAML"):
        read_yaml_config(path)


def test_option_types_are_checked_by_name():
    with pytest.raises(ValueError, match="option 'shots' must be an int, got 'abc'"):
        resolve_config(parse_set(["shots=abc"]))
    with pytest.raises(ValueError, match="option 'memory_top_k' must be an int"):
        resolve_config({"memory_top_k": "three"})
    with pytest.raises(ValueError, match="dataset_limit must be >= 1"):
        resolve_config({"dataset_limit": 0})
    assert resolve_config({"dataset_limit": None})[0].dataset_limit is None


def test_output_dir_names_each_method_and_seed():
    # one preset, several methods and seeds: each run gets a folder of its own
    dirs = {resolve_config({**CPU_TINY, "method": m, "seed": s})[1].output_dir
            for m in ("r1", "memory-r+") for s in (0, 1)}
    assert dirs == {f"runs/cpu-tiny/{m}-s{s}" for m in ("r1", "memory-r+") for s in (0, 1)}
    assert resolve_config({"method": "r1", "seed": 3})[1].output_dir == "runs/r1-arith-s3"
    train = TrainConfig(model="org/Qwen2.5-0.5B/", dataset="data/my.jsonl")
    assert format_output_dir("out/{model}-{dataset}-{method}", train, 0) == "out/Qwen2.5-0.5B-my-memory-r+"
    with pytest.raises(ValueError, match=r"unknown or malformed placeholder.*\{method\}"):
        resolve_config({"output_dir": "runs/{lr}"})


def test_set_overrides_parse_yaml_types():
    assert parse_set(["a=1", "b=x", "c=true", "d=[1, 2]", "learning-rate=5e-6"]) == {
        "a": 1, "b": "x", "c": True, "d": [1, 2], "learning_rate": 5e-6}
    assert parse_set(["run_name=1e5x"]) == {"run_name": "1e5x"}  # not a number: kept as text
    with pytest.raises(ValueError, match="key=value"):
        parse_set(["oops"])


def test_reward_weights_by_name():
    class R:
        def __init__(self, name):
            self.__name__ = name

    funcs = [R("correctness_reward"), R("xmlcount_reward")]
    assert reward_weight_list(funcs, {"correctness_reward": 2.0}) == pytest.approx([2.0, 1.0], abs=1e-12)
    with pytest.raises(ValueError, match="unknown reward"):
        reward_weight_list(funcs, {"nope": 1.0})


def test_cli_reports_bad_input_in_one_line(capsys, tmp_path):
    assert main(["train", "--set", "no_such_option=1", "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "memrl train: error: unknown option(s) ['no_such_option']" in err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err
    assert main(["train", "--resume", "--output-dir", str(tmp_path / "empty")]) == 1
    assert "no checkpoint-*" in capsys.readouterr().err


def test_print_config(capsys):
    assert main(["train", "--print-config", "--method", "r1", "--set", "max_steps=3"]) == 0
    out = capsys.readouterr().out
    assert "method: r1" in out and "max_steps: 3" in out
    assert "output_dir: runs/quickstart/r1-s0" in out  # the default preset
    assert main(["train", "--print-config", "--report-to", "tensorboard", "wandb"]) == 0
    assert "report_to:\n  - tensorboard\n  - wandb\n" in capsys.readouterr().out


def test_memory_gate_is_a_flag_and_a_checked_option(capsys):
    assert main(["train", "--print-config", "--memory-gate", "zero_variance"]) == 0
    assert "memory_gate: zero_variance" in capsys.readouterr().out
    assert resolve_config(dict(CPU_TINY))[2].memory_gate == "none"
    with pytest.raises(ValueError, match="memory_gate='sometimes' is not one of none, zero_variance"):
        resolve_config({**CPU_TINY, "memory_gate": "sometimes"})


# --------------------------------------------------------------------------- collapse detectors
def _hist(lengths=None, clipped=None, fmt=None, cor=None):
    n = len(lengths or clipped or fmt or cor)
    rows = []
    for i in range(n):
        row = {}
        if lengths:
            row["completions/mean_length"] = lengths[i]
        if clipped:
            row["completions/clipped_ratio"] = clipped[i]
        if fmt:
            row["rewards/strict_format_reward/mean"] = fmt[i]
            row["rewards/xmlcount_reward/mean"] = fmt[i] / 4
        if cor:
            row["rewards/correctness_reward/mean"] = cor[i]
        rows.append(row)
    return rows


def test_length_collapse_short_and_cap():
    assert length_collapse(_hist(lengths=[60, 40, 6, 5, 4, 3, 2]), window=5) == "short"
    assert length_collapse(_hist(lengths=[60, 55, 50, 48, 52]), window=5) is None
    assert length_collapse(_hist(clipped=[0.1, 0.9, 0.9, 1.0, 0.8, 0.9]), window=5) == "cap"
    assert length_collapse(_hist(lengths=[3, 3]), window=5) is None  # too little history


def test_reward_mode_collapse():
    fmt_up = [0.0] * 5 + [0.5] * 5
    cor_down = [0.4] * 5 + [0.1] * 5
    assert reward_mode_collapse(_hist(fmt=fmt_up, cor=cor_down), window=5)
    # format rising while correctness also rises is learning, not collapse
    assert not reward_mode_collapse(_hist(fmt=fmt_up, cor=list(reversed(cor_down))), window=5)
    assert not reward_mode_collapse(_hist(fmt=fmt_up[:6], cor=cor_down[:6]), window=5)


def test_signal_stall_fires_on_the_study_run_that_stalled_and_not_on_the_ones_that_learned():
    """The second CPU study's logs: r1 seed 2 wrote one wrong answer in the tag layout for 37 of 40
    steps (95% of groups without reward variance at the end); seeds 0 and 1 learned the pool."""
    from types import SimpleNamespace

    from memrl.grpo.callbacks import CollapseMonitor
    from memrl.grpo.rundir import RunDir

    runs = Path(__file__).resolve().parents[2] / "studies" / "cpu_study_v2" / "results" / "runs"
    for run, stalled in (("r1-s0", False), ("r1-s1", False), ("r1-s2", True)):
        rows = RunDir(runs / run).metrics()
        assert signal_stall(rows) is stalled, run
        monitor = CollapseMonitor()
        for row in rows:
            monitor.on_log(None, SimpleNamespace(global_step=row["step"]), None, logs=row)
        kinds = [w["kind"] for w in monitor.warnings]
        assert kinds == (["signal-stall"] if stalled else []), (run, kinds)
    assert not signal_stall([{"frac_reward_zero_std": 1.0}] * 9)  # too little history
    assert signal_stall([{"frac_reward_zero_std": 0.0}] * 5 + [{"frac_reward_zero_std": 0.95}] * 10)


def test_outcome_stall_sees_a_run_whose_other_rewards_still_vary():
    """The outcome signal can be gone while noise or memory terms keep the total reward varying:
    then signal_stall cannot fire and outcome_stall must. The second CPU study's logs carry the
    groups whose correctness varied (diag/auc_groups, 2 groups per step), from which the share
    without correctness variance follows."""
    from types import SimpleNamespace

    from memrl.grpo.callbacks import CollapseMonitor, outcome_stall
    from memrl.grpo.rundir import RunDir

    runs = Path(__file__).resolve().parents[2] / "studies" / "cpu_study_v2" / "results" / "runs"
    for run, stalled in (("r1-s0", False), ("r1-s1", False), ("r1-s2", True)):
        rows = [{"diag/flat_outcome_frac": 1 - float(r["diag/auc_groups"]) / 2} for r in RunDir(runs / run).metrics()
                if "diag/auc_groups" in r]
        assert len(rows) == 40 and outcome_stall(rows) is stalled, run
    # every group all wrong while the total reward varies (TRL's zero-std share 0): only outcome_stall fires
    monitor = CollapseMonitor()
    for step in range(1, 13):
        monitor.on_log(None, SimpleNamespace(global_step=step), None,
                       logs={"rewards/correctness_reward/mean": 0.0, "frac_reward_zero_std": 0.0,
                             "diag/flat_outcome_frac": 1.0, "completions/mean_length": 30.0})
    assert [(w["kind"], w["step"]) for w in monitor.warnings] == [("outcome-stall", 10)]
    assert not outcome_stall([{"diag/flat_outcome_frac": 1.0}] * 9)  # too little history


def test_collapse_detector_knows_the_real_reward_names():
    from memrl.grpo.callbacks import CORRECTNESS_MARKERS, FORMAT_MARKERS, reward_keys
    from memrl.rewards.registry import r1_rewards

    for checker in ("numeric", "math"):
        names = [f.__name__ for f in r1_rewards(checker=checker)]
        row = {f"rewards/{n}/mean": 0.0 for n in names + ["memory_exploit_reward", "memory_explore_reward"]}
        fmt, cor = reward_keys([row], FORMAT_MARKERS), reward_keys([row], CORRECTNESS_MARKERS)
        # every R1 reward is either a format or a correctness reward; memory rewards are neither
        assert sorted(fmt + cor) == sorted(f"rewards/{n}/mean" for n in names)
        assert len(cor) == 1


def test_peer_exploration_methods_resolve_with_their_options():
    from memrl.rewards import OutcomeBatchReward, OutcomeUCBReward
    from memrl.rewards.registry import build_rewards

    train, grpo, _, exploration = resolve_config({**CPU_TINY, "method": "entropy"})
    assert grpo.entropy_coef == 0.01  # TRL's entropy bonus is what the method adds
    assert resolve_config({**CPU_TINY, "method": "entropy", "entropy_coef": 0.05})[1].entropy_coef == 0.05
    with pytest.raises(ValueError, match="needs entropy_coef > 0"):
        resolve_config({**CPU_TINY, "method": "entropy", "entropy_coef": 0.0})
    _, _, _, exploration = resolve_config({**CPU_TINY, "method": "outcome-ucb", "outcome_explore_coef": 0.5})
    assert exploration.outcome_explore_coef == 0.5
    with pytest.raises(ValueError, match="did you mean outcome_explore_coef"):
        resolve_config({"outcome_explore_cof": 0.5})
    rewards, state = build_rewards("outcome-ucb", exploration_config=exploration)
    assert isinstance(rewards[-1], OutcomeUCBReward) and state is rewards[-1]
    assert rewards[-1].config.outcome_explore_coef == 0.5 and len(rewards) == 6  # R1's five + the bonus
    rewards, state = build_rewards("outcome-batch")
    assert isinstance(rewards[-1], OutcomeBatchReward) and state is None  # no state between steps
    rewards, state = build_rewards("entropy")
    assert [r.__name__ for r in rewards] == [r.__name__ for r in build_rewards("r1")[0]] and state is None


def test_random_control_reward_is_reproducible_noise_of_the_given_spread():
    import numpy as np
    from transformers import TrainerState

    from memrl.rewards.baselines import RandomReward
    from memrl.rewards.registry import build_rewards

    train, *_ = resolve_config({**CPU_TINY, "method": "r1-random", "random_reward_std": 0.2})
    assert train.random_reward_std == 0.2
    with pytest.raises(ValueError, match="random_reward_std must be > 0"):
        resolve_config({**CPU_TINY, "method": "r1-random", "random_reward_std": 0.0})
    rewards, state = build_rewards("r1-random", random_reward_std=0.2, seed=3)
    assert isinstance(rewards[-1], RandomReward) and state is None and len(rewards) == 6
    big = np.array(RandomReward(std=0.2, seed=3)(completions=["x"] * 4000))
    assert abs(big.mean()) < 0.02 and abs(big.std() - 0.2) < 0.01  # noise of the asked spread
    at_step = TrainerState()
    at_step.global_step = 7
    a = RandomReward(std=0.2, seed=3)(completions=["x", "y"], trainer_state=at_step)
    b = RandomReward(std=0.2, seed=3)(completions=["p", "q"], trainer_state=at_step)
    assert a == b  # the same step draws the same noise, whatever was written (a resumed run too)
    at_step.global_step = 8
    assert RandomReward(std=0.2, seed=3)(completions=["x", "y"], trainer_state=at_step) != a
