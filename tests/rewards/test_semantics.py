"""The Memory-R+ semantics registry (:mod:`memrl.rewards.semantics`): one class per semantics, the
config, ``--help`` and ``memrl serve`` reading it, what each class declares checked against what
it computes, and a new semantics added as one class.

Real all-MiniLM-L6-v2 encoder and the realistic GSM8K-style completions of
``helpers/gsm8k_completions``; no LLM.
"""

from __future__ import annotations

import copy
from dataclasses import fields

import numpy as np
import pytest

from helpers.gsm8k_completions import CALLS
from memrl.rewards import MemoryRewardConfig, MemoryRPlus, build_rewards
from memrl.rewards.memory_config import semantics_preset
from memrl.rewards.registry import DERIVED_MEMORY_FIELDS, memory_config_for
from memrl.rewards.semantics import MEMRL_PRESET, SEMANTICS, MemorySemantics, read_memories, register, semantics_named


def _rewards(name: str, encoder, **options) -> MemoryRPlus:
    # explore on from the first call (the reference counts failure keys, memrl steps)
    return MemoryRPlus(MemoryRewardConfig(memory_semantics=name, memory_explore_warmup_steps=0,
                                          memory_explore_warmup_keys=1, memory_top_k=2, **options),
                       encoder=encoder)


def test_every_semantics_is_one_registered_class_and_the_config_reads_the_registry():
    assert list(SEMANTICS) == ["score_then_write", "write_then_score", "group_loo", "reference"]
    option = {f.name: f for f in fields(MemoryRewardConfig)}["memory_semantics"]
    assert option.metadata["choices"] == tuple(SEMANTICS)  # the --memory-semantics choices
    for name, semantics in SEMANTICS.items():
        assert semantics_named(name) is semantics and semantics.name == name
        assert semantics.summary and semantics.reads and semantics.writes
        assert f"'{name}' ({semantics.summary})" in option.metadata["help"]
        assert "commit" in semantics.serve_modes and set(semantics.serve_modes) <= {"immediate", "commit"}
        assert semantics.scores_alone or semantics.not_alone  # a refusal says why
        assert semantics_preset(name, explore=False) == semantics.preset(explore=False)
    assert [n for n, s in SEMANTICS.items() if "immediate" in s.serve_modes] == ["score_then_write"]
    assert [n for n, s in SEMANTICS.items() if s.order_invariant] == ["score_then_write", "group_loo"]
    assert SEMANTICS["group_loo"].preset() == MEMRL_PRESET != SEMANTICS["reference"].preset()
    with pytest.raises(ValueError, match="'whatever' is not one of score_then_write, write_then_score, group_loo"):
        semantics_named("whatever")
    with pytest.raises(ValueError, match="memory_semantics"):
        MemoryRewardConfig(memory_semantics="whatever")


@pytest.mark.parametrize("name", list(SEMANTICS))
def test_each_semantics_is_order_invariant_exactly_when_it_says_so(encoder, name):
    """The batch after two warm calls, in its order and shuffled: the same values per completion
    for an order-invariant semantics, different ones for the others."""
    batch = CALLS[2]
    n = len(batch["completions"])
    perm = np.random.default_rng(3).permutation(n)

    def run(order):
        m = _rewards(name, encoder)
        for call in CALLS[:2]:
            m.compute(**call)
        return m.compute(**{k: [v[i] for i in order] for k, v in batch.items()})

    base, shuffled = run(np.arange(n)), run(perm)
    assert np.isfinite(base["exploit_raw"]).any() and np.isfinite(base["explore_raw"]).any()
    same = all(np.allclose(shuffled[k], base[k][perm], atol=1e-9, rtol=0, equal_nan=True)
               for k in ("exploit", "explore", "exploit_raw", "explore_raw"))
    assert same == SEMANTICS[name].order_invariant


def test_read_only_scoring_is_allowed_exactly_for_the_semantics_that_score_alone(encoder):
    for name, semantics in SEMANTICS.items():
        m = _rewards(name, encoder)
        if semantics.scores_alone:
            m.score(**CALLS[0])
            assert len(m.success_memory) == 0  # nothing written
        else:
            with pytest.raises(ValueError, match=f"needs memory_semantics in \\('score_then_write'\\).*{name}"):
                m.score(**CALLS[0])


def test_a_new_semantics_is_one_registered_class(encoder):
    """A semantics defined outside memrl's files (here: score against the memory, never write)
    is accepted by the config, takes memrl's preset and drives MemoryRPlus."""

    @register
    class ScoreOnly(MemorySemantics):
        name = "score_only_for_this_test"
        summary = "reads the memory, never writes it"
        reads = "the memories as they are"
        writes = "nothing"
        order_invariant = True
        scores_alone = True

        def score(self, state, key_ids, q_vecs, q_of, a_vecs, outcome, step, write=True):
            on = state.explore_on(step)
            ex_raw, xp_raw = read_memories(state, q_vecs, q_of, a_vecs, on)
            return ex_raw, xp_raw, np.full(len(q_of), on)

    try:
        filled = _rewards("score_then_write", encoder)
        filled.compute(**CALLS[0])
        frozen = _rewards("score_only_for_this_test", encoder)
        assert frozen.config.memory_key_rule == "own" and frozen.semantics.serve_modes == ("immediate", "commit")
        frozen.success_memory, frozen.failure_memory = (copy.deepcopy(filled.success_memory),
                                                        copy.deepcopy(filled.failure_memory))
        sizes = (filled.success_memory.num_values, filled.failure_memory.num_values)
        want = filled.score(**CALLS[1])
        for _ in range(2):  # nothing is written, so the second call reads the same memory
            got = frozen.compute(**CALLS[1])
            for key in ("exploit_raw", "explore_raw"):
                np.testing.assert_allclose(got[key], want[key], atol=1e-12, rtol=0)
        assert (frozen.success_memory.num_values, frozen.failure_memory.num_values) == sizes
        with pytest.raises(ValueError, match="registered twice"):
            register(ScoreOnly)
    finally:
        del SEMANTICS["score_only_for_this_test"]


def test_memory_fields_derived_from_the_method_are_derived_in_one_place(encoder):
    """``memrl train`` (resolve_config) and build_rewards give a method the same memory config."""
    from memrl.grpo.config import resolve_config

    assert DERIVED_MEMORY_FIELDS == ("memory_explore", "memory_style")
    for method, style in (("memory-r", "reasoning"), ("memory-r+", "think")):
        _, _, resolved, _ = resolve_config({"method": method, "prompt_style": style, "memory_semantics": "reference"})
        direct = memory_config_for(method, style, {"memory_semantics": "reference"})
        assert resolved == direct
        assert (direct.memory_explore, direct.memory_style) == (method == "memory-r+", style)
        assert direct.memory_max_values == (100 if method == "memory-r+" else 1000)  # the preset follows explore
        _, memory = build_rewards(method, memory_config=MemoryRewardConfig(memory_semantics="reference"),
                                  encoder=encoder, style=style)
        assert memory.config == direct
