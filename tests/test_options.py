"""The config mechanism every command shares: flags from dataclasses, unknown keys, presets."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from memrl.cli import build_parser
from memrl.grpo.evaluate import EvalConfig
from memrl.options import (
    add_dataclass_arguments,
    build_config,
    given_values,
    preset_path,
    read_yaml_mapping,
    unknown_options_error,
)
from memrl.poem import PoemConfig
from memrl.rewards import MemoryRewardConfig


@dataclasses.dataclass
class Toy:
    steps: int = dataclasses.field(default=3, metadata={"help": "how many steps"})
    rate: float = dataclasses.field(default=0.5, metadata={"help": "a rate"})
    name: str | None = dataclasses.field(default=None, metadata={"help": "a name", "choices": ("a", "b")})
    verbose: bool = dataclasses.field(default=False, metadata={"help": "talk more"})
    tags: list[str] = dataclasses.field(default_factory=list, metadata={"help": "tags", "nargs": "+"})


def test_flags_come_from_the_fields_and_only_given_ones_are_returned():
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Toy)
    help_text = parser.format_help()
    assert "how many steps (default: 3)" in help_text and "--no-verbose" in help_text
    args = parser.parse_args(["--steps", "7", "--verbose", "--name", "b", "--tags", "x", "y"])
    assert given_values(args, Toy) == {"steps": 7, "verbose": True, "name": "b", "tags": ["x", "y"]}
    assert given_values(parser.parse_args([]), Toy) == {}  # defaults stay in the dataclass
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "c"])  # not one of the choices


def test_unknown_keys_name_the_closest_valid_option_not_all_of_them():
    err = unknown_options_error(["memory_topk"], [f.name for f in dataclasses.fields(MemoryRewardConfig)])
    assert "unknown option(s) ['memory_topk'] (did you mean memory_top_k?)" in str(err)
    assert "memory_dtype" not in str(err)  # no dump of every valid name
    with pytest.raises(ValueError, match=r"cfg\.yaml: unknown PoemConfig option\(s\) \['kk'\] \(did you mean k\?\)"):
        build_config(PoemConfig, {"kk": 3}, source="cfg.yaml")
    with pytest.raises(ValueError, match="unknown EvalConfig option"):
        build_config(EvalConfig, {"temprature": 0.5})


def test_every_config_checks_its_field_types():
    with pytest.raises(ValueError, match="option 'budget' must be an int"):
        PoemConfig(budget="24")
    with pytest.raises(ValueError, match="PoemConfig.k must be a positive integer or one of"):
        PoemConfig(k="8")  # an int-or-name field checks itself, naming what it accepts
    with pytest.raises(ValueError, match="option 'max_new_tokens' must be an int"):
        EvalConfig(max_new_tokens="many")
    with pytest.raises(ValueError, match="option 'memory_top_k' must be an int"):
        MemoryRewardConfig(memory_top_k=1.5)


def test_command_help_lists_every_config_field_with_its_help():
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    train_help, eval_help = sub["train"].format_help(), sub["eval"].format_help()
    for f in dataclasses.fields(MemoryRewardConfig):
        if f.name not in ("memory_explore", "memory_style"):  # follow from --method / --prompt-style
            assert f"--{f.name.replace('_', '-')}" in train_help
    assert "K stored questions read per query" in " ".join(train_help.split())
    for f in dataclasses.fields(EvalConfig):
        assert f"--{f.name.replace('_', '-')}" in eval_help


def test_eval_defaults_are_the_dataclass_defaults():
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    args = sub["eval"].parse_args(["some-model"])
    assert build_config(EvalConfig, given_values(args, EvalConfig)) == EvalConfig()


def test_presets_extend_a_base_and_loops_are_refused(tmp_path):
    paper = read_yaml_mapping(preset_path("gsm8k-qwen2.5-0.5b", "grpo"), "grpo")
    base = read_yaml_mapping(preset_path("base", "grpo"), "grpo")
    assert paper["grpo"]["learning_rate"] == base["grpo"]["learning_rate"] == 5e-6  # from the base
    assert paper["train"]["model"] == "Qwen/Qwen2.5-0.5B-Instruct"  # its own
    assert paper["train"]["method"] == "memory-r+"  # sections merge key by key
    (tmp_path / "a.yaml").write_text("extends: b\nx: 1\n")
    (tmp_path / "b.yaml").write_text("extends: a\ny: 2\n")
    with pytest.raises(ValueError, match="loops back"):
        read_yaml_mapping(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: c-base\nx: 1\ny: 3\n")
    (tmp_path / "c-base.yaml").write_text("y: 2\nz: 0\n")
    assert read_yaml_mapping(tmp_path / "c.yaml") == {"x": 1, "y": 3, "z": 0}
    with pytest.raises(FileNotFoundError, match="did you mean cpu-tiny"):
        preset_path("cpu-tiyn", "grpo")
