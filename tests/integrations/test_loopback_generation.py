"""The loopback server's generation mode (tests/helpers/completions_server.py, generate=True) that the DSPy
test talks to: greedy text and chat completions with the real SmolLM2, equal to memrl's own generate()."""

import json
import urllib.error
import urllib.request

import pytest

from helpers.completions_server import CompletionsServer
from memrl.lm.loading import generate


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_text_and_chat_generation_match_the_model(tiny_model):
    model, tok = tiny_model
    prompt = "Review: a warm, funny delight.\nSentiment:"
    messages = [{"role": "user", "content": "Say hello."}]
    want_text, want_chat = (r["text"] for r in generate(model, tok, [prompt, messages], max_new_tokens=8, batch_size=1))
    with CompletionsServer(model, tok, model_name="smol", generate=True) as srv:
        code, out = post(srv.url + "/completions", {"model": "smol", "prompt": prompt, "max_tokens": 8, "temperature": 0})
        assert code == 200 and out["choices"][0]["text"] == want_text
        code, out = post(srv.url + "/chat/completions", {"model": "smol", "messages": messages, "max_tokens": 8})
        assert code == 200 and out["choices"][0]["message"] == {"role": "assistant", "content": want_chat}
        assert out["usage"]["completion_tokens"] <= 8
        stop = want_text.strip()[:3]
        code, out = post(srv.url + "/completions", {"prompt": prompt, "max_tokens": 8, "stop": [stop]})
        choice = out["choices"][0]
        assert choice["text"] == want_text[: want_text.index(stop)] and choice["finish_reason"] == "stop"
        assert [path for path, _ in srv.received] == ["/v1/completions", "/v1/chat/completions", "/v1/completions"]
    with CompletionsServer(model, tok) as srv:  # default: scoring only, as before
        code, out = post(srv.url + "/chat/completions", {"messages": messages})
        assert code == 400 and "generate=True" in out["error"]["message"]


@pytest.mark.parametrize("messages", [[], [{"content": "no role"}], "text"])
def test_bad_chat_requests_are_refused(tiny_model, messages):
    with CompletionsServer(*tiny_model, generate=True) as srv:
        code, out = post(srv.url + "/chat/completions", {"messages": messages})
        assert code == 400 and "messages" in out["error"]["message"]
