"""The HTTP face of ``memrl serve``: a FastAPI app over a :class:`~memrl.serve.engine.RewardEngine`.

Why FastAPI + uvicorn: OpenRLHF's own reward server (``openrlhf/cli/serve_rm.py``) is a FastAPI
app run by uvicorn, so anyone running OpenRLHF already has both installed; uvicorn's asyncio
loop holds thousands of concurrent per-sample requests waiting on futures without a thread each
(a waiting ``respond=commit`` answer costs nothing), and it shuts down gracefully on SIGTERM,
which is where the final snapshot is written. Requests are read as raw bytes and validated by
:mod:`memrl.serve.protocol` (not by pydantic models) so that every refusal names its field the
same way.

Routes: ``POST /get_reward`` (OpenRLHF's protocol), ``POST /get_reward_eval`` (the same, read-only:
evaluation samples), ``POST /commit``, ``POST /snapshot``, ``GET /stats`` and ``GET /health`` (the
only one without the bearer token; 200 ``ok`` or ``degraded``, 503 ``failed``). Limits: the body size
(413, checked on ``Content-Length`` before reading and while reading), the samples per request
(413), the length of each text (413), a token when configured (401, compared in constant time):
``Authorization: Bearer <token>``, or ``?token=<token>`` in the URL for clients that send no headers
(OpenRLHF's ``--reward.remote_url``). Every answer, errors included, is JSON; an error is
``{"error", "field"}`` and is counted in ``/stats`` by status, a bug's 500 too.

:class:`ServiceThread` runs the app on a uvicorn server in a background thread (tests, benches,
notebooks); ``memrl serve`` runs it in the main thread (:mod:`memrl.serve.cli`).
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations (``Request``,
# imported inside create_app so FastAPI stays optional) and must see them evaluated
import asyncio
import contextlib
import hmac
import logging
import socket
import threading
from typing import Any

from memrl.serve.config import ServeConfig, build_reward_spec
from memrl.serve.engine import RewardEngine
from memrl.serve.protocol import ProtocolOptions, RequestError, parse_commit_request, parse_reward_request
from memrl.serve.snapshots import SnapshotStore, describe_error

logger = logging.getLogger(__name__)

_THREADPOOL_BYTES = 64 * 1024  # bodies larger than this are parsed off the event loop


def create_app(engine: RewardEngine, config: ServeConfig) -> Any:
    """The FastAPI app serving ``engine`` (started with the app, stopped and snapshotted with it)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse
        from starlette.concurrency import run_in_threadpool
    except ImportError as exc:
        raise ImportError(f"memrl serve needs FastAPI and uvicorn ({exc}): pip install 'memrl[serve]'") from exc

    options = ProtocolOptions(max_samples=config.max_samples, strip=list(config.strip),
                              question_regex=config.question_regex, id_columns=engine.spec.id_columns,
                              max_text_chars=config.max_text_chars)
    token = config.token.encode() if config.token else None
    limit = config.max_body_bytes

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if not engine.running:
            engine.start()
        yield
        await run_in_threadpool(engine.stop)

    app = FastAPI(title="memrl reward service", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def refuse(exc: RequestError) -> JSONResponse:
        engine.count(f"error_{exc.status}")
        headers = None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        elif exc.status == 503:
            headers = {"Retry-After": str(max(1, round(config.snapshot_retry_s)))}
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    def internal_error(exc: Exception) -> JSONResponse:
        """A bug: a JSON answer like every other error, counted, the service stays up."""
        logger.error("request failed", exc_info=exc)
        engine.count("error_500")
        return JSONResponse({"error": f"internal error: {describe_error(exc)}", "field": ""}, status_code=500)

    def check_token(request: Request) -> None:
        if token is None:
            return
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":  # OpenRLHF's client sends no headers: the token can be in the URL
            value = request.query_params.get("token", "")
        if not hmac.compare_digest(value.strip().encode(), token):
            raise RequestError(401, "Authorization", "missing or wrong token (send 'Authorization: Bearer <token>', "
                                                     "or ?token=<token> in the URL)")

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise RequestError(400, "Content-Length", f"not a byte count: {length!r:.40}")
            if int(length) > limit:
                raise RequestError(413, "body", f"{int(length)} bytes; this server takes at most {limit} (--max-body-mb)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, "body", f"over {limit} bytes (--max-body-mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def answer(future) -> JSONResponse:
        try:
            return JSONResponse(await asyncio.wrap_future(future))
        except RequestError as exc:
            return refuse(exc)
        except Exception as exc:  # a bug: report it, the service stays up
            return internal_error(exc)

    async def reward(request: Request, eval_route: bool) -> JSONResponse:
        try:
            check_token(request)
            body = await read_body(request)
            if len(body) > _THREADPOOL_BYTES:
                parsed = await run_in_threadpool(parse_reward_request, body, options, eval_route=eval_route)
            else:
                parsed = parse_reward_request(body, options, eval_route=eval_route)
        except RequestError as exc:
            return refuse(exc)
        except Exception as exc:
            return internal_error(exc)
        if not parsed.eval:
            engine.count("requests")
            engine.count("samples", len(parsed.samples))
        return await answer(engine.submit(parsed))

    @app.post("/get_reward")
    async def get_reward(request: Request):
        return await reward(request, eval_route=False)

    @app.post("/get_reward_eval")
    async def get_reward_eval(request: Request):
        return await reward(request, eval_route=True)

    @app.post("/commit")
    async def commit(request: Request):
        try:
            check_token(request)
            step = parse_commit_request(await read_body(request))
        except RequestError as exc:
            return refuse(exc)
        except Exception as exc:
            return internal_error(exc)
        return await answer(engine.commit(step))

    @app.post("/snapshot")
    async def snapshot(request: Request):
        try:
            check_token(request)
        except RequestError as exc:
            return refuse(exc)
        if engine.store is None:
            return refuse(RequestError(400, "state_dir", "this server was started without --state-dir"))
        return await answer(engine.snapshot())

    @app.get("/stats")
    async def stats(request: Request):
        try:
            check_token(request)
        except RequestError as exc:
            return refuse(exc)
        return JSONResponse(engine.stats())

    @app.get("/health")
    async def health():
        status, body = engine.health()
        return JSONResponse(body, status_code=status)

    return app


def build_service(values: dict[str, Any], config: ServeConfig, *, encoder: Any = None) -> tuple[RewardEngine, Any]:
    """``(engine, app)`` for the flat reward options ``values`` (as ``memrl train`` reads them)."""
    # the state dir first: a folder that cannot be written is refused before minutes of model loading
    store = SnapshotStore(config.state_dir, keep=config.keep_snapshots) if config.state_dir else None
    tokenizer = None
    if config.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    spec = build_reward_spec(values, encoder=encoder, encoder_device=config.encoder_device,
                             encoder_batch_size=config.encoder_batch_size, tokenizer=tokenizer)
    engine = RewardEngine(spec, config, store)
    if spec.memory is not None:
        spec.memory.encoder.encode(["memrl serve warm-up"])  # load the model before the first request
    return engine, create_app(engine, config)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free one), so the address is known before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(app: Any) -> Any:
    """A uvicorn server for ``app`` (it handles SIGINT/SIGTERM when run in the main thread)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=75,
                            timeout_graceful_shutdown=10)
    return uvicorn.Server(config)


class ServiceThread:
    """Serve ``app`` on ``host:port`` in a daemon thread: ``with ServiceThread(app) as s: s.url``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.socket = bind_socket(host, port)
        self.host, self.port = self.socket.getsockname()[:2]
        self.server = uvicorn_server(app)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                        name="memrl-serve-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> "ServiceThread":
        self._thread.start()
        waited = 0.0
        while not self.server.started:
            if not self._thread.is_alive() or waited > timeout:
                raise RuntimeError("the reward service did not start")
            threading.Event().wait(0.02)
            waited += 0.02
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=60)
        self.socket.close()

    def __enter__(self) -> "ServiceThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
