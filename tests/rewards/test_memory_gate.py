"""``memory_gate="zero_variance"``: the intrinsic rewards only in GRPO groups whose correctness does
not vary, R1's rewards alone elsewhere, the memory written from every group; under every
semantics, in any order of the batch, and across two processes.

Real all-MiniLM-L6-v2 encoder, the realistic GSM8K-style completions of
``helpers/gsm8k_completions``, the real R1 rewards; no LLM.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers.gsm8k_completions import COMPLETIONS, Q
from memrl.rewards import MemoryRewardConfig, build_rewards
from memrl.rewards.semantics import SEMANTICS

# Three steps of 4 questions x 4 completions (indices into COMPLETIONS). "same" groups are all right
# or all wrong, "mixed" ones half and half, by the numeric check and the reference's exact match alike.
STEPS = [
    [("clips", [0, 1, 3, 6], "same"), ("weng", [2, 5, 6, 2], "same"), ("betty", [0, 2, 1, 3], "mixed"),
     ("james", [0, 2, 3, 5], "mixed")],
    [("betty", [0, 1, 5, 0], "same"), ("clips", [0, 2, 3, 7], "mixed"), ("james", [2, 3, 2, 3], "same"),
     ("weng", [0, 2, 1, 5], "mixed")],
    [("james", [0, 2, 3, 5], "mixed"), ("weng", [2, 5, 6, 2], "same"), ("clips", [0, 1, 3, 6], "same"),
     ("betty", [1, 3, 5, 2], "mixed")],
]


def batch(step: int, order: np.ndarray | None = None) -> dict:
    out = {"completions": [], "question": [], "answer": [], "mixed": []}
    for name, picks, kind in STEPS[step]:
        for j in picks:
            out["completions"].append(COMPLETIONS[name][j])
            out["question"].append(Q[name][0])
            out["answer"].append(Q[name][1])
            out["mixed"].append(kind == "mixed")
    if order is not None:
        out = {k: [v[i] for i in order] for k, v in out.items()}
    mixed = np.array(out.pop("mixed"))
    return {**out, "trainer_state": _State(step)}, mixed


class _State:
    def __init__(self, step: int) -> None:
        self.global_step = step


def reward_set(name: str, gate: str, encoder):
    """The memory-r+ reward set (R1's five rewards, exploit, explore), explore on from the start."""
    config = MemoryRewardConfig(memory_semantics=name, memory_gate=gate, memory_explore_warmup_steps=0,
                                memory_explore_warmup_keys=1, memory_top_k=2)
    funcs, memory = build_rewards("memory-r+", memory_config=config, encoder=encoder, style="reasoning")
    return funcs, memory


def call(funcs, kwargs, log_metric=None) -> np.ndarray:
    """Every reward function once on the batch, as TRL calls them: ``(n, 7)`` values."""
    extra = {"log_metric": log_metric} if log_metric is not None else {}
    return np.stack([np.asarray(f(**kwargs, **extra), float) for f in funcs], axis=1)


@pytest.mark.parametrize("name", list(SEMANTICS))
def test_the_gate_keeps_r1_alone_where_correctness_varies_and_changes_nothing_else(encoder, name):
    ungated, ungated_memory = reward_set(name, "none", encoder)
    gated, gated_memory = reward_set(name, "zero_variance", encoder)
    logged: dict[str, float] = {}
    removed = kept = 0.0
    for step in range(len(STEPS)):
        kwargs, mixed = batch(step)
        plain, gate = call(ungated, kwargs), call(gated, kwargs, logged.__setitem__)
        outcome = gated_memory.compute(**kwargs)["outcome"]  # the cached result: what decided success
        for g in range(4):  # the test's groups are what their names say, for the memory's success test
            assert (np.ptp(outcome[4 * g : 4 * g + 4]) > 0) == mixed[4 * g]
        # R1's five rewards are untouched; in a group with correctness variance the intrinsic ones are 0
        np.testing.assert_array_equal(gate[:, :5], plain[:, :5])
        assert gate[mixed, 5:].tolist() == [[0.0, 0.0]] * int(mixed.sum())
        assert gate[mixed].sum(axis=1) == pytest.approx(plain[mixed, :5].sum(axis=1), abs=1e-12)
        # a group without it gets the ungated values
        assert gate[~mixed, 5:] == pytest.approx(plain[~mixed, 5:], abs=1e-12)
        assert logged["memory/gated_frac"] == pytest.approx(0.5)
        removed += np.abs(plain[mixed, 5:]).sum()
        kept += np.abs(plain[~mixed, 5:]).sum()
        # the memory is written from every group: the same memories and normaliser windows
        for memory in ("success_memory", "failure_memory"):
            a, b = getattr(gated_memory, memory), getattr(ungated_memory, memory)
            assert a.key_ids() == b.key_ids()
            for key in a.key_ids():
                np.testing.assert_array_equal(a.values_of(key), b.values_of(key))
        for norm in ("exploit_norm", "explore_norm"):
            assert list(getattr(gated_memory, norm).values) == pytest.approx(list(getattr(ungated_memory, norm).values))
    assert removed > 0.5 and kept > 0.5  # the gate removed real intrinsic values and kept real ones


@pytest.mark.parametrize("name", list(SEMANTICS))
def test_the_gate_does_not_depend_on_the_order_of_the_batch(encoder, name):
    """Groups in another order, completions shuffled within them: the same completions are gated.
    Under an order-invariant semantics every value is the same, under the others only the gate."""
    rng = np.random.default_rng(4)
    group_order = [2, 0, 3, 1]
    order = np.concatenate([4 * g + rng.permutation(4) for g in group_order])
    results = []
    for perm in (np.arange(16), order):
        funcs, _ = reward_set(name, "zero_variance", encoder)
        for step in range(len(STEPS)):
            kwargs, mixed = batch(step, perm)
            values = call(funcs, kwargs)
        results.append((values[np.argsort(perm)], mixed[np.argsort(perm)]))
    (base, mixed), (shuffled, _) = results
    assert shuffled[mixed, 5:].tolist() == [[0.0, 0.0]] * int(mixed.sum())
    assert np.abs(base[~mixed, 5:]).sum() > 0.1
    if SEMANTICS[name].order_invariant:
        np.testing.assert_allclose(shuffled, base, atol=1e-9, rtol=0)


def test_the_gate_option_is_checked_and_logged_only_when_on(encoder):
    with pytest.raises(ValueError, match="memory_gate='sometimes' is not one of none, zero_variance"):
        MemoryRewardConfig(memory_gate="sometimes")
    assert MemoryRewardConfig().memory_gate == "none"
    funcs, _ = reward_set("score_then_write", "none", encoder)
    logged: dict[str, float] = {}
    call(funcs, batch(0)[0], logged.__setitem__)
    assert "memory/intrinsic_group_std" in logged and "memory/gated_frac" not in logged
    # read-only scoring gates the batch it is given, as compute would
    _, memory = reward_set("score_then_write", "zero_variance", encoder)
    kwargs, mixed = batch(0)
    preview = memory.score(**kwargs)
    assert preview["exploit"][mixed].tolist() == [0.0] * 8 and preview["explore"][mixed].tolist() == [0.0] * 8
    result = memory.compute(**kwargs)
    for key in ("exploit", "explore"):
        np.testing.assert_allclose(preview[key], result[key], atol=1e-12, rtol=0)
