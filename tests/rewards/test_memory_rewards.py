"""Memory-R / Memory-R+ rewards.

Hand-computed cases use a lookup-table encoder (texts mapped to chosen unit vectors) so the
formulas can be checked to the digit; behavioural properties use the real all-MiniLM-L6-v2
encoder; the end-to-end test scores real SmolLM2-135M completions.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from transformers import TrainerState

from memrl.encoders import Encoder
from memrl.rewards import MemoryRewardConfig, MemoryRPlus, build_rewards, reasoning_span


class TableEncoder:
    """Deterministic text -> vector table (picklable, unlike a lambda)."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def __call__(self, texts):
        return np.array([self.table[t] for t in texts], dtype=np.float32)


def state(step: int) -> TrainerState:
    s = TrainerState()
    s.global_step = step
    return s


s2 = math.sqrt(0.5)
TABLE = {
    "Q1": [1.0, 0.0, 0.0],
    "Q2": [0.0, 1.0, 0.0],
    "right-a": [1.0, 0.0, 0.0],
    "right-b": [0.0, 1.0, 0.0],
    "wrong-a": [0.0, 0.0, 1.0],
    "new": [s2, 0.0, s2],
}


def table_encoder() -> Encoder:
    return Encoder("table", fn=TableEncoder(TABLE), dim=3)


def test_empty_memory_gives_neutral_values():
    m = MemoryRPlus(encoder=table_encoder(), memory_explore_warmup_steps=0, memory_store="completion")
    first = m.compute(prompts=["Q1"] * 3, completions=["right-a", "right-b", "wrong-a"],
                      answer=["1", "1", "1"], question=["Q1"] * 3, trainer_state=state(0))
    # nothing retrieved: exploit 0 ("no pull"), explore 1 ("all novel"), raw values NaN
    assert np.isnan(first["exploit_raw"]).all() and np.isnan(first["explore_raw"]).all()
    assert first["exploit"].tolist() == pytest.approx([0.0] * 3, abs=1e-12) and first["explore"].tolist() == pytest.approx([1.0] * 3, abs=1e-12)
    # neutral values are not fed to the normalisers
    assert len(m.exploit_norm.values) == 0 and len(m.explore_norm.values) == 0


def _outcome_from_text(prompts=None, completions=None, **kwargs):
    return [1.0 if c.startswith("right") else 0.0 for c in completions]


def test_formulas_match_the_paper_by_hand():
    enc = table_encoder()
    m = MemoryRPlus(encoder=enc, outcome=_outcome_from_text, memory_explore_warmup_steps=0,
                    memory_norm_eps=0.0, memory_store="completion")
    m.compute(completions=["right-a", "right-b", "wrong-a"], question=["Q1"] * 3, trainer_state=state(0))
    assert (len(m.success_memory), m.success_memory.num_values) == (1, 2)
    assert (len(m.failure_memory), m.failure_memory.num_values) == (1, 1)

    out = m.compute(completions=["right-a", "wrong-a", "new"], question=["Q1"] * 3, trainer_state=state(1))
    # success centroid of Q1 = (0.5, 0.5, 0); exploit = -||a - c||
    c = np.array([0.5, 0.5, 0.0])
    expected_exploit = [-np.linalg.norm(np.array(TABLE[t]) - c) for t in ("right-a", "wrong-a", "new")]
    np.testing.assert_allclose(out["exploit_raw"], expected_exploit, rtol=1e-6)
    # explore = 1 - max cos to the failures {wrong-a}: right-a 1-0, wrong-a 1-1, new 1-s2
    np.testing.assert_allclose(out["explore_raw"], [1.0, 0.0, 1.0 - s2], atol=1e-6)
    # min-max over the window (this batch only, eps=0): explore -> [1, 0, (1-s2)/1]
    np.testing.assert_allclose(out["explore"], [1.0, 0.0, 1.0 - s2], atol=1e-6)
    lo, hi = min(expected_exploit), max(expected_exploit)
    np.testing.assert_allclose(out["exploit"], [(v - lo) / (hi - lo) for v in expected_exploit], atol=1e-6)


def test_weights_and_memory_r_has_no_explore():
    enc = table_encoder()
    m = MemoryRPlus(encoder=enc, outcome=_outcome_from_text, memory_explore=False,
                    memory_exploit_weight=2.0, memory_explore_warmup_steps=0, memory_store="completion")
    assert [f.__name__ for f in m.reward_functions()] == ["memory_exploit_reward"]
    m.compute(completions=["right-a", "wrong-a"], question=["Q1"] * 2)
    out = m.compute(completions=["right-a", "new"], question=["Q1"] * 2)
    assert out["exploit"].max() == pytest.approx(2.0, abs=1e-6)  # normalised max 1, times λ_s = 2
    assert len(m.failure_memory) == 0 and out["explore"].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)


def test_reference_write_then_score_semantics():
    enc = table_encoder()
    ours = MemoryRPlus(encoder=enc, outcome=_outcome_from_text, memory_explore_warmup_steps=0, memory_store="completion")
    ref = MemoryRPlus(encoder=enc, outcome=_outcome_from_text, memory_explore_warmup_steps=0, memory_store="completion",
                      memory_semantics="write_then_score")
    batch = dict(completions=["wrong-a", "new"], question=["Q1", "Q1"])
    ours_out, ref_out = ours.compute(**batch), ref.compute(**batch)
    # reference: each wrong answer is inserted before being scored, so its explore raw is exactly 0
    assert ref_out["explore_raw"].tolist() == [pytest.approx(0.0, abs=1e-6)] * 2
    # ours: first batch has no failures to compare with: nothing retrieved, neutral novelty
    assert np.isnan(ours_out["explore_raw"]).all() and ours_out["explore"].tolist() == pytest.approx([1.0, 1.0], abs=1e-12)


def test_warmup_counts_optimizer_steps():
    m = MemoryRPlus(encoder=table_encoder(), outcome=_outcome_from_text, memory_explore_warmup_steps=3,
                    memory_store="completion")
    batch = dict(completions=["wrong-a", "new"], question=["Q1", "Q1"])
    for step in (0, 1, 2):
        assert m.compute(**batch, trainer_state=state(step))["explore"].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    # at step 3 explore switches on and reads the failures written during warm-up {wrong-a, new}
    out = m.compute(completions=["wrong-a", "right-a"], question=["Q1", "Q1"], trainer_state=state(3))
    np.testing.assert_allclose(out["explore_raw"], [0.0, 1.0 - s2], atol=1e-6)
    assert out["explore"][1] > 0.99


# --------------------------------------------------------------------------- real encoder
QUESTIONS = ["What is 12 + 30?", "Tom has 3 bags of 4 apples. How many apples?"]
COMPLETIONS = [
    "<think>12 + 30 = 42</think><answer>42</answer>",
    "<think>12 plus 30 is 43</think><answer>43</answer>",
    "<think>add the tens: 10 + 30 = 40, then 2 more</think><answer>42</answer>",
    "",  # an empty completion is a real output and is scored
    "<think>3 * 4 = 12</think><answer>12</answer>",
    "<think>3 + 4 = 7</think><answer>7</answer>",
    "<think>bags times apples: 12</think><answer>12</answer>",
    "I do not know",
]
GOLD = ["42"] * 4 + ["12"] * 4
QCOL = [QUESTIONS[0]] * 4 + [QUESTIONS[1]] * 4


def real_rewards(encoder, **overrides) -> MemoryRPlus:
    return MemoryRPlus(encoder=encoder, **{"memory_explore_warmup_steps": 0, **overrides})


def test_two_questions_stay_under_their_own_keys(encoder):
    m = real_rewards(encoder)
    prompts = [[{"role": "system", "content": "sys"}, {"role": "user", "content": q}] for q in QCOL]
    conv = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    m.compute(prompts=prompts, completions=conv, answer=GOLD)  # no question column: keys from prompts
    assert sorted(m.success_memory.key_ids()) == sorted(QUESTIONS)
    # question 0 had 2 right answers, question 1 had 2 right answers; failures likewise
    assert m.success_memory.values_of(QUESTIONS[0]).shape[0] == 2
    assert m.failure_memory.values_of(QUESTIONS[1]).shape[0] == 2
    np.testing.assert_allclose(m.success_memory.values_of(QUESTIONS[1]),
                               encoder.encode([reasoning_span(COMPLETIONS[4]), reasoning_span(COMPLETIONS[6])]),
                               atol=1e-5)


def test_rewards_are_permutation_invariant_within_a_batch(encoder):
    warm = dict(completions=COMPLETIONS, answer=GOLD, question=QCOL)
    new = ["<think>30 + 12 = 42</think><answer>42</answer>", "<think>I guess</think><answer>41</answer>",
           "<think>4 apples in 3 bags: 12</think><answer>12</answer>", "<answer>34</answer>"]
    gold, qcol = ["42", "42", "12", "12"], [QUESTIONS[0]] * 2 + [QUESTIONS[1]] * 2
    perm = [3, 0, 2, 1]
    a, b = real_rewards(encoder), real_rewards(encoder)
    for m in (a, b):
        m.compute(**warm)
    out_a = a.compute(completions=new, answer=gold, question=qcol)
    out_b = b.compute(completions=[new[i] for i in perm], answer=[gold[i] for i in perm],
                      question=[qcol[i] for i in perm])
    for key in ("exploit", "explore", "exploit_raw", "explore_raw"):
        np.testing.assert_allclose(out_b[key], out_a[key][perm], atol=1e-5)
    # every completion found its question's memories (K=1, both questions stored)
    assert np.isfinite(out_a["explore_raw"]).all() and np.isfinite(out_a["exploit_raw"]).all()
    # a wrong but novel answer earns explore reward (the reference code gave it 0)
    assert out_a["explore_raw"][1] > 0


def test_each_completion_encoded_once_per_step_and_metrics_logged(encoder):
    m = real_rewards(encoder)
    logged: dict[str, float] = {}
    kwargs = dict(prompts=QCOL, completions=COMPLETIONS, answer=GOLD, question=QCOL,
                  trainer_state=state(5), log_metric=lambda k, v: logged.__setitem__(k, v))
    before = encoder.texts_encoded
    exploit = m.exploit_reward(**kwargs)
    explore = m.explore_reward(**kwargs)  # second reward function: cached, no re-encoding, no second write
    spans = {reasoning_span(c) for c in COMPLETIONS}
    assert encoder.texts_encoded - before <= len(spans) + len(QUESTIONS)
    assert m.success_memory.num_values == 4 and m.failure_memory.num_values == 4  # written once
    assert len(exploit) == len(explore) == len(COMPLETIONS)
    assert logged["memory/success_keys"] == 2 and logged["memory/failure_values"] == 4
    assert m.exploit_reward.__name__ == "memory_exploit_reward" and m.explore_reward.__name__ == "memory_explore_reward"


def test_pickle_save_load_round_trip(encoder, tmp_path):
    m = real_rewards(encoder)
    m.compute(completions=COMPLETIONS, answer=GOLD, question=QCOL)
    clone = pickle.loads(pickle.dumps(m))  # picklable; the encoder model reloads lazily
    assert clone.success_memory.key_ids() == m.success_memory.key_ids()
    pickle.loads(pickle.dumps(m.explore_reward))
    m.save(tmp_path / "mem")
    fresh = real_rewards(encoder)
    fresh.load(tmp_path / "mem")
    for name in ("success_memory", "failure_memory"):
        a, b = getattr(m, name), getattr(fresh, name)
        assert a.key_ids() == b.key_ids()
        for k in a.key_ids():
            np.testing.assert_array_equal(a.values_of(k), b.values_of(k))
    assert list(fresh.exploit_norm.values) == list(m.exploit_norm.values)
    # both continue identically
    batch = dict(completions=COMPLETIONS[::-1], answer=GOLD[::-1], question=QCOL[::-1])
    np.testing.assert_allclose(m.compute(**batch)["exploit"], fresh.compute(**batch)["exploit"], atol=1e-6)


def test_bad_input_errors(encoder):
    m = real_rewards(encoder)
    with pytest.raises(TypeError, match=r"completions\[1\]"):
        m.compute(completions=["a", None], answer=["1", "2"], question=["q", "q"])
    with pytest.raises(ValueError, match="mismatched lengths: question=1"):
        m.compute(completions=["a", "b"], answer=["1", "2"], question=["q"])
    with pytest.raises(ValueError, match="dataset column 'answer'"):
        m.compute(completions=["a"], question=["q"])
    with pytest.raises(ValueError, match="memory_semantics"):
        MemoryRewardConfig(memory_semantics="whatever")
    with pytest.raises(ValueError, match=r"unknown MemoryRewardConfig option\(s\) \[.memory_topk.\] \(did you mean memory_top_k"):
        MemoryRPlus(encoder=encoder, memory_topk=3)


def test_build_rewards_methods(encoder):
    names = lambda fs: [f.__name__ for f in fs]  # noqa: E731
    r1, mem = build_rewards("r1")
    assert mem is None and "correctness_reward" in names(r1)
    cos, _ = build_rewards("cosine", max_completion_length=64)
    assert names(cos)[0] == "cosine_length_reward"
    mr, mem = build_rewards("memory-r", encoder=encoder)
    assert names(mr)[-1] == "memory_exploit_reward" and not mem.config.memory_explore
    mrp, mem = build_rewards("memory-r+", encoder=encoder, style="reasoning")
    assert names(mrp)[-2:] == ["memory_exploit_reward", "memory_explore_reward"]
    assert mem.config.memory_style == "reasoning"
    with pytest.raises(ValueError, match="unknown method"):
        build_rewards("memory-q")


def test_end_to_end_with_real_smollm2_completions(encoder, smollm2):
    from memrl.lm.loading import generate
    from memrl.rewards import r1_rewards

    model, tokenizer = smollm2
    questions = ["What is 7 + 5?", "What is 9 + 3?"]
    system = "Think step by step inside <think> </think>, then give the final number inside <answer> </answer>."
    prompts = [[{"role": "system", "content": system}, {"role": "user", "content": q}] for q in questions]
    outs = generate(model, tokenizer, prompts, max_new_tokens=40, temperature=0.9, num_return_sequences=3, seed=0)
    completions = [[{"role": "assistant", "content": o["text"]}] for o in outs]
    rep_prompts = [prompts[o["prompt_index"]] for o in outs]
    kwargs = dict(prompts=rep_prompts, completions=completions, answer=["12"] * 6,
                  question=[questions[o["prompt_index"]] for o in outs],
                  completion_ids=[o["token_ids"] for o in outs], trainer_state=state(0))
    m = real_rewards(encoder)
    # step 0 fills the memories; step 1 reads them
    m.compute(**kwargs)
    kwargs["trainer_state"] = state(1)
    exploit, explore = m.exploit_reward(**kwargs), m.explore_reward(**kwargs)
    for r in r1_rewards():
        assert len(r(**kwargs)) == 6
    assert len(exploit) == len(explore) == 6
    assert all(np.isfinite(exploit)) and all(np.isfinite(explore))
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in exploit + explore)
    assert len(m.success_memory) + len(m.failure_memory) >= 2  # both questions were stored somewhere
    assert m.success_memory.num_values + m.failure_memory.num_values == 12  # 6 per step
