"""A small client of ``memrl serve`` (standard library only, so it runs in any trainer's workers).

:class:`RewardClient` keeps one keep-alive connection per thread, retries connection failures
and 502/503/504 answers with a short back-off (never a timeout: the service may still be
scoring that request, and a second copy would join the step twice), and raises :class:`RewardServiceError` (with the
server's message, which names the field at fault) on any other error status.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from memrl.serve.config import TOKEN_ENV

_RETRY_STATUS = (502, 503, 504)


class RewardServiceError(RuntimeError):
    """The service refused a request: ``status`` and its JSON ``body`` (``error``, ``field``)."""

    def __init__(self, status: int, body: Any, url: str) -> None:
        message = body.get("error") if isinstance(body, dict) else str(body)[:300]
        super().__init__(f"{url}: HTTP {status}: {message}")
        self.status, self.body = status, body


class RewardClient:
    """Client of one service. ``url``: its base (``http://127.0.0.1:5000``) or its ``/get_reward``
    URL; ``token``: the bearer token (default ``$MEMRL_SERVE_TOKEN``)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 180.0, retries: int = 3) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL of a memrl reward service: {url!r}")
        self.url = url
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path.rstrip("/")
        self.base = path[: -len("/get_reward")] if path.endswith("/get_reward") else path
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout, self.retries = timeout, retries
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = kind(self.host, self.port, timeout=self.timeout)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def request(self, method: str, route: str, payload: Any = None) -> Any:
        """``method route`` with a JSON ``payload``; the decoded JSON answer."""
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = f"{self.scheme}://{self.host}:{self.port}{self.base}{route}"
        for attempt in range(self.retries + 1):
            try:
                conn = self._connection()
                conn.request(method, self.base + route, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                status = response.status
            except TimeoutError:  # the server may still be working on it: a retry could count it twice
                self._drop()
                raise
            except (ConnectionError, http.client.HTTPException, OSError):  # not received (or the server died)
                self._drop()
                if attempt == self.retries:
                    raise
                time.sleep(0.2 * 2 ** attempt)
                continue
            try:
                decoded = json.loads(data) if data else None
            except json.JSONDecodeError:
                decoded = data.decode("utf-8", "replace")
            if status == 200:
                return decoded
            if status in _RETRY_STATUS and attempt < self.retries:
                time.sleep(0.2 * 2 ** attempt)
                continue
            raise RewardServiceError(status, decoded, url)
        raise AssertionError("unreachable")

    def get_reward(self, *, prompts: list[Any], labels: list[Any], query: list[str] | None = None,
                   responses: list[str] | None = None, questions: list[str] | None = None,
                   step: int | None = None, completion_ids: list[list[int]] | None = None,
                   evaluation: bool = False) -> dict[str, Any]:
        """``POST /get_reward`` (see :mod:`memrl.serve.protocol` for the fields); with
        ``evaluation``, ``POST /get_reward_eval``: scored read-only, nothing joins a step."""
        payload: dict[str, Any] = {"prompts": prompts, "labels": labels}
        for name, value in (("query", query), ("responses", responses), ("questions", questions), ("step", step),
                            ("completion_ids", completion_ids)):
            if value is not None:
                payload[name] = value
        return self.request("POST", "/get_reward_eval" if evaluation else "/get_reward", payload)

    def commit(self, step: int | None = None) -> dict[str, Any]:
        return self.request("POST", "/commit", {} if step is None else {"step": step})

    def snapshot(self) -> dict[str, Any]:
        return self.request("POST", "/snapshot", {})

    def stats(self) -> dict[str, Any]:
        return self.request("GET", "/stats")

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")
