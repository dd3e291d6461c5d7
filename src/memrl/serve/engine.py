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

A request is validated completely (protocol, then the reward functions' own input checks) before
its samples join the buffer, so a bad request changes nothing.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from memrl.serve.config import RewardSpec, ServeConfig, check_respond_mode
from memrl.serve.protocol import RequestError, RewardRequest, Sample
from memrl.serve.scoring import BatchScorer
from memrl.serve.snapshots import SnapshotStore

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
        store: where snapshots go (None: no snapshots); the newest loadable one is restored here.
    """

    def __init__(self, spec: RewardSpec, config: ServeConfig, store: SnapshotStore | None = None) -> None:
        check_respond_mode(spec, config.respond)
        self.spec, self.config, self.store = spec, config, store
        self.scorer = BatchScorer(spec, has_tokenizer=config.tokenizer is not None)
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
        self._last_snapshot: str | None = self.resumed_from
        self._state_view = self._view_state()
        self._thread = threading.Thread(target=self._loop, name="memrl-serve-engine", daemon=True)
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ public (any thread)
    def start(self) -> RewardEngine:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def submit(self, request: RewardRequest) -> Future:
        """Queue a validated request; the future's result is its ``/get_reward`` answer."""
        return self._put(_Job("score", request=request))

    def commit(self, step: int | None = None) -> Future:
        """Commit the open step (then open ``step`` when given); result: what was committed."""
        return self._put(_Job("commit", step=step))

    def snapshot(self) -> Future:
        return self._put(_Job("snapshot"))

    def stop(self, timeout: float = 120.0) -> None:
        """Finish queued jobs, fail answers still waiting for a commit, write a final snapshot."""
        if self._stopped.is_set() or not self._thread.is_alive():
            return
        job = self._put(_Job("stop"))
        job.result(timeout=timeout)

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] += n

    def stats(self) -> dict[str, Any]:
        with self._lock:
            sizes = list(self._batch_sizes)
            counts = dict(self._counts)
            enc = self.scorer.memory.encoder if self.scorer.memory is not None else None
            return {
                "method": self.spec.method, "respond": self.config.respond, "step": self.step,
                "commits": self.commits, "buffered": len(self._buffer), "samples_committed": self.samples_committed,
                "requests": counts.get("requests", 0), "samples": counts.get("samples", 0),
                "errors": {k[6:]: v for k, v in counts.items() if k.startswith("error_")},
                "partial_commits": counts.get("partial_commits", 0), "failed_commits": counts.get("failed_commits", 0),
                "state": dict(self._state_view),
                "encoder": {"calls": enc.calls if enc else 0, "texts": enc.texts_encoded if enc else 0,
                            "micro_batches": len(sizes), "batch_size_mean": sum(sizes) / len(sizes) if sizes else 0.0,
                            "batch_size_max": max(sizes, default=0),
                            "batch_size_hist": _histogram(sizes)},
                "last_commit": dict(self._last_commit), "last_snapshot": self._last_snapshot,
                "resumed_from": self.resumed_from, "uptime_s": time.time() - self._started,
            }

    # ------------------------------------------------------------------ worker
    def _put(self, job: _Job) -> Future:
        if self._stopped.is_set():
            job.future.set_exception(RequestError(503, "", "the reward service is shutting down"))
        else:
            self._queue.put(job)
        return job.future

    def _loop(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self._next_timer())
            except queue.Empty:
                self._timers()
                continue
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
                return
            self._timers()

    def _control(self, job: _Job) -> bool:
        """Run a commit/snapshot/stop job; False after stop."""
        try:
            if job.kind == "commit":
                after = self.step + (1 if self._buffer else 0)  # the open step once this one is committed
                if job.step is not None and job.step < after:
                    raise RequestError(409, "step", f"step {job.step} cannot open: after this commit the open "
                                                    f"step is {after}")
                committed = self._commit("explicit") if self._buffer else 0
                if job.step is not None:
                    self.step = job.step
                job.future.set_result({"committed": committed, "step": self.step, "commits": self.commits})
            elif job.kind == "snapshot":
                job.future.set_result({"snapshot": self._save_snapshot(), "commits": self.commits})
            elif job.kind == "stop":
                self._stopped.set()
                self._fail_pending(RequestError(503, "", "the reward service stopped before this step committed"))
                while True:  # jobs that slipped in before the stop flag was set
                    try:
                        late = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    late.future.set_exception(RequestError(503, "", "the reward service is shutting down"))
                path = self._save_snapshot() if self.store is not None else None
                job.future.set_result({"snapshot": path})
                return False
        except Exception as exc:  # reported to the caller; the worker keeps going
            if not job.future.done():
                job.future.set_exception(exc)
        return True

    def _score_jobs(self, jobs: list[_Job]) -> None:
        samples = [s for j in jobs for s in j.request.samples]
        try:  # one encoder batch for all; a bad request among them is found below, on its own
            self._encode(samples)
        except (ValueError, TypeError):
            pass
        answers: list[tuple[Future, Any]] = []
        for job in jobs:
            request = job.request
            self._last_arrival = time.monotonic()
            try:
                self.scorer.check(request.samples)
                self._advance_to(request.step)
                if self.config.respond == "immediate":
                    self._encode(request.samples)
                    scored = self.scorer.preview(request.samples, self.step)
                    answers.append((job.future, scored.response(self.spec.names, step=self.step,
                                                                respond="immediate")))
                    self._buffer.extend(request.samples)
                else:
                    self.scorer.validate(request.samples, self.step)
                    lo = len(self._buffer)
                    self._buffer.extend(request.samples)
                    self._pending.append((lo, len(self._buffer), job.future, job.arrived))
                if self.config.commit_every and len(self._buffer) >= self.config.commit_every:
                    self._commit("commit_every")
            except RequestError as exc:
                answers.append((job.future, exc))
            except (ValueError, TypeError, KeyError) as exc:
                answers.append((job.future, RequestError(400, "", str(exc))))
            except Exception as exc:  # a bug: 500, the state is untouched (nothing was buffered)
                logger.exception("scoring a request failed")
                answers.append((job.future, exc))
        # answered after the whole micro-batch, commits included: when the answer to the request
        # that completes a step arrives, that step is committed
        for future, answer in answers:
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    def _encode(self, samples: list[Sample]) -> None:
        enc = self.scorer.memory.encoder if self.scorer.memory is not None else None
        before = enc.texts_encoded if enc is not None else 0
        self.scorer.encode(samples, self.step)
        if enc is not None and enc.texts_encoded > before:
            with self._lock:
                self._batch_sizes.append(enc.texts_encoded - before)

    def _advance_to(self, step: int | None) -> None:
        if step is None or step == self.step:
            return
        if step < self.step:
            raise RequestError(409, "step", f"step {step} is already committed; the open step is {self.step}")
        if self._buffer:
            self._commit("step")
        self.step = step

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
                future.set_exception(RuntimeError(f"the commit of step {self.step} failed: {exc}"))
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
            future.set_result(by_buffer.take(range(lo, hi)).response(self.spec.names, step=step, respond="commit"))
        if self.store is not None and self.commits % self.config.snapshot_every == 0:
            self._save_snapshot()
        return len(samples)

    def _fail_pending(self, exc: Exception) -> None:
        for _, _, future, _ in self._pending:
            future.set_exception(exc)
        self._pending = []

    def _next_timer(self) -> float:
        waits = [0.5]
        now = time.monotonic()
        if self._buffer and self.config.commit_idle_s:
            waits.append(self._last_arrival + self.config.commit_idle_s - now)
        if self._pending:
            waits.append(self._pending[0][3] + self.config.commit_timeout_s - now)
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

    def _save_snapshot(self) -> str | None:
        if self.store is None:
            return None
        meta = {"step": self.step, "commits": self.commits, "samples": self.samples_committed,
                "options": self.spec.options}
        path = str(self.store.save(self.spec.state, meta))
        with self._lock:
            self._last_snapshot = path
        return path


def _histogram(sizes: list[int]) -> dict[str, int]:
    """Encoder batch sizes counted in buckets 1, 2-3, 4-7, 8-15, ..."""
    counts = collections.Counter(1 << (s.bit_length() - 1) for s in sizes if s > 0)
    return {(str(low) if low == 1 else f"{low}-{2 * low - 1}"): counts[low] for low in sorted(counts)}
