"""The OpenAI-compatible HTTP backend over real HTTP against a loopback server (real SmolLM2)."""

import socket

import pytest
import torch

from helpers.completions_server import CompletionsServer, prompt_logprobs
from memrl.lm import LogprobsUnavailableError, OpenAICompletionsScorer
from memrl.lm.loading import load_model
from memrl.lm.openai_http import _continuation_logprob

PREFIX = "Review: dull and lifeless.\nSentiment: terrible\n\nReview: a warm, funny delight.\nSentiment: great\n\n"
SUFFIXES = ["Review: I loved every minute.\nSentiment:", "Review: a waste of time.\nSentiment:"]
LABELS = [" terrible", " great"]


@pytest.fixture(scope="module")
def lm():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core box: see tests/poem/conftest.py
    yield load_model("smollm2-135m")
    torch.set_num_threads(before)


@pytest.fixture()
def server(lm, request):
    kwargs = getattr(request, "param", {})
    with CompletionsServer(*lm, model_name="smol", **kwargs) as srv:
        yield srv


def test_scores_over_http_match_the_model(server, lm):
    scorer = OpenAICompletionsScorer(server.url, "smol", timeout=30)
    res = scorer.score(PREFIX, SUFFIXES, LABELS)
    assert res.logprob.shape == (2, 2) and scorer.calls == 2
    assert res.num_tokens.tolist() == [[1, 1], [1, 1]]
    # the same numbers as the model on the same joint tokenisation, computed in-process
    for i, suffix in enumerate(SUFFIXES):
        for c, label in enumerate(LABELS):
            lp = prompt_logprobs(*lm, PREFIX + suffix + label)
            assert res.logprob[i, c] == pytest.approx(lp["token_logprobs"][-1], abs=1e-4)
    assert res.logprob[0].argmax() == 1 and res.logprob[1].argmax() == 0


@pytest.mark.parametrize("server", [{"fail_first": 1}], indirect=True)
def test_retries_after_a_503(server):
    scorer = OpenAICompletionsScorer(server.url, "smol", backoff=0.01)
    scorer.score("", SUFFIXES[:1], LABELS)
    assert scorer.requests == 2 and server.requests == 2


@pytest.mark.parametrize("server", [{"fail_first": 5}], indirect=True)
def test_gives_up_after_max_retries(server):
    scorer = OpenAICompletionsScorer(server.url, "smol", backoff=0.01, max_retries=2)
    with pytest.raises(RuntimeError, match="HTTP 503 after 3 attempt"):
        scorer.score("", SUFFIXES[:1], LABELS)


@pytest.mark.parametrize("server", [{"omit_logprobs": True}], indirect=True)
def test_clear_error_without_logprobs(server):
    scorer = OpenAICompletionsScorer(server.url, "smol")
    with pytest.raises(LogprobsUnavailableError, match="echo=true with logprobs"):
        scorer.score("", SUFFIXES[:1], LABELS)


def test_unreachable_server_and_bad_request(server):
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scorer = OpenAICompletionsScorer(f"http://127.0.0.1:{port}/v1", "smol", max_retries=1, backoff=0.01, timeout=2)
    with pytest.raises(RuntimeError, match="could not reach .* after 2 attempt"):
        scorer.score("", SUFFIXES[:1], LABELS)
    bad = OpenAICompletionsScorer(server.url.replace("/v1", "/v2"), "smol")
    with pytest.raises(RuntimeError, match="HTTP 404"):
        bad.score("", SUFFIXES[:1], LABELS)


def test_continuation_sum_is_bounded_to_the_prompt():
    # "ab|cd": prompt of 4 characters, continuation "cd" from offset 2; the server also returned a
    # generated token at offset 4, which must not be counted
    echoed = {"logprobs": {"token_logprobs": [None, -1.0, -2.0, -3.0, -9.0], "text_offset": [0, 1, 2, 3, 4]}}
    assert _continuation_logprob(echoed, 2, "u", end=4) == pytest.approx((-5.0, 2), abs=1e-9)
    # log-probabilities of generated tokens only (no echo): plausible numbers, meaningless; refused
    not_echoed = {"logprobs": {"token_logprobs": [-0.5], "text_offset": [4]}}
    with pytest.raises(LogprobsUnavailableError, match="did not echo the prompt"):
        _continuation_logprob(not_echoed, 2, "u", end=4)
