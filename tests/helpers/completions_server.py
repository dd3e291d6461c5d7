"""Test fixture: a minimal OpenAI-compatible ``/v1/completions`` server backed by a transformers causal LM.

It implements exactly what :class:`memrl.lm.OpenAICompletionsScorer` needs — prompt scoring
with ``echo=true, logprobs>=0, max_tokens=0`` — so the HTTP backend can be exercised over real
HTTP on loopback without a vLLM or llama.cpp install, and a local model can be shared by several
processes. It does not generate text (``max_tokens`` > 0 is refused with HTTP 400).

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
    """

    def __init__(self, model: Any, tokenizer: Any, *, model_name: str = "memrl-local",
                 host: str = "127.0.0.1", port: int = 0, fail_first: int = 0,
                 omit_logprobs: bool = False) -> None:
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.fail_first = fail_first
        self.omit_logprobs = omit_logprobs
        self.requests = 0
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
                if self.path.rstrip("/") != "/v1/completions":
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
                    if server.fail_first > 0:
                        server.fail_first -= 1
                        self._send(503, {"error": {"message": "injected failure"}})
                        return
                    try:
                        self._send(200, server._complete(req))
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
        if int(req.get("max_tokens", 16)) != 0 or not req.get("echo"):
            raise ValueError("this server only scores prompts: send echo=true and max_tokens=0")
        choices = []
        for i, text in enumerate(prompts):
            lp = None if self.omit_logprobs or req.get("logprobs") is None else prompt_logprobs(
                self.model, self.tokenizer, text)
            choices.append({"index": i, "text": text, "logprobs": lp, "finish_reason": "length"})
        return {"object": "text_completion", "model": self.model_name, "choices": choices}

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


def main() -> None:
    from memrl.lm.loading import load_model

    p = argparse.ArgumentParser(description="OpenAI-compatible scoring server (loopback)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    model, tok = load_model(args.model)
    server = CompletionsServer(model, tok, model_name=args.model, port=args.port)
    print(f"serving {args.model} at {server.url}")
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
