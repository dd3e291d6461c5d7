"""The reward engine behind ``memrl serve``: the one owner of the memories, the encoder and the
normalisers, their step buffer and their snapshots.

Threading: every change of state happens on one worker thread that takes jobs (score, commit,
snapshot, stop) from a queue in arrival order; HTTP handlers only enqueue a job and await its
future. No lock guards the reward state because nothing else touches it.

Micro-batching: when a score job arrives the worker waits ``batch_wait_ms`` for more (up to
``max_batch`` samples), encodes the texts of all of them in one encoder call
(:meth:`MemoryRPlus.encode_inputs`), then handles the jobs one by one in arrival order; their
reward calls then find every vector in the encoder's cache.

Steps. Writes are buffered per step and committed at a step boundary: ``POST /commit``; a
request whose ``step`` is higher than the open step (the earlier buffer is committed first; a
lower one is refused with 409); every ``commit_every`` samples (a request is never split; the
step that reaches B commits after that request); after ``commit_idle_s`` without requests; and,
under ``respond='commit'``, when a step's oldest request has waited ``commit_timeout_s``.

A commit sorts the step's samples into a canonical order (question, prompt, response, label) and
calls every reward function once on that batch, as TRL calls them (:meth:`BatchScorer.commit`):
the memory is scored and written, normalisers and outcome counts updated, exactly as one
in-process step over that batch. Because of the sort, nothing depends on arrival order.

Answers. ``respond='immediate'``: each request is answered at once with what the reward
functions return for that request alone against the committed state (:meth:`BatchScorer.preview`;
nothing is written). Its R1 rewards and the raw exploit/explore values equal those of the
in-process step; the normalised intrinsic rewards use the bounds of the committed window plus
the request's own values (a request holding the whole step gets exactly the in-process values).
``respond='commit'``: each answer waits for its step's commit and is the commit's own values: for
every reward, one in-process call over the whole step.

A request is validated completely (protocol, its ``step``, then the reward functions' own input
checks) before anything changes: a refused request commits no buffer, moves no step and joins
nothing. Evaluation requests (``eval``) are scored like ``respond='immediate'`` answers and
change nothing at all.

Snapshots (``--state-dir``) are started from the worker loop, never from inside a commit, and by
default written by a forked process (:class:`~memrl.serve.snapshots.BackgroundWrite`), so the
request path pauses only for the fork. A failed write never fails a request nor stops the worker:
the commits stay in memory, ``/health`` says ``degraded`` with the reason, ``POST /snapshot``
answers 503 with it, and the write is tried again every ``snapshot_retry_s`` until the disk takes
it. Every answer is given through :meth:`RewardEngine._settle`, which never answers twice.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memrl.serve.config import RewardSpec, ServeConfig, check_respond_mode
from memrl.serve.protocol import RequestError, RewardRequest, Sample
from memrl.serve.scoring import BatchScorer, Scored, _floats
from memrl.serve.snapshots import CAN_FORK, BackgroundWrite, SnapshotStore, WriteResult, describe_error

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    kind: str  # score | commit | snapshot | stop
    future: Future = field(default_factory=Future)
    request: RewardRequest | None = None
    step: int | None = None
    arrived: float = field(default_factory=time.monotonic)


class RewardEngine:
    """The stateful side of the service (see the module docstring).

    Args:
        spec: the reward set (:func:`memrl.serve.config.build_reward_spec`).
        config: the service options.
        store: where snapshots go (None: no snapshots); the newest good one is restored here.
    """

    def __init__(self, spec: RewardSpec, config: ServeConfig, store: SnapshotStore | None = None) -> None:
        check_respond_mode(spec, config.respond)
        self.spec, self.config, self.store = spec, config, store
        self.scorer = BatchScorer(spec, has_tokenizer=config.tokenizer is not None)
        try:  # can a request be scored alone, read-only (evaluation samples)? as in respond=immediate
            check_respond_mode(spec, "immediate")
            self._previewable = True
        except ValueError:
            self._previewable = False
        self.step = 0  # the open step (what trainer_state.global_step is for its rewards)
        self.commits = 0
        self.samples_committed = 0
        self.resumed_from: str | None = None
        if store is not None:
            meta = store.load_latest(spec.state, spec.options)
            if meta is not None:
                self.step, self.commits = int(meta["step"]), int(meta["commits"])
                self.samples_committed = int(meta.get("samples", 0))
                self.resumed_from = meta["path"]
                logger.info("resumed from %s: step %d, %d commits", meta["path"], self.step, self.commits)
        self._buffer: list[Sample] = []
        self._pending: list[tuple[int, int, Future, float]] = []  # respond=commit: answers awaiting the commit
        self._last_arrival = 0.0
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._lock = threading.Lock()  # guards the counters read by stats()
        self._started = time.time()
        self._counts = collections.Counter()
        self._batch_sizes: collections.deque[int] = collections.deque(maxlen=10_000)
        self._last_commit: dict[str, Any] = {}
        self._state_view = self._view_state()
        self._thread = threading.Thread(target=self._loop, name="memrl-serve-engine", daemon=True)
        self._stopped = threading.Event()
        self._fatal: str | None = None  # the worker died (a bug): nothing can be served
        # snapshots: the commits the newest one on disk holds, the write in flight, the last failure
        self._saved_commits = self.commits
        self._last_snapshot: str | None = self.resumed_from
        self._writer: BackgroundWrite | None = None
        self._snapshot_error: str | None = None
        self._failing_since: float | None = None
        self._retry_at = 0.0
        self._snapshot_waiters: list[tuple[Future, int]] = []  # POST /snapshot: (answer, commits it must hold)
        self._last_write: dict[str, Any] = {}
        self._longest_pause = 0.0
        self.final_error: str | None = None  # the final snapshot at stop failed (the command exits 1)
        self._background = config.snapshot_write == "fork" and CAN_FORK
        if store is not None and config.snapshot_write == "fork" and not CAN_FORK:
            logger.warning("os.fork is not available here: snapshots are written in the request path "
                           "(--snapshot-write inline)")

    # ------------------------------------------------------------------ public (any thread)
    def start(self) -> RewardEngine:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def unsaved_commits(self) -> int:
        """Commits a kill -9 now would lose: those since the newest snapshot on disk."""
        return self.commits - self._saved_commits if self.store is not None else 0

    def submit(self, request: RewardRequest) -> Future:
        """Queue a validated request; the future's result is its ``/get_reward`` answer."""
        return self._put(_Job("score", request=request))

    def commit(self, step: int | None = None) -> Future:
        """Commit the open step (then open ``step`` when given); result: what was committed."""
        return self._put(_Job("commit", step=step))

    def snapshot(self) -> Future:
        """Write a snapshot of the state as committed now; result: its folder, once it is on disk."""
        return self._put(_Job("snapshot"))

    def stop(self, timeout: float = 900.0) -> None:
        """Finish queued jobs, fail answers still waiting for a commit, write a final snapshot
        (a failure is logged and kept in :attr:`final_error`; this never raises)."""
        if self._fatal is not None:
            self.final_error = f"the reward engine had stopped on an error ({self._fatal}); no final snapshot"
            return
        if self._stopped.is_set() or not self._thread.is_alive():
            return
        try:
            self._put(_Job("stop")).result(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - a stop must end, whatever happened
            self.final_error = self.final_error or describe_error(exc)
            logger.error("stopping the reward engine failed: %s", self.final_error)

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] += n

    def health(self) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, body)`` of ``GET /health``: 200 ``ok``; 200 ``degraded`` while snapshots
        fail (the service still serves, and a restart would lose the commits that are only in
        memory, so an orchestrator must not restart it); 503 ``failed`` when the worker died."""
        if self._fatal is not None:
            return 503, {"status": "failed", "reason": self._fatal, "step": self.step, "commits": self.commits}
        if self._snapshot_error is not None:
            return 200, {"status": "degraded", "reason": self._degraded_reason(), "step": self.step,
                         "commits": self.commits, "unsaved_commits": self.unsaved_commits}
        return 200, {"status": "ok", "step": self.step, "commits": self.commits}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            sizes = list(self._batch_sizes)
            counts = dict(self._counts)
            enc = self.scorer.memory.encoder if self.scorer.memory is not None else None
            return {
                "method": self.spec.method, "respond": self.config.respond, "step": self.step,
                "commits": self.commits, "buffered": len(self._buffer), "samples_committed": self.samples_committed,
                "requests": counts.get("requests", 0), "samples": counts.get("samples", 0),
                "eval_requests": counts.get("eval_requests", 0), "eval_samples": counts.get("eval_samples", 0),
                "errors": {k[6:]: v for k, v in counts.items() if k.startswith("error_")},
                "partial_commits": counts.get("partial_commits", 0), "failed_commits": counts.get("failed_commits", 0),
                "state": dict(self._state_view),
                "encoder": {"calls": enc.calls if enc else 0, "texts": enc.texts_encoded if enc else 0,
                            "micro_batches": len(sizes), "batch_size_mean": sum(sizes) / len(sizes) if sizes else 0.0,
                            "batch_size_max": max(sizes, default=0),
                            "batch_size_hist": _histogram(sizes)},
                "last_commit": dict(self._last_commit), "last_snapshot": self._last_snapshot,
                "resumed_from": self.resumed_from, "uptime_s": time.time() - self._started,
                "snapshots": {
                    "write": "fork" if self._background else "inline", "every": self.config.snapshot_every,
                    "written": counts.get("snapshots_written", 0), "failed": counts.get("snapshots_failed", 0),
                    "unsaved_commits": self.unsaved_commits, "writing": self._writer is not None,
                    "error": self._snapshot_error, "last_write": dict(self._last_write),
                    "longest_pause_s": self._longest_pause,
                    "quarantined": list(self.store.quarantined) if self.store is not None else [],
                },
            }

    # ------------------------------------------------------------------ worker
    def _put(self, job: _Job) -> Future:
        if self._fatal is not None:
            job.future.set_exception(RequestError(503, "", f"the reward engine stopped on an error: {self._fatal}"))
        elif self._stopped.is_set():
            job.future.set_exception(RequestError(503, "", "the reward service is shutting down"))
        else:
            self._queue.put(job)
        return job.future

    @staticmethod
    def _settle(future: Future, answer: Any) -> None:
        """Give ``future`` its answer (an exception or a value) unless it already has one."""
        if future.done():
            return
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)

    def _loop(self) -> None:
        """The worker. A job that fails is answered with its error; a failure outside any job
        (timers, snapshots) is logged and the loop goes on. Only an error of the loop itself
        ends it, and then every waiting answer and every later request gets a 503."""
        try:
            while self._serve_one():
                pass
        except BaseException as exc:  # noqa: BLE001 - a dead worker must not leave requests hanging
            self._fatal = describe_error(exc)
            logger.exception("the reward engine stopped on an error; the service answers 503 from now on")
            failure = RequestError(503, "", f"the reward engine stopped on an error: {self._fatal}")
            self._fail_pending(failure)
            for future, _ in self._snapshot_waiters:
                self._settle(future, failure)
            while True:
                try:
                    self._settle(self._queue.get_nowait().future, failure)
                except queue.Empty:
                    break

    def _serve_one(self) -> bool:
        """Take and run the next job (or run the timers); False once stopped."""
        try:
            job = self._queue.get(timeout=self._next_timer())
        except queue.Empty:
            self._guarded(self._timers)
            return True
        held = None
        if job.kind == "score":
            jobs, n = [job], len(job.request.samples)
            deadline = time.monotonic() + self.config.batch_wait_ms / 1000.0
            while n < self.config.max_batch:
                wait = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt.kind != "score":
                    held = nxt
                    break
                jobs.append(nxt)
                n += len(nxt.request.samples)
            self._score_jobs(jobs)
        else:
            held = job
        if held is not None and not self._control(held):
            return False
        self._guarded(self._timers)
        return True

    def _guarded(self, work: Callable[[], Any]) -> None:
        try:
            work()
        except Exception:  # noqa: BLE001 - logged and counted; the service keeps serving
            logger.exception("the reward engine's %s failed; it keeps serving", getattr(work, "__name__", "work"))
            self.count("engine_errors")

    def _control(self, job: _Job) -> bool:
        """Run a commit/snapshot/stop job; False after stop."""
        try:
            if job.kind == "commit":
                after = self.step + (1 if self._buffer else 0)  # the open step once this one is committed
                if job.step is not None and job.step < after:
                    raise RequestError(409, "step", f"step {job.step} cannot open: after this commit the open "
                                                    f"step is {after}")
                if job.step is not None:
                    self._check_jump(job.step)
                committed = self._commit("explicit") if self._buffer else 0
                if job.step is not None:
                    self.step = job.step
                self._settle(job.future, {"committed": committed, "step": self.step, "commits": self.commits})
            elif job.kind == "snapshot":
                if self.store is None:
                    raise RequestError(400, "state_dir", "this server was started without --state-dir")
                if self._last_snapshot is not None and self._saved_commits >= self.commits:
                    self._settle(job.future, {"snapshot": self._last_snapshot, "commits": self._saved_commits})
                else:
                    self._snapshot_waiters.append((job.future, self.commits))
                    self._retry_at = 0.0  # asked for now: no waiting out the retry delay
            elif job.kind == "stop":
                self._stop()
                self._settle(job.future, {"snapshot": self._last_snapshot, "error": self.final_error})
                return False
        except Exception as exc:  # reported to the caller; the worker keeps going
            self._settle(job.future, exc)
        return True

    def _stop(self) -> None:
        self._stopped.set()
        self._fail_pending(RequestError(503, "", "the reward service stopped before this step committed"))
        while True:  # jobs that slipped in before the stop flag was set
            try:
                late = self._queue.get_nowait()
            except queue.Empty:
                break
            self._settle(late.future, RequestError(503, "", "the reward service is shutting down"))
        if self._writer is not None:  # let the write in flight finish: it may be all that reaches the disk
            self._finish_write(self._writer.wait())
            self._writer = None
        if self.store is not None and (self.commits > self._saved_commits or self._snapshot_waiters):
            result = self._write_now()
            if not result.ok:
                self.final_error = (f"the final snapshot to {self.store.root} failed ({result.error}); the "
                                    f"{self.unsaved_commits} commits since "
                                    f"{self._last_snapshot or 'the start'} are lost")
                logger.error("%s", self.final_error)
        for future, _ in self._snapshot_waiters:
            self._settle(future, RequestError(503, "state_dir", "the reward service stopped"))
        self._snapshot_waiters = []

    def _score_jobs(self, jobs: list[_Job]) -> None:
        samples = [s for j in jobs for s in j.request.samples]
        try:  # one encoder batch for all; a bad request among them is found below, on its own
            self._encode(samples)
        except (ValueError, TypeError):
            pass
        answers: list[tuple[Future, Any]] = []
        for job in jobs:
            try:
                answer = self._score_one(job)
                if answer is not None:  # None: respond=commit, answered by the commit
                    answers.append((job.future, answer))
            except RequestError as exc:
                answers.append((job.future, exc))
            except (ValueError, TypeError, KeyError) as exc:
                answers.append((job.future, RequestError(400, "", str(exc))))
            except Exception as exc:  # a bug: 500; nothing was buffered (validation ran before any change)
                logger.exception("scoring a request failed")
                answers.append((job.future, exc))
        # answered after the whole micro-batch, commits included: when the answer to the request
        # that completes a step arrives, that step is committed
        for future, answer in answers:
            self._settle(future, answer)

    def _score_one(self, job: _Job) -> dict[str, Any] | None:
        """One request: every check first (protocol checks ran in the handler; the step, the
        rewards' own input checks here), and only then any change of state."""
        request = job.request
        if request.eval:
            return self._score_read_only(request.samples)
        self._check_unsaved_bound()
        step = self._target_step(request.step)
        self.scorer.check(request.samples)
        self._encode(request.samples)
        self.scorer.validate(request.samples, step)
        # valid: from here on the request changes the state
        self._last_arrival = time.monotonic()
        self._advance_to(step)
        answer = None
        if self.config.respond == "immediate":
            scored = self.scorer.preview(request.samples, self.step)
            answer = scored.response(self.spec.names, step=self.step, respond="immediate")
            self._buffer.extend(request.samples)
        else:
            lo = len(self._buffer)
            self._buffer.extend(request.samples)
            self._pending.append((lo, len(self._buffer), job.future, job.arrived))
        if self.config.commit_every and len(self._buffer) >= self.config.commit_every:
            self._commit("commit_every")
        return answer

    def _score_read_only(self, samples: list[Sample]) -> dict[str, Any]:
        """An evaluation request: scored against the committed state, nothing written, nothing
        buffered, no step moved. ``rewards`` is the outcome reward (OpenRLHF's evaluation averages
        ``rewards`` into pass@k, so it must be the correctness, not the training total); the
        total is in ``memrl.total``. Settings without a read-only per-request value (those
        ``--respond immediate`` refuses) answer the stateless rewards only."""
        self.scorer.check(samples)
        self._encode(samples)
        names = self.spec.names
        if self._previewable:
            scored = self.scorer.preview(samples, self.step)
            values = {n: scored.values[n] for n in names}
            raw, total = scored.raw, scored.total
        else:
            values = self._stateless_values(samples)
            raw, total = {}, None
        self.count("eval_requests")
        self.count("eval_samples", len(samples))
        answer = Scored(values, raw, values[names[0]]).response([n for n in names if n in values], step=self.step,
                                                                 respond="eval")
        answer["memrl"]["total"] = _floats(total) if total is not None else None
        return answer

    def _stateless_values(self, samples: list[Sample]) -> dict[str, np.ndarray]:
        from memrl.rewards.exploration import OutcomeBatchReward, OutcomeUCBReward

        kwargs = self.scorer.kwargs(samples, self.step)
        memory = self.scorer.memory
        stateful = {id(f) for f in (memory.exploit_reward, memory.explore_reward)} if memory is not None else set()
        return {name: np.asarray(f(**kwargs), np.float64) for name, f in zip(self.spec.names, self.spec.funcs)
                if id(f) not in stateful and not isinstance(f, (OutcomeUCBReward, OutcomeBatchReward))}

    def _encode(self, samples: list[Sample]) -> None:
        enc = self.scorer.memory.encoder if self.scorer.memory is not None else None
        before = enc.texts_encoded if enc is not None else 0
        self.scorer.encode(samples, self.step)
        if enc is not None and enc.texts_encoded > before:
            with self._lock:
                self._batch_sizes.append(enc.texts_encoded - before)

    def _check_jump(self, step: int) -> None:
        bound = self.config.max_step_jump
        if bound and step - self.step > bound:
            raise RequestError(400, "step", f"{step} is {step - self.step} steps past the open step {self.step}; this "
                                            f"server moves at most {bound} steps at once (--max-step-jump; 0: "
                                            "no bound)")

    def _target_step(self, step: int | None) -> int:
        """The step a request belongs to; refuses a stale one (409) or one too far ahead (400)."""
        if step is None or step == self.step:
            return self.step
        if step < self.step:
            raise RequestError(409, "step", f"step {step} is already committed; the open step is {self.step}")
        self._check_jump(step)
        return step

    def _advance_to(self, step: int) -> None:
        if step == self.step:
            return
        if self._buffer:
            self._commit("step")
        self.step = step

    def _check_unsaved_bound(self) -> None:
        bound = self.config.max_unsaved_commits
        if bound and self._snapshot_error is not None and self.unsaved_commits >= bound:
            raise RequestError(503, "state_dir", f"{self._degraded_reason()}; this server takes no more training "
                                                 f"samples until a snapshot succeeds (--max-unsaved-commits {bound}); "
                                                 "evaluation requests are still served")

    def _commit(self, reason: str) -> int:
        samples, pending = self._buffer, self._pending
        self._buffer, self._pending = [], []
        order = sorted(range(len(samples)), key=lambda i: samples[i].sort_key())
        metrics: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            scored = self.scorer.commit([samples[i] for i in order], self.step, metrics.__setitem__)
        except Exception as exc:
            logger.exception("committing step %d (%d samples) failed; its samples are dropped", self.step,
                             len(samples))
            self.count("failed_commits")
            for _, _, future, _ in pending:
                self._settle(future, RuntimeError(f"the commit of step {self.step} failed: {exc}"))
            return 0
        back = [0] * len(order)
        for pos, i in enumerate(order):
            back[i] = pos
        by_buffer = scored.take(back)  # values in buffer (arrival) order
        step = self.step
        with self._lock:
            self.commits += 1
            self.step += 1
            self.samples_committed += len(samples)
            self._state_view = self._view_state()
            self._last_commit = {"step": step, "samples": len(samples), "reason": reason,
                                 "seconds": time.perf_counter() - t0,
                                 "mean": {n: float(by_buffer.values[n].mean()) for n in self.spec.names},
                                 "metrics": metrics}
        for lo, hi, future, _ in pending:
            self._settle(future, by_buffer.take(range(lo, hi)).response(self.spec.names, step=step, respond="commit"))
        # the snapshot this commit may call for starts from the loop (_timers), never from here:
        # a failing disk must not turn a committed step into an error
        return len(samples)

    def _fail_pending(self, exc: Exception) -> None:
        for _, _, future, _ in self._pending:
            self._settle(future, exc)
        self._pending = []

    def _next_timer(self) -> float:
        waits = [0.5]
        now = time.monotonic()
        if self._buffer and self.config.commit_idle_s:
            waits.append(self._last_arrival + self.config.commit_idle_s - now)
        if self._pending:
            waits.append(self._pending[0][3] + self.config.commit_timeout_s - now)
        if self._writer is not None:
            waits.append(0.05)  # reap the snapshot process soon after it ends
        elif self._snapshot_wanted():
            waits.append(self._retry_at - now)
        return max(0.001, min(waits))

    def _timers(self) -> None:
        now = time.monotonic()
        if self._pending and now - self._pending[0][3] >= self.config.commit_timeout_s:
            logger.warning("step %d: the oldest answer waited %.0fs; committing the %d samples received",
                           self.step, self.config.commit_timeout_s, len(self._buffer))
            self.count("partial_commits")
            self._commit("timeout")
        elif self._buffer and self.config.commit_idle_s and now - self._last_arrival >= self.config.commit_idle_s:
            self._commit("idle")
        self._snapshots()

    # ------------------------------------------------------------------ snapshots
    def _snapshot_wanted(self) -> bool:
        return self.store is not None and (bool(self._snapshot_waiters)
                                           or self.unsaved_commits >= self.config.snapshot_every)

    def _snapshots(self) -> None:
        """Reap a finished write; start one when it is due (every ``snapshot_every`` commits, or
        asked for) and none is running; after a failure, wait ``snapshot_retry_s`` between tries
        (a POST /snapshot tries at once)."""
        if self._writer is not None:
            result = self._writer.poll()
            if result is None:
                return
            self._writer = None
            self._finish_write(result)
        if not self._snapshot_wanted() or time.monotonic() < self._retry_at:
            return
        if self._background:
            t0 = time.perf_counter()
            number = self.store.next_number()
            try:
                self._writer = BackgroundWrite.start(self.store, self.spec.state, self._snapshot_meta(), number)
            except OSError as exc:  # fork itself failed (no memory for the page tables, process limit)
                self._finish_write(WriteResult(number, self.commits, error=f"could not start the snapshot "
                                                                           f"process: {describe_error(exc)}"))
            self._note_pause(time.perf_counter() - t0)
        else:
            self._write_now()

    def _write_now(self) -> WriteResult:
        """Write a snapshot in this thread (the request path waits) and take note of the result."""
        t0 = time.perf_counter()
        result = self.store.write_result(self.spec.state, self._snapshot_meta(), self.store.next_number())
        self._note_pause(time.perf_counter() - t0)
        self._finish_write(result)
        return result

    def _note_pause(self, seconds: float) -> None:
        with self._lock:
            self._last_write = {**self._last_write, "pause_s": seconds}
            self._longest_pause = max(self._longest_pause, seconds)

    def _snapshot_meta(self) -> dict[str, Any]:
        return {"step": self.step, "commits": self.commits, "samples": self.samples_committed,
                "options": self.spec.options}

    def _finish_write(self, result: WriteResult) -> None:
        """Take note of a finished write: answer the POST /snapshot requests it covers; on a
        failure, report degraded, answer the others 503 and schedule a retry."""
        with self._lock:
            self._last_write = {"number": result.number, "commits": result.commits, "path": result.path,
                                "bytes": result.bytes, "seconds": result.seconds, "error": result.error,
                                "pause_s": self._last_write.get("pause_s")}
        if result.ok:
            self.count("snapshots_written")
            if self._snapshot_error is not None:
                logger.warning("snapshots to %s work again: %s holds all %d commits", self.store.root, result.path,
                               result.commits)
            self._saved_commits = max(self._saved_commits, result.commits)
            self._last_snapshot = result.path
            self._snapshot_error, self._failing_since = None, None
            waiting = []
            for future, needed in self._snapshot_waiters:
                if result.commits >= needed:
                    self._settle(future, {"snapshot": result.path, "commits": result.commits, "bytes": result.bytes})
                else:
                    waiting.append((future, needed))
            self._snapshot_waiters = waiting
            return
        self.count("snapshots_failed")
        repeated = result.error == self._snapshot_error
        self._snapshot_error = result.error
        self._failing_since = self._failing_since or time.time()
        self._retry_at = time.monotonic() + self.config.snapshot_retry_s
        reason = self._degraded_reason()
        # the first failure (and a new reason) as an error; the same failure again as info
        logger.log(logging.INFO if repeated else logging.ERROR, "%s", reason)
        for future, _ in self._snapshot_waiters:
            self._settle(future, RequestError(503, "state_dir", reason))
        self._snapshot_waiters = []

    def _degraded_reason(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._failing_since or time.time()))
        return (f"snapshots to {self.store.root} fail since {since} ({self._snapshot_error}); "
                f"{self.unsaved_commits} commits are in memory only, and are written as soon as the disk allows "
                f"(retried every {self.config.snapshot_retry_s:g} s and on POST /snapshot)")

    # ------------------------------------------------------------------ state
    def _view_state(self) -> dict[str, Any]:
        from memrl.rewards.exploration import OutcomeUCBReward

        state = self.spec.state
        memory = self.scorer.memory
        if memory is not None:
            return {"success_keys": len(memory.success_memory), "success_values": memory.success_memory.num_values,
                    "failure_keys": len(memory.failure_memory), "failure_values": memory.failure_memory.num_values,
                    "exploit_window": len(memory.exploit_norm.values), "explore_window": len(memory.explore_norm.values)}
        if isinstance(state, OutcomeUCBReward):
            return {"questions": len(state.counts), "answers": state.num_answers}
        return {}


def _histogram(sizes: list[int]) -> dict[str, int]:
    """Encoder batch sizes counted in buckets 1, 2-3, 4-7, 8-15, ..."""
    counts = collections.Counter(1 << (s.bit_length() - 1) for s in sizes if s > 0)
    return {(str(low) if low == 1 else f"{low}-{2 * low - 1}"): counts[low] for low in sorted(counts)}
