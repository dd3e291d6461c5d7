"""Test fixture: a minimal OpenAI-compatible server backed by a transformers causal LM.

It implements what :class:`memrl.lm.OpenAICompletionsScorer` needs — prompt scoring on
``/v1/completions`` with ``echo=true, logprobs>=0, max_tokens=0`` — so the HTTP backend can be
exercised over real HTTP on loopback without a vLLM or llama.cpp install, and a local model can be
shared by several processes.

With ``generate=True`` it also generates, as clients such as DSPy (``dspy.LM("openai/<name>",
api_base=url)``) need: ``/v1/completions`` with ``max_tokens > 0`` and no ``echo`` (text
completion of the prompt), and ``/v1/chat/completions`` (the messages rendered with the
tokenizer's chat template). Decoding is greedy when ``temperature`` is 0 or absent, sampled
otherwise; ``stop`` strings cut the text (``finish_reason="stop"``); ``n`` is 1. Without
``generate`` both are refused with HTTP 400, as before. Every request body the server received is
kept in :attr:`CompletionsServer.received` (path, body), so a test can check the exact prompt a
client sent.

Fault injection for tests: ``fail_first`` answers that many requests with HTTP 503, and
``omit_logprobs`` answers without log-probabilities, like a server that does not support them.

Run: ``python tests/helpers/completions_server.py --model smollm2-135m --port 8000`` (binds 127.0.0.1).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)


def prompt_logprobs(model: Any, tokenizer: Any, text: str) -> dict[str, list]:
    """Echo log-probabilities of ``text``'s tokens, OpenAI ``logprobs`` layout.

    Returns ``{"tokens", "token_logprobs", "text_offset"}``; the first token has no context and
    gets ``None`` as in the OpenAI API.
    """
    import torch

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    offsets = [int(a) for a, _ in enc["offset_mapping"]]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return {
        "tokens": [tokenizer.decode([t]) for t in ids],
        "token_logprobs": [None] + [float(x) for x in lp],
        "text_offset": offsets,
    }


class CompletionsServer:
    """Serve ``/v1/completions`` (scoring only) and ``/v1/models`` on ``host:port``.

    Args:
        model, tokenizer: a loaded causal LM.
        model_name: the name reported by ``/v1/models``.
        host, port: bind address; port 0 picks a free port (see :attr:`url`).
        fail_first: answer the first N completion requests with HTTP 503 (retry tests).
        omit_logprobs: answer without log-probabilities (error-path tests).
        generate: also generate text (``/v1/completions`` with ``max_tokens > 0``, and
            ``/v1/chat/completions``); off by default, so scoring clients see the old contract.
        max_new_tokens: upper bound on generated tokens per request, whatever the client asks.
    """

    def __init__(self, model: Any, tokenizer: Any, *, model_name: str = "memrl-local",
                 host: str = "127.0.0.1", port: int = 0, fail_first: int = 0,
                 omit_logprobs: bool = False, generate: bool = False, max_new_tokens: int = 64) -> None:
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.fail_first = fail_first
        self.omit_logprobs = omit_logprobs
        self.generate = generate
        self.max_new_tokens = max_new_tokens
        self.requests = 0
        self.received: list[tuple[str, dict[str, Any]]] = []  # (path, request body), in arrival order
        self._lock = threading.Lock()  # one forward at a time: torch model, threaded server
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                logger.debug(fmt, *args)

            def _send(self, code: int, obj: dict) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                path = self.path.rstrip("/")
                if path not in ("/v1/completions", "/v1/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                length = int(self.headers.get("Content-Length", 0))
                try:
                    req = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "body is not JSON"}})
                    return
                with server._lock:
                    server.requests += 1
                    server.received.append((path, req))
                    if server.fail_first > 0:
                        server.fail_first -= 1
                        self._send(503, {"error": {"message": "injected failure"}})
                        return
                    try:
                        answer = server._chat(req) if path == "/v1/chat/completions" else server._complete(req)
                        self._send(200, answer)
                    except ValueError as exc:
                        self._send(400, {"error": {"message": str(exc)}})

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _complete(self, req: dict[str, Any]) -> dict[str, Any]:
        prompts = req.get("prompt")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("'prompt' must be a string or a list of strings")
        if self.generate and not req.get("echo") and int(req.get("max_tokens", 16)) > 0:
            choices = []
            for i, text in enumerate(prompts):
                out, finish, n_prompt, n_new = self._generate_text(text, req)
                choices.append({"index": i, "text": out, "logprobs": None, "finish_reason": finish})
            return {"object": "text_completion", "model": self.model_name, "choices": choices,
                    "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new,
                              "total_tokens": n_prompt + n_new}}
        if int(req.get("max_tokens", 16)) != 0 or not req.get("echo"):
            raise ValueError("this server only scores prompts: send echo=true and max_tokens=0"
                             + ("" if self.generate else " (start it with generate=True to generate)"))
        choices = []
        for i, text in enumerate(prompts):
            lp = None if self.omit_logprobs or req.get("logprobs") is None else prompt_logprobs(
                self.model, self.tokenizer, text)
            choices.append({"index": i, "text": text, "logprobs": lp, "finish_reason": "length"})
        return {"object": "text_completion", "model": self.model_name, "choices": choices}

    def _chat(self, req: dict[str, Any]) -> dict[str, Any]:
        """``/v1/chat/completions``: the messages through the chat template, then generation."""
        if not self.generate:
            raise ValueError("this server only scores prompts (start it with generate=True for chat completions)")
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise ValueError("'messages' must be a non-empty list of {'role', 'content'} objects")
        msgs = [{"role": m["role"], "content": _message_text(m.get("content"))} for m in messages]
        prompt = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        text, finish, n_prompt, n_new = self._generate_text(prompt, req)
        return {
            "id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": 0, "model": self.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new},
        }

    def _generate_text(self, prompt: str, req: dict[str, Any]) -> tuple[str, str, int, int]:
        """Generate after ``prompt``: ``(text, finish_reason, prompt tokens, new tokens)``."""
        import torch

        limit = req.get("max_completion_tokens") or req.get("max_tokens") or self.max_new_tokens
        max_new = max(1, min(int(limit), self.max_new_tokens))
        temperature = float(req.get("temperature") or 0.0)
        stop = req.get("stop") or []
        stop = [stop] if isinstance(stop, str) else [str(x) for x in stop]
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": self.tokenizer.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=float(req.get("top_p") or 1.0))
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new_ids = out[0, enc["input_ids"].shape[1]:].tolist()
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        cut = next((i for i, t in enumerate(new_ids) if t in eos), None)
        finish = "stop" if cut is not None else "length"
        new_ids = new_ids[:cut]
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        hits = [text.index(s) for s in stop if s and s in text]
        if hits:
            text, finish = text[: min(hits)], "stop"
        return text, finish, int(enc["input_ids"].shape[1]), len(new_ids)

    def start(self) -> CompletionsServer:
        """Serve in a daemon thread; returns self (use as a context manager to stop)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> CompletionsServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _message_text(content: Any) -> str:
    """A chat message's text: a string, or the text parts of an OpenAI content-part list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise ValueError(f"unsupported message content {type(content).__name__}")


def main() -> None:
    from memrl.lm.loading import load_model

    p = argparse.ArgumentParser(description="OpenAI-compatible scoring (and, with --generate, generating) server (loopback)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--generate", action="store_true", help="also serve text generation and /v1/chat/completions")
    args = p.parse_args()
    model, tok = load_model(args.model)
    server = CompletionsServer(model, tok, model_name=args.model, port=args.port, generate=args.generate)
    print(f"serving {args.model} at {server.url}")
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
