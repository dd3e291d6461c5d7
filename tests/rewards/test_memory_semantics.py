"""Memory-R+ semantics: ``reference`` (checked against an independent step-by-step
re-implementation of the spec's description), ``group_loo`` (order invariance, brute-force
leave-one-out), the preset options and their precedence, and the flat-window normaliser.

Real all-MiniLM-L6-v2 encoder, realistic GSM8K-style completions (tests/helpers/gsm8k_completions.py);
no LLM.
"""

from __future__ import annotations

import logging
import math
from collections import deque

import numpy as np
import pytest

from helpers.gsm8k_completions import CALLS, COMPLETIONS, Q, make_call
from memrl.memory import EpisodicMemory
from memrl.rewards import MemoryRewardConfig, MemoryRPlus
from memrl.rewards.memory_rewards import reference_answer, reference_gold, reference_span, semantics_preset
from memrl.rewards.scoring import RunningMinMax, SequentialMinMax


# --------------------------------------------------------------------------- independent reference
def _after_last(text: str, tag: str) -> str:
    i = text.rfind(tag)
    return text if i < 0 else text[i + len(tag):]


def _before_first(text: str, tag: str) -> str:
    i = text.find(tag)
    return text if i < 0 else text[:i]


class _DictMemory:
    """The reference's memory as the spec describes it: question -> list of response vectors,
    at most ``max_keys`` questions (oldest evicted) and ``max_values`` responses each."""

    def __init__(self, max_keys: int, max_values: int) -> None:
        self.max_keys, self.max_values = max_keys, max_values
        self.order: list[str] = []
        self.key_vec: dict[str, np.ndarray] = {}
        self.responses: dict[str, list[np.ndarray]] = {}

    def insert(self, question: str, q_vec: np.ndarray, vec: np.ndarray) -> None:
        if question in self.responses:
            self.responses[question].append(vec)
            if len(self.responses[question]) > self.max_values:
                del self.responses[question][0]
            return
        if len(self.order) >= self.max_keys:
            oldest = self.order.pop(0)
            del self.key_vec[oldest], self.responses[oldest]
        self.order.append(question)
        self.key_vec[question] = q_vec
        self.responses[question] = [vec]

    def pool(self, q_vec: np.ndarray, k: int) -> list[np.ndarray]:
        # nearest k questions by L2 distance (faiss IndexFlatL2 in the reference)
        dist = [(float(np.linalg.norm(self.key_vec[q] - q_vec)), t, q) for t, q in enumerate(self.order)]
        dist.sort()
        out: list[np.ndarray] = []
        for _, _, q in dist[:k]:
            out.extend(self.responses[q])
        return out


def _minmax_step(history: deque, x: float, flat: float) -> float:
    history.append(x)
    lo, hi = min(history), max(history)
    return flat if hi == lo else (x - lo) / (hi - lo)


def independent_reference(calls, encoder, *, explore=True, k=1, warmup_keys=500, prompts_per_call=2):
    """Plain step-by-step re-implementation of the spec's "reference's behaviour, precisely"."""
    success = _DictMemory(10_000, 100 if explore else 1000)
    failure = _DictMemory(10_000, 100)
    hist_exploit: deque = deque(maxlen=100)
    hist_explore: deque = deque(maxlen=100)
    results = []
    for call in calls:
        texts, questions, golds = call["completions"], call["question"], call["answer"]
        g = 1
        while g < len(questions) and questions[g] == questions[0]:
            g += 1
        exploit, novelty = [], []
        for start in range(0, len(texts), prompts_per_call * g):
            chunk = range(start, min(start + prompts_per_call * g, len(texts)))
            key = questions[start]  # prompts[0] of the micro-batch
            key_vec = encoder.encode([key])[0]
            right, vecs = {}, {}
            for i in chunk:
                answer = _before_first(_after_last(texts[i], "<answer>"), "</answer>").strip()
                gold = golds[i].split("####")[1].strip()
                right[i] = answer == gold
                stored = _before_first(_after_last(texts[i], "<reasoning>"), "</reasoning>").strip()
                vecs[i] = encoder.encode([stored])[0]
            for i in chunk:  # the exploit reward function over the micro-batch
                if right[i]:
                    success.insert(key, key_vec, vecs[i])
                pool = success.pool(key_vec, k)
                if not pool:
                    score = 1.0
                else:
                    d = float(np.linalg.norm(vecs[i] - np.mean(np.array(pool), axis=0)))
                    score = _minmax_step(hist_exploit, d, flat=d)
                exploit.append(1.0 - score)
            for i in chunk:  # then the explore reward function
                if not explore:
                    novelty.append(0.0)
                    continue
                if not right[i]:
                    failure.insert(key, key_vec, vecs[i])
                if len(failure.order) < warmup_keys:
                    novelty.append(0.0)
                    continue
                pool = failure.pool(key_vec, k)
                if not pool:
                    novelty.append(1.0)
                    continue
                p = np.array(pool)
                cos = (p @ vecs[i]) / (np.linalg.norm(p, axis=1) * np.linalg.norm(vecs[i]))
                novelty.append(_minmax_step(hist_explore, float(1 - np.max(cos)), flat=0.0))
        results.append((np.array(exploit), np.array(novelty), success, failure))
    return results


@pytest.mark.parametrize("explore,k,warmup_keys", [(True, 1, 2), (True, 2, 0), (False, 1, 500)])
def test_reference_matches_an_independent_step_by_step_implementation(encoder, explore, k, warmup_keys):
    m = MemoryRPlus(MemoryRewardConfig.reference(explore=explore, memory_top_k=k,
                                                 memory_explore_warmup_keys=warmup_keys), encoder=encoder)
    assert m.config.memory_micro_batch_prompts == 2 and m.config.memory_group_size == 0  # G inferred: 4
    ours = [m.compute(**call) for call in CALLS]
    theirs = independent_reference(CALLS, encoder, explore=explore, k=k, warmup_keys=warmup_keys)
    for mine, (exploit, explore_r, success, failure) in zip(ours, theirs):  # noqa: B007 (the last memories are compared below)
        np.testing.assert_allclose(mine["exploit"], exploit, atol=1e-6, rtol=0)
        np.testing.assert_allclose(mine["explore"], explore_r, atol=1e-6, rtol=0)
    # same memories: keys (the micro-batches' first questions) and the number of stored responses
    for ours_mem, theirs_mem in ((m.success_memory, success), (m.failure_memory, failure)):
        assert ours_mem.key_ids() == theirs_mem.order
        assert [ours_mem.values_of(q).shape[0] for q in theirs_mem.order] == \
            [len(theirs_mem.responses[q]) for q in theirs_mem.order]
    # 6 micro-batches of 2 questions over 3 calls; keys are their first questions only
    firsts = {call["question"][start] for call in CALLS for start in (0, 8)}
    assert set(m.success_memory.key_ids()) | set(m.failure_memory.key_ids()) <= firsts
    assert m.success_memory.num_values + m.failure_memory.num_values == (48 if explore else m.success_memory.num_values)
    first = np.concatenate([r["exploit"] for r in ours])
    assert np.ptp(first) > 0.5  # real signal, not a constant
    if explore and warmup_keys <= 2:
        assert np.ptp(np.concatenate([r["explore"] for r in ours])) > 0.5


def test_reference_explore_waits_for_500_failure_keys(encoder):
    m = MemoryRPlus(MemoryRewardConfig.reference(), encoder=encoder)
    assert m.config.memory_explore_warmup_keys == 500
    for call in CALLS:
        out = m.compute(**call)
        assert out["explore"].tolist() == [0.0] * len(call["completions"])
        assert np.isnan(out["explore_raw"]).all()
    assert 0 < len(m.failure_memory) < 500 and len(m.explore_norm.values) == 0  # nothing fed during warm-up


def test_reference_success_store_and_key_rules(encoder):
    # exact string match after ####, no normalisation; a bare answer without tags succeeds
    gold = Q["weng"][1]
    assert reference_gold(gold) == "10" and reference_gold(" 10 ") == "10"
    assert [reference_answer(t) == "10" for t in COMPLETIONS["weng"]] == \
        [True, True, False, False, False, False, False, True]
    assert reference_answer("10") == "10" and reference_answer("<answer> $10 </answer>") == "$10"
    # stored text: after the last <reasoning>, up to </reasoning>, stripped; no tags: whole, stripped
    assert reference_span(COMPLETIONS["weng"][7]) == "12 / 60 = 0.2, 0.2 * 50 = 10"
    assert reference_span("  I do not know ") == "I do not know"
    assert reference_span("<reasoning>\n a\n<answer>1</answer>") == "a\n<answer>1</answer>"
    # first_prompt key: one call of two prompts = one micro-batch, all filed under the first question
    m = MemoryRPlus(MemoryRewardConfig.reference(memory_micro_batch_prompts=2), encoder=encoder)
    call = make_call(["clips", "weng"], 4, 5)
    m.compute(**call)
    assert m.success_memory.key_ids() == [Q["clips"][0]] or m.failure_memory.key_ids() == [Q["clips"][0]]
    assert set(m.success_memory.key_ids()) | set(m.failure_memory.key_ids()) == {Q["clips"][0]}
    # the same call under memrl's own-question key files each question under itself
    own = MemoryRPlus(MemoryRewardConfig.reference(memory_key_rule="own"), encoder=encoder)
    own.compute(**call)
    assert set(own.success_memory.key_ids()) | set(own.failure_memory.key_ids()) == {Q["clips"][0], Q["weng"][0]}


def test_micro_batches_follow_the_group_size(encoder):
    # 2 prompts x G per chunk: with G = 2 set explicitly, a call of 4 questions x 4 is 4 chunks of
    # 4 completions, each keyed by its first question (here the 1st and 3rd question's texts)
    m = MemoryRPlus(MemoryRewardConfig.reference(memory_group_size=2), encoder=encoder)
    call = make_call(["clips", "weng"], 4, 6)
    assert [lo for lo, _ in m._chunks(call["question"])] == [0, 4]
    inferred = MemoryRPlus(MemoryRewardConfig.reference(), encoder=encoder)
    assert inferred._chunks(call["question"]) == [(0, 8)]
    one = MemoryRPlus(MemoryRewardConfig.reference(memory_micro_batch_prompts=1), encoder=encoder)
    assert one._chunks(call["question"]) == [(0, 4), (4, 8)]
    whole = MemoryRPlus(encoder=encoder)
    assert whole._chunks(call["question"]) == [(0, 8)]


def test_reference_preset_values_and_precedence(caplog):
    ref = MemoryRewardConfig(memory_semantics="reference")
    assert (ref.memory_key_rule, ref.memory_micro_batch_prompts, ref.memory_success_rule, ref.memory_store,
            ref.memory_normalizer, ref.memory_norm_tolerance, ref.memory_norm_flat, ref.memory_warmup_unit,
            ref.memory_max_keys, ref.memory_max_values) == (
        "first_prompt", 2, "exact_answer", "reference", "sequential", 0.0, "reference", "failure_keys",
        10_000, 100)
    assert MemoryRewardConfig(memory_semantics="reference", memory_explore=False).memory_max_values == 1000
    # memrl's semantics keep memrl's values, so existing configs resolve as before
    for semantics in ("score_then_write", "write_then_score", "group_loo"):
        cfg = MemoryRewardConfig(memory_semantics=semantics)
        assert {k: getattr(cfg, k) for k in semantics_preset(semantics)} == semantics_preset("score_then_write")
    # an explicit option wins over the preset
    mixed = MemoryRewardConfig(memory_semantics="reference", memory_key_rule="own", memory_max_values=7)
    assert mixed.memory_key_rule == "own" and mixed.memory_max_values == 7 and mixed.memory_store == "reference"
    # re-deriving follows the new semantics/explore for filled options only (registry does this)
    assert ref.replace(memory_explore=False).memory_max_values == 1000
    back = mixed.replace(memory_semantics="score_then_write")
    assert back.memory_key_rule == "own" and back.memory_max_values == 7 and back.memory_store == "reasoning"
    rebuilt = MemoryRewardConfig.from_dict({**ref.__dict__, "memory_explore": False, "memory_store": "completion"})
    assert rebuilt.memory_max_values == 1000 and rebuilt.memory_store == "completion"
    from memrl.encoders import Encoder
    from memrl.rewards import build_rewards

    tiny = Encoder("t", fn=lambda t: np.ones((len(t), 2)), dim=2)
    _, memory_r = build_rewards("memory-r", memory_config=ref, encoder=tiny, style="reasoning")
    assert memory_r.config.memory_max_values == 1000 and memory_r.success_memory.max_values == 1000
    # asdict holds concrete values
    from dataclasses import asdict

    assert None not in {asdict(ref)[k] for k in semantics_preset("reference")}
    assert MemoryRewardConfig.from_dict(asdict(ref)) == ref
    # the helper and the deviation report
    assert MemoryRewardConfig.reference().reference_deviations() == {}
    assert MemoryRewardConfig.reference(memory_top_k=20).reference_deviations() == {"memory_top_k": (20, 1)}
    with caplog.at_level(logging.WARNING):
        MemoryRPlus(MemoryRewardConfig.reference(memory_max_keys=7473), encoder=tiny)
    assert "memory_max_keys=7473 (reference 10000)" in caplog.text


@pytest.mark.parametrize("option,value", [
    ("memory_key_rule", "last_prompt"), ("memory_success_rule", "close_enough"), ("memory_store", "answer"),
    ("memory_normalizer", "global"), ("memory_norm_flat", "half"), ("memory_warmup_unit", "epochs"),
    ("memory_micro_batch_prompts", -1), ("memory_group_size", -2), ("memory_norm_tolerance", -1e-3),
    ("memory_explore_warmup_keys", -5), ("memory_max_keys", 0), ("memory_micro_batch_prompts", "2"),
])
def test_new_options_are_validated(option, value):
    with pytest.raises(ValueError, match=option):
        MemoryRewardConfig(**{option: value})


# --------------------------------------------------------------------------- normaliser
def test_flat_window_gives_a_neutral_value_instead_of_stretched_noise():
    noise = np.array([0.0, 1.2e-7, -1.2e-7])  # explore raw values measured on self-matches
    old = RunningMinMax(window=100, eps=1e-8)  # tolerance 0: the previous behaviour
    stretched = old.update_and_normalize(noise)
    assert stretched.max() - stretched.min() > 0.9  # rounding noise stretched over 0-1
    new = RunningMinMax(window=100, eps=1e-8, tolerance=1e-6)
    assert new.update_and_normalize(noise).tolist() == [0.0, 0.0, 0.0]
    assert list(new.values) == noise.tolist()  # still fed to the window
    # a real spread afterwards is normalised as usual
    np.testing.assert_allclose(new.update_and_normalize(np.array([0.5])), [1.0], atol=1e-6)
    seq = SequentialMinMax(window=100, tolerance=1e-6)
    assert seq.update_and_normalize(noise).tolist() == [0.0, 0.0, 0.0]
    # the reference's sequential rule: exact max == min only; flat exploit = raw distance
    ref = SequentialMinMax(window=100, tolerance=0.0, flat_value=1.0, flat_slope=1.0)
    out = ref.update_and_normalize(np.array([-0.25, -0.25, 1.2e-7 - 0.25]))
    assert out[:2].tolist() == [0.75, 0.75] and out[2] == pytest.approx(1.0)


def test_flat_window_neutral_through_the_rewards(encoder):
    # write_then_score: wrong answers are scored against themselves -> explore raw is pure noise
    m = MemoryRPlus(encoder=encoder, memory_semantics="write_then_score", memory_explore_warmup_steps=0)
    texts = [c for c in COMPLETIONS["clips"] if reference_answer(c) not in ("72",)]
    out = m.compute(completions=texts, question=[Q["clips"][0]] * len(texts), answer=["0"] * len(texts))
    assert np.all(np.abs(out["explore_raw"]) < 1e-6)
    assert out["explore"].tolist() == [0.0] * len(texts)
    old = MemoryRPlus(encoder=encoder, memory_semantics="write_then_score", memory_explore_warmup_steps=0,
                      memory_norm_tolerance=0.0)
    stretched = old.compute(completions=texts, question=[Q["clips"][0]] * len(texts), answer=["0"] * len(texts))
    assert np.any(out["explore_raw"] != 0) and stretched["explore"].max() > 0.5  # what it used to do


# --------------------------------------------------------------------------- group_loo
def _loo_batch():
    """Memory before the batch from ``warm``; the batch ends with a question new to the memory
    with one right and one wrong answer (each the only completion its memory would file under
    that question, so it must be scored as if the question were not there)."""
    warm = [make_call(["clips", "weng", "betty"], 6, 10), make_call(["clips", "betty"], 4, 11)]
    batch = make_call(["clips", "weng", "betty"], 6, 12)
    for j in (0, 2):
        batch["completions"].append(COMPLETIONS["james"][j])
        batch["question"].append(Q["james"][0])
        batch["answer"].append(Q["james"][1])
    return warm, batch


def test_group_loo_is_permutation_invariant(encoder):
    warm, batch = _loo_batch()
    n = len(batch["completions"])

    def run(perm):
        m = MemoryRPlus(encoder=encoder, memory_semantics="group_loo", memory_explore_warmup_steps=0, memory_top_k=2)
        for call in warm:
            m.compute(**call)
        return m.compute(**{k: [v[i] for i in perm] for k, v in batch.items()})

    base = run(list(range(n)))
    assert np.isfinite(base["exploit_raw"]).all() and np.isfinite(base["explore_raw"]).all()
    rng = np.random.default_rng(0)
    for _ in range(4):
        perm = rng.permutation(n)
        out = run(perm)
        for key in ("exploit", "explore", "exploit_raw", "explore_raw"):
            np.testing.assert_allclose(out[key], base[key][perm], atol=1e-9, rtol=0)


def test_group_loo_equals_brute_force_leave_one_out(encoder):
    warm, batch = _loo_batch()
    m = MemoryRPlus(encoder=encoder, memory_semantics="group_loo", memory_explore_warmup_steps=0, memory_top_k=2)
    for call in warm:
        m.compute(**call)
    before = {name: getattr(m, name).state_dict() for name in ("success_memory", "failure_memory")}
    out = m.compute(**batch)
    texts = batch["completions"]
    spans = encoder.encode([_reasoning(t) for t in texts])
    qv = encoder.encode(batch["question"])
    right = np.array(m.outcome(completions=texts, answer=batch["answer"])) > 0.5
    for i in range(len(texts)):
        mems = {}
        for name, written in (("success_memory", right), ("failure_memory", ~right)):
            mem = EpisodicMemory(dim=encoder.dim, max_keys=10_000, max_values=10_000)
            state = dict(before[name], config={**before[name]["config"], "max_keys": 10_000, "max_values": 10_000})
            mem.load_state_dict(state)
            others = [j for j in range(len(texts)) if j != i and written[j]]
            if others:
                mem.add([batch["question"][j] for j in others], qv[others], spans[others])
            mems[name] = mem
        cen, cnt = mems["success_memory"].centroids(qv[i : i + 1], 2)
        expected_exploit = -np.linalg.norm(spans[i] - cen[0]) if cnt[0] else np.nan
        mc = mems["failure_memory"].max_similarity(qv[i : i + 1], 2, [spans[i][None]])[0][0] if len(mems["failure_memory"]) else np.nan
        np.testing.assert_allclose(out["exploit_raw"][i], expected_exploit, atol=1e-5)
        np.testing.assert_allclose(out["explore_raw"][i], 1 - mc, atol=1e-5)
    # the new question's wrong answer is read against other questions' failures, not itself
    # (write_then_score would give it exactly 0); a repeat of a stored failure gets ~0
    assert not right[-1] and out["explore_raw"][-1] > 0.05
    assert Q["james"][0] in m.success_memory and Q["james"][0] in m.failure_memory  # written after scoring


def _reasoning(text: str) -> str:
    from memrl.rewards import reasoning_span

    return reasoning_span(text, "think")


# --------------------------------------------------------------------------- persistence
def test_reference_save_load_round_trip(encoder, tmp_path):
    cfg = MemoryRewardConfig.reference(memory_explore_warmup_keys=1)
    m = MemoryRPlus(cfg, encoder=encoder)
    for call in CALLS[:2]:
        m.compute(**call)
    assert len(m.exploit_norm.values) and len(m.explore_norm.values)
    m.save(tmp_path / "mem")
    fresh = MemoryRPlus(cfg, encoder=encoder)
    fresh.load(tmp_path / "mem")
    assert isinstance(fresh.exploit_norm, SequentialMinMax)
    assert list(fresh.exploit_norm.values) == list(m.exploit_norm.values)
    assert list(fresh.explore_norm.values) == list(m.explore_norm.values)
    assert fresh.failure_memory.key_ids() == m.failure_memory.key_ids()
    assert (fresh.success_memory.max_keys, fresh.success_memory.max_values) == (10_000, 100)
    a, b = m.compute(**CALLS[2]), fresh.compute(**CALLS[2])
    for key in ("exploit", "explore"):
        np.testing.assert_array_equal(a[key], b[key])
    # a state saved with the sequential normaliser does not load into a batch-normaliser config
    batch_cfg = MemoryRPlus(encoder=encoder)
    with pytest.raises(ValueError, match="sequential"):
        batch_cfg.load(tmp_path / "mem")
    assert math.isfinite(float(a["exploit"].sum()))
