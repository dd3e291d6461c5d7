"""HFScorer: prefix-cached scoring equals full-prompt scoring (real SmolLM2-135M)."""

import time

import numpy as np
import pytest
import torch

from memrl.lm import HFScorer
from memrl.lm.hf import common_prefix_length, longest_shared_start
from memrl.lm.loading import load_model, model_identity

PREFIX = (
    "Review: a dull, lifeless film that goes nowhere.\nSentiment: terrible\n\n"
    "Review: one of the warmest, funniest films of the year.\nSentiment: great\n\n"
)
# different lengths on purpose: right padding must not leak into the scores
SUFFIXES = [
    "Review: loved it.\nSentiment:",
    "Review: boring and far too long, I fell asleep twice before the end of it.\nSentiment:",
    "Review: an uneven but rewarding ride.\nSentiment:",
    "Review: bad.\nSentiment:",
    "Review: the best thing I have seen this year, truly remarkable work by everyone.\nSentiment:",
]


@pytest.fixture(scope="module")
def scorer():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core box: see tests/poem/conftest.py
    model, tok = load_model("smollm2-135m")
    yield HFScorer(model, tok, identity=model_identity("smollm2-135m"), batch_size=2)
    torch.set_num_threads(before)


def _both(scorer, prefix, suffixes, conts):
    scorer.prefix_cache = True
    cached = scorer.score(prefix, suffixes, conts)
    scorer.prefix_cache = False
    try:
        full = scorer.score(prefix, suffixes, conts)
    finally:
        scorer.prefix_cache = True
    return cached, full


def test_prefix_cache_matches_full_prompt_labels(scorer):
    calls = scorer.calls
    cached, full = _both(scorer, PREFIX, SUFFIXES, [" terrible", " great"])
    assert cached.logprob.shape == (5, 2)
    np.testing.assert_allclose(cached.logprob, full.logprob, atol=1e-4, rtol=0)
    assert scorer.calls - calls == 10  # one call per (prompt, query), both paths
    assert np.all(cached.logprob < 0)
    # the LM is a real scorer: the clearly positive and negative reviews go the right way
    pred = cached.logprob.argmax(axis=1)
    assert pred[0] == 1 and pred[3] == 0


def test_prefix_cache_matches_full_prompt_multi_token_choices(scorer):
    choices = [[" terrible movie", " great"], [" no", " yes indeed it is"], [" a b c", " d"],
               [" bad", " good"], [" x", " y z"]]
    cached, full = _both(scorer, PREFIX, SUFFIXES, choices)
    np.testing.assert_allclose(cached.logprob, full.logprob, atol=1e-4, rtol=0)
    assert cached.num_tokens[0, 0] == 2 and cached.num_tokens[1, 1] > 1
    # length normalisation divides by the token count
    np.testing.assert_allclose(cached.normalised(True), cached.logprob / cached.num_tokens)


def test_cached_prefix_is_not_mutated_between_calls(scorer):
    a = scorer.score(PREFIX, SUFFIXES[:3], [" terrible", " great"])
    b = scorer.score(PREFIX, SUFFIXES[:3], [" terrible", " great"])  # reuses the cached KV
    np.testing.assert_array_equal(a.logprob, b.logprob)


DEMOS = [
    "Review: a dull, lifeless film that goes nowhere.\nSentiment: terrible\n\n",
    "Review: one of the warmest, funniest films of the year.\nSentiment: great\n\n",
    "Review: clumsy, loud and much too long.\nSentiment: terrible\n\n",
]


def test_a_prefix_sharing_its_start_with_a_cached_one_reuses_it_and_scores_the_same(scorer):
    labels = [" terrible", " great"]
    first, second = DEMOS[0] + DEMOS[1], DEMOS[0] + DEMOS[2]  # the same first demonstration
    shared = common_prefix_length(scorer.tokenize(first), scorer.tokenize(second))
    assert shared >= len(scorer.tokenize(DEMOS[0]))  # the demonstration and the next "Review:"
    scorer.clear_cache()
    fresh = scorer.score(second, SUFFIXES, labels).logprob  # computed from scratch
    scorer.clear_cache()
    before = scorer.score(first, SUFFIXES, labels).logprob
    tokens = scorer.forward_tokens
    reused = scorer.score(second, SUFFIXES, labels).logprob
    suffix_tokens = sum(len(scorer.tokenize(q)) for q in SUFFIXES)
    # only the part after the shared demonstration (and the suffixes) went through the model
    assert scorer.forward_tokens - tokens == len(scorer.tokenize(second)) - shared + suffix_tokens
    np.testing.assert_allclose(reused, fresh, atol=1e-4, rtol=0)
    # the cache it was copied from is intact
    np.testing.assert_allclose(scorer.score(first, SUFFIXES, labels).logprob, before, atol=1e-6, rtol=0)
    # a prefix that starts a cached one costs (almost) no prefix forward: only the tokens where
    # tokenising it alone differs from tokenising it inside the longer prompt (the final "\n\n")
    alone = scorer.tokenize(DEMOS[0])
    unshared = len(alone) - common_prefix_length(alone, scorer.tokenize(second))
    assert unshared <= 1
    tokens = scorer.forward_tokens
    short = scorer.score(DEMOS[0], SUFFIXES, labels).logprob
    assert scorer.forward_tokens - tokens == unshared + suffix_tokens
    scorer.clear_cache()
    np.testing.assert_allclose(short, scorer.score(DEMOS[0], SUFFIXES, labels).logprob, atol=1e-4, rtol=0)


def test_longest_shared_start_picks_the_longest_run_caps_it_at_the_key_and_skips_short_ones():
    cached = [(1, 2, 9, 9), (1, 2, 3, 4, 5), (1, 2, 3, 4, 6)]
    # the longest run wins; of equal runs the first (least recently used) is taken
    assert longest_shared_start(cached, (1, 2, 3, 4, 7), min_shared=2) == ((1, 2, 3, 4, 5), 4)
    # a key that is the start of a cached prefix shares all of itself, not the cached length
    assert longest_shared_start(cached, (1, 2, 3), min_shared=2) == ((1, 2, 3, 4, 5), 3)
    # below the minimum (after the cap) nothing is reused
    assert longest_shared_start(cached, (1, 2, 3), min_shared=4) == (None, 0)
    assert longest_shared_start(cached, (7, 1, 2), min_shared=1) == (None, 0)
    assert longest_shared_start([], (1, 2), min_shared=1) == (None, 0)


def test_empty_prefix_and_bad_input(scorer):
    zero = scorer.score("", SUFFIXES[:2], [" terrible", " great"])
    assert zero.logprob.shape == (2, 2)
    with pytest.raises(ValueError, match="same number of choices"):
        scorer.score(PREFIX, SUFFIXES[:2], [[" a"], [" a", " b"]])
    with pytest.raises(ValueError, match="one continuation list per suffix"):
        scorer.score(PREFIX, SUFFIXES[:2], [[" a", " b"]])


@pytest.mark.slow
def test_prefix_cache_speedup_at_four_shots():
    from memrl.tasks.classification import load_task

    model, tok = load_model("smollm2-135m")
    s = HFScorer(model, tok, identity="x", batch_size=16)
    task = load_task("sst2", 13)
    prefix, qs = task.prefix(task.train[:4]), task.test[:32]
    times = {}
    for cache in (False, True):
        s.prefix_cache = cache
        s.clear_cache()
        t = time.perf_counter()
        s.score(prefix, [task.suffix(q) for q in qs], task.continuations(qs))
        times[cache] = time.perf_counter() - t
    assert times[False] / times[True] >= 3.0


def test_final_logit_softcapping_is_applied_like_the_model_family_does(scorer):
    # SmolLM2 has no soft-capping; pretend its config had Gemma's and check the scorer caps the
    # logits it projects itself exactly as tanh(logits / cap) * cap of the full forward pass
    text, label = SUFFIXES[0], " great"
    ids = scorer.tokenizer(text + label, return_tensors="pt", add_special_tokens=False)["input_ids"]
    n_label = len(scorer.tokenizer(text + label, add_special_tokens=False)["input_ids"]) - len(
        scorer.tokenizer(text, add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        logits = scorer.model(ids).logits[0].float()
    cap = 2.0
    capped = torch.log_softmax(torch.tanh(logits / cap) * cap, dim=-1)
    expected = sum(float(capped[ids.shape[1] - n_label - 1 + j, ids[0, ids.shape[1] - n_label + j]])
                   for j in range(n_label))
    scorer.model.config.final_logit_softcapping = cap
    try:
        got = scorer.score("", [text], [label]).logprob[0, 0]
    finally:
        del scorer.model.config.final_logit_softcapping
    assert got == pytest.approx(expected, abs=1e-4)
    assert got != pytest.approx(scorer.score("", [text], [label]).logprob[0, 0], abs=1e-3)  # capping changed it
