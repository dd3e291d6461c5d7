"""``memrl serve`` under faults (issue 29), on loopback with the real encoder: a full disk and a
file-size limit during automatic and idle commits, a state dir that cannot be written, a failing
final snapshot, requests that must be refused without changing anything, a corrupt newest
snapshot, what a kill -9 loses, and read-only scoring of evaluation samples.

The disk faults are real: a small tmpfs (when this process may mount one, as root) filled up and
then freed, and ``RLIMIT_FSIZE`` on a subprocess server (any user) lifted with ``prlimit``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from helpers.serving import VALUES, Server, samples_of, service  # noqa: E402
from memrl.serve.app import build_service  # noqa: E402
from memrl.serve.client import RewardClient, RewardServiceError  # noqa: E402
from memrl.serve.config import ServeConfig, build_reward_spec  # noqa: E402
from memrl.serve.snapshots import SnapshotCorrupt, SnapshotStore, StateDirError  # noqa: E402


def post(client: RewardClient, body: bytes | str | dict, path: str = "/get_reward") -> tuple[int, dict, dict]:
    """``(status, JSON answer, headers)`` of one raw POST (no retries, any body)."""
    raw = json.dumps(body) if isinstance(body, dict) else body
    conn = http.client.HTTPConnection(client.host, client.port, timeout=60)
    conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data), {k.lower(): v for k, v in response.getheaders()}


def get(client: RewardClient, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(client.host, client.port, timeout=60)
    conn.request("GET", path)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data)


def wait_for(predicate, timeout: float = 20.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def send(client: RewardClient, sample: dict, **extra) -> dict:
    return client.get_reward(query=[sample["query"]], prompts=[sample["prompt"]], labels=[sample["answer"]], **extra)


def send_step(client: RewardClient, samples: list[dict]) -> list[dict]:
    """A step's requests sent concurrently (respond=commit answers wait for each other)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(len(samples)) as pool:
        return list(pool.map(lambda s: send(client, s), samples))


def memory_of(state_dir: Path, encoder) -> tuple[dict, object]:
    """The newest good snapshot in ``state_dir`` loaded into a fresh reward set: (meta, memory)."""
    spec = build_reward_spec(dict(VALUES), encoder=encoder)
    meta = SnapshotStore(state_dir).load_latest(spec.state, spec.options)
    return meta, spec.memory


# --------------------------------------------------------------------------- a full disk (tmpfs)
@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                             capture_output=True, text=True) if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the file-size-limit test covers the same faults")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the filler file (delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)
    return filler


@pytest.mark.parametrize("write, boundary", [("fork", "commit_every"), ("inline", "commit_every"),
                                             ("fork", "idle"), ("inline", "idle")])
def test_a_full_disk_never_stops_the_service_and_the_commits_reach_the_disk_once_it_is_freed(
        small_disk, encoder, tokenizer, write, boundary):
    """The state dir fills up: every commit still applies and answers, /health says degraded
    with the reason, POST /snapshot answers 503 with it; once space is freed the retry writes
    a snapshot holding every commit. Automatic commits (respond=commit, commit_every) and idle
    commits (commit_idle_s), snapshots written by a forked process and inline."""
    state_dir = small_disk / "state"
    options = ({"respond": "commit", "commit_every": 4} if boundary == "commit_every"
               else {"commit_idle_s": 0.3})
    with service(encoder, state_dir=str(state_dir), snapshot_every=1, snapshot_retry_s=0.2, snapshot_write=write,
                 max_unsaved_commits=3, **options) as (engine, client):
        filler = fill(small_disk)
        steps = [samples_of(0, tokenizer)[:4], samples_of(1, tokenizer)[:4]]
        for n, step in enumerate(steps, start=1):
            answers = send_step(client, step) if boundary == "commit_every" else [send(client, s) for s in step]
            assert all(len(a["rewards"]) == 1 for a in answers)
            wait_for(lambda n=n: engine.commits == n, what=f"commit {n}")
        # a forked writer reports its failure when it ends: wait for it
        wait_for(lambda: get(client, "/health")[1]["status"] == "degraded", what="/health degraded")
        status, health = get(client, "/health")
        assert status == 200 and health["status"] == "degraded"
        assert "No space left on device" in health["reason"] and str(state_dir) in health["reason"]
        wait_for(lambda: get(client, "/health")[1].get("unsaved_commits") == 2, what="2 unsaved commits")
        status, refused, headers = post(client, {}, "/snapshot")
        assert status == 503 and refused["field"] == "state_dir" and "No space left" in refused["error"]
        assert "retry-after" in headers
        stats = client.stats()
        assert stats["snapshots"]["failed"] >= 1 and stats["errors"]["503"] == 1 and stats["commits"] == 2
        # still serving: a third step is answered too
        answers = send_step(client, samples_of(2, tokenizer)[:4]) if boundary == "commit_every" \
            else [send(client, s) for s in samples_of(2, tokenizer)[:4]]
        wait_for(lambda: engine.commits == 3, what="commit 3")
        # 3 commits in memory only (--max-unsaved-commits 3): training samples are refused, evaluation served
        extra = samples_of(2, tokenizer)[5]
        body = {"query": [extra["query"]], "prompts": [extra["prompt"]], "labels": [extra["answer"]]}
        status, refused, _ = post(client, body)
        assert status == 503 and "--max-unsaved-commits 3" in refused["error"] and "No space left" in refused["error"]
        assert post(client, body, "/get_reward_eval")[0] == 200
        assert client.stats()["buffered"] == 0
        filler.unlink()  # space again: the next retry writes every commit
        wait_for(lambda: get(client, "/health")[1]["status"] == "ok", what="/health ok after the disk was freed")
        assert client.snapshot()["commits"] == 3
        assert client.stats()["snapshots"]["unsaved_commits"] == 0
        want = {"success": engine.spec.memory.success_memory.num_values,
                "failure": engine.spec.memory.failure_memory.num_values}
    assert not list(state_dir.glob(".snapshot-*"))  # failed writes left nothing behind
    meta, memory = memory_of(state_dir, encoder)
    assert meta["commits"] == 3 and meta["step"] == 3
    assert {"success": memory.success_memory.num_values, "failure": memory.failure_memory.num_values} == want
    assert want["success"] + want["failure"] == 12


# --------------------------------------------------------------------------- a file-size limit (any user)
def test_a_file_size_limit_degrades_then_recovers_and_a_kill_9_loses_exactly_the_unsaved_commits(tmp_path, tokenizer):
    """A subprocess server may write no file over 1 KiB: its snapshots fail (EFBIG), it serves on,
    degraded (POST /commit applies and answers 200); with the limit lifted the retry writes them. Then one more commit (below
    --snapshot-every) is in memory only, as /stats says, and a kill -9 loses exactly that one.
    A restart under the limit serves, and SIGTERM makes the final snapshot fail: exit status 1,
    the reason on stderr, the earlier snapshot intact."""
    samples = samples_of(0, tokenizer) + samples_of(1, tokenizer)  # 16 samples: 4 commits of 4
    extra = ["--snapshot-every", "2", "--snapshot-retry-s", "0.3"]
    first = Server(tmp_path, extra=extra, file_size_limit=1024)
    try:
        for s in samples[:8]:
            send(first.client, s)
        health = wait_for(lambda: (h := first.client.health())["status"] == "degraded" and h, what="degraded")
        assert "File too large" in health["reason"] and health["unsaved_commits"] == 2
        with pytest.raises(RewardServiceError) as refused:
            first.client.snapshot()
        assert refused.value.status == 503 and "File too large" in refused.value.body["error"]
        send(first.client, samples[8])  # still serving, and an explicit commit applies and answers 200
        assert first.client.commit() == {"committed": 1, "step": 3, "commits": 3}
        first.lift_file_size_limit()
        wait_for(lambda: first.client.health()["status"] == "ok", what="/health ok after the limit was lifted")
        assert first.client.stats()["snapshots"]["unsaved_commits"] == 0
        for s in samples[9:13]:
            send(first.client, s)  # commit 4: one short of the next snapshot
        stats = first.client.stats()
        assert stats["commits"] == 4 and stats["snapshots"]["unsaved_commits"] == 1
    finally:
        first.kill9()
    second = Server(tmp_path, extra=extra, file_size_limit=1024)
    try:
        assert second.client.health() == {"status": "ok", "step": 3, "commits": 3}  # lost: the 1 unsaved commit
        for s in samples[13:16]:
            send(second.client, s)
        assert second.client.commit()["commits"] == 4
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(timeout=60) == 1
        time.sleep(0.2)  # the reader thread drains the last lines
        output = "".join(second.output)
        assert "final snapshot" in output and "File too large" in output and str(tmp_path) in output
    finally:
        if second.proc.poll() is None:
            second.kill9()
    store = SnapshotStore(tmp_path)  # failed tries left nothing; the snapshot of the 3 commits is intact
    assert [p.name for p in store.snapshots()] == ["snapshot-00000001"]
    assert store.verify(store.snapshots()[-1])["commits"] == 3


# --------------------------------------------------------------------------- a state dir that cannot be written
def test_a_state_dir_that_cannot_be_written_is_refused_at_start_naming_it(tmp_path, encoder):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StateDirError, match=str(blocker / "state")):
        build_service(dict(VALUES), ServeConfig(port=0, state_dir=str(blocker / "state")), encoder=encoder)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: a read-only mount instead
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(read_only)],
                          capture_output=True).returncode != 0:
            read_only = None
    else:
        read_only.chmod(0o500)
    try:
        if read_only is not None:
            with pytest.raises(StateDirError, match=f"{read_only} cannot be written"):
                build_service(dict(VALUES), ServeConfig(port=0, state_dir=str(read_only)), encoder=encoder)
        # the command: exit status 1 and the path, before any model is loaded
        run = subprocess.run([sys.executable, "-m", "memrl.cli", "serve", "--state-dir", str(blocker / "state"),
                              "--port", "0"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 1 and f"--state-dir {blocker / 'state'} cannot be written" in run.stderr
    finally:
        if read_only is not None and os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(read_only)], check=False)
        elif read_only is not None:
            read_only.chmod(0o700)


# --------------------------------------------------------------------------- refused requests change nothing
def test_refused_requests_change_nothing_and_every_bound_answers_400_or_413_by_field(encoder, tokenizer):
    s = samples_of(0, tokenizer)[0]
    good = {"query": [s["query"]], "prompts": [s["prompt"]], "labels": [s["answer"]]}
    deep = "[" * 5000 + "]" * 5000
    with service(encoder, max_step_jump=5, max_text_chars=4000) as (engine, client):
        for sample in samples_of(0, tokenizer)[:3]:
            send(client, sample, step=0)
        before = client.stats()
        assert before["buffered"] == 3 and before["step"] == 0
        cases = [
            # a lone surrogate with a higher step: refused before the step moves or the buffer commits
            ({"responses": ["\ud800 broken"], "prompts": [s["prompt"]], "labels": ["72"], "step": 1}, 400, "responses[0]"),
            ({**good, "prompts": [s["prompt"] + "\udfff"], "step": 1}, 400, "prompts[0]"),
            ({**good, "labels": [{"answer": "\ud83d"}], "step": 1}, 400, "labels[0].answer"),
            ({"responses": ["x"], "prompts": [[{"role": "user", "content": "\udc00"}]], "labels": ["1"], "step": 1},
             400, "prompts[0][0].content"),
            # a query that does not hold its prompt, with a higher step
            ({**good, "query": ["an unrelated text"], "step": 1}, 400, "query[0]"),
            # nesting and integer size
            (f'{{"prompts": {deep}, "labels": ["1"], "query": ["x"]}}', 400, "body"),
            (f'{{"prompts": ["q"], "labels": [{"1" * 5000}], "responses": ["x"]}}', 400, "labels[0]"),
            (f'{{"prompts": ["q"], "labels": ["1"], "responses": ["x"], "step": {"9" * 5000}}}', 400, "step"),
            # the length of one text, and how far a step may jump
            ({**good, "query": [s["query"] + "x" * 4000]}, 413, "query[0]"),
            ({**good, "step": 6}, 400, "step"),
            ({**good, "step": 10**30}, 400, "step"),
        ]
        for body, status, field_name in cases:
            got_status, got, _ = post(client, body if isinstance(body, (str, dict)) else body)
            assert (got_status, got["field"]) == (status, field_name), (field_name, got)
            assert got["error"]
        for body in (f'{{"step": {deep}}}', f'{{"step": {"9" * 5000}}}', '{"step": 6}', '{"step": 1000000000000}'):
            got_status, got, _ = post(client, body, "/commit")
            assert got_status == 400 and got["field"] in ("body", "step"), got
        after = client.stats()
        assert (after["step"], after["commits"], after["buffered"], after["state"]) == (0, 0, 3, before["state"])
        assert after["errors"] == {"400": 14, "413": 1}  # every refusal counted, no 500
        assert client.health()["status"] == "ok"
        assert send(client, s, step=5)["memrl"]["step"] == 5  # a jump within the bound is fine
        assert engine.commits == 1
    # a request the rewards' own checks refuse (cosine needs token ids), with a higher step
    with service(None, {"method": "cosine"}) as (engine, client):
        client.get_reward(responses=["<answer>4</answer>"], prompts=["2+2?"], labels=["4"], completion_ids=[[1, 2]])
        with pytest.raises(RewardServiceError) as refused:
            client.get_reward(responses=["<answer>5</answer>"], prompts=["2+2?"], labels=["4"], step=3)
        assert refused.value.status == 400 and refused.value.body["field"] == "completion_ids[0]"
        stats = client.stats()
        assert (stats["step"], stats["commits"], stats["buffered"]) == (0, 0, 1)
    # the default text bound (65,536 characters) refuses a huge completion at once
    with service(encoder) as (engine, client):
        t0 = time.perf_counter()
        status, got, _ = post(client, {"responses": ["word " * 400_000], "prompts": ["q"], "labels": ["1"]})
        assert (status, got["field"]) == (413, "responses[0]") and time.perf_counter() - t0 < 5
        assert client.stats()["buffered"] == 0


# --------------------------------------------------------------------------- corrupt snapshots
def test_a_corrupt_newest_snapshot_is_quarantined_and_its_number_is_never_reused(tmp_path, encoder, tokenizer):
    state_dir = tmp_path / "state"
    options = {"state_dir": str(state_dir), "commit_every": 4, "snapshot_every": 1}
    step0, step1 = samples_of(0, tokenizer)[:4], samples_of(1, tokenizer)[:4]
    with service(encoder, **options) as (engine, client):
        for sample in step0 + step1:
            send(client, sample)
        assert client.snapshot()["snapshot"].endswith("snapshot-00000002")
    newest = state_dir / "snapshot-00000002"
    npz = newest / "memory" / "failure.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])  # truncated, as by a disk fault
    with pytest.raises(SnapshotCorrupt, match="failure.npz has"):
        SnapshotStore(state_dir).verify(newest)
    with service(encoder, **options) as (engine, client):
        stats = client.stats()
        assert stats["resumed_from"].endswith("snapshot-00000001") and stats["commits"] == 1
        assert stats["snapshots"]["quarantined"] == [str(state_dir / "snapshot-00000002.corrupt")]
        for sample in step1:
            send(client, sample)  # commit 2 again: a new state, under a new number
        assert client.snapshot()["snapshot"].endswith("snapshot-00000003")
        want = engine.spec.memory.failure_memory.num_values
    assert (state_dir / "snapshot-00000002.corrupt").is_dir() and not newest.exists()
    meta, memory = memory_of(state_dir, encoder)
    assert meta["path"].endswith("snapshot-00000003") and meta["commits"] == 2
    assert memory.failure_memory.num_values == want
    # a flipped byte inside an archive fails its CRC check
    npz = state_dir / "snapshot-00000003" / "memory" / "success.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 3] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorrupt):
        SnapshotStore(state_dir).verify(state_dir / "snapshot-00000003")


# --------------------------------------------------------------------------- read-only evaluation
def test_evaluation_samples_are_scored_read_only(encoder, tokenizer, monkeypatch):
    """/get_reward_eval, {"eval": true} and labels marked {"eval": true} (OpenRLHF's way) score
    against the committed memory, change nothing, and answer the outcome reward as ``rewards``."""
    from memrl.integrations import verl

    with service(encoder, respond="commit", commit_every=8) as (engine, client):
        send_step(client, samples_of(0, tokenizer))  # one committed step to read from
        s = samples_of(1, tokenizer)[1]  # a wrong answer: correctness 0, format rewards > 0
        before = (client.stats()["state"], engine.step, engine.commits, client.stats()["buffered"])
        route = client.get_reward(query=[s["query"]], prompts=[s["prompt"]], labels=[s["answer"]], evaluation=True)
        flag = post(client, {"query": [s["query"]], "prompts": [s["prompt"]], "labels": [s["answer"]], "eval": True,
                             "step": 99})[1]
        marked = post(client, {"query": [s["query"]], "prompts": [s["prompt"]],
                               "labels": [{"answer": s["answer"], "eval": True}]})[1]
        for answer in (flag, marked):
            assert answer["extra_logs"] == route["extra_logs"] and answer["rewards"] == route["rewards"]
        names = engine.spec.names
        assert route["rewards"] == route["scores"] == route["extra_logs"][names[0]]
        weights = dict(zip(names, engine.spec.weights))
        assert route["memrl"]["total"][0] == pytest.approx(sum(w * route["extra_logs"][n][0] for n, w in weights.items()))
        assert route["memrl"]["raw"]["exploit_raw"][0] is not None  # it read the committed memory
        assert (client.stats()["state"], engine.step, engine.commits, client.stats()["buffered"]) == before
        mixed = post(client, {"responses": ["a", "b"], "prompts": ["q", "q"],
                              "labels": [{"answer": "1", "eval": True}, "1"]})
        assert mixed[0] == 400 and mixed[1]["field"] == "labels[1]"
        stats = client.stats()
        assert stats["eval_requests"] == 3 and stats["requests"] == 8
        # verl: validation samples (extra_info split "test") go to /get_reward_eval
        monkeypatch.setenv(verl.URL_ENV, client.url)
        score = verl.compute_score("openai/gsm8k", s["response"], s["answer"], {"question": s["question"],
                                                                                 "split": "test"})
        assert score["score"] == pytest.approx(route["rewards"][0])
        assert (client.stats()["state"], engine.step, engine.commits, client.stats()["buffered"]) == before
        # the same answer as a training request would get, but nothing joins a step
        assert verl.is_evaluation({"split": "train"}) is False
        assert verl.is_evaluation({"split": "train", "memrl_eval": True}) is True
    # settings without a read-only per-request value answer the stateless rewards
    with service(None, {"method": "outcome-batch"}, respond="commit") as (engine, client):
        answer = client.get_reward(responses=["<answer>\n4\n</answer>"], prompts=["2+2?"], labels=["4"], evaluation=True)
        names = engine.spec.names
        assert answer["rewards"] == answer["extra_logs"][names[0]] and names[-1] not in answer["extra_logs"]
        assert answer["memrl"]["total"] is None and client.stats()["buffered"] == 0
