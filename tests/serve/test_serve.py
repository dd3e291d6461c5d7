"""``memrl serve``: the reward service over real HTTP on loopback, with the real encoder, the real
SmolLM2 tokenizer (queries built exactly as OpenRLHF builds them) and model-like completions.

The in-process reference is the same reward set built from the same options, called the way
TRL's GRPOTrainer calls it: every reward function once on the step's batch. It shares the
service's encoder (and so its cache of vectors), and runs only while the service is idle.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import random
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from helpers.serving import STEPS, VALUES, Q, Server, alive, samples_of, service  # noqa: E402
from memrl.serve.app import build_service  # noqa: E402
from memrl.serve.client import RewardClient, RewardServiceError  # noqa: E402
from memrl.serve.config import ServeConfig, build_reward_spec  # noqa: E402

TOL = 1e-6


class Reference:
    """The same rewards in-process, called as TRL calls them: each function once on the batch."""

    def __init__(self, encoder, values=None) -> None:
        self.spec = build_reward_spec(dict(values or VALUES), encoder=encoder)
        self.memory = self.spec.memory

    @staticmethod
    def kwargs(samples: list[dict], step: int) -> dict:
        return {"prompts": [s["prompt"] for s in samples], "completions": [s["response"] for s in samples],
                "answer": [s["answer"] for s in samples], "question": [s["question"] for s in samples],
                "trainer_state": SimpleNamespace(global_step=step)}

    def step(self, samples: list[dict], step: int) -> dict[str, np.ndarray]:
        kwargs = self.kwargs(samples, step)
        memory = self.memory.compute(**kwargs)
        out = {name: np.asarray(f(**kwargs), float) for name, f in zip(self.spec.names, self.spec.funcs)}
        out["total"] = sum(w * out[n] for n, w in zip(self.spec.names, self.spec.weights))
        out["exploit_raw"], out["explore_raw"] = memory["exploit_raw"], memory["explore_raw"]
        return out


def as_arrays(answers: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """Per-sample service answers (one sample each) as arrays, NaN for a raw value of null."""
    out = {name: np.array([a["extra_logs"][name][0] for a in answers], float) for name in names}
    out["total"] = np.array([a["rewards"][0] for a in answers], float)
    for k in ("exploit_raw", "explore_raw"):
        out[k] = np.array([np.nan if a["memrl"]["raw"][k][0] is None else a["memrl"]["raw"][k][0] for a in answers])
    return out


def send_concurrently(client: RewardClient, samples: list[dict], seed: int, threads: int = 8) -> list[dict]:
    """One OpenRLHF-style request per sample, all at once, in a shuffled order; answers by sample."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    answers: list[dict | None] = [None] * len(samples)

    def one(i: int) -> None:
        s = samples[i]
        answers[i] = client.get_reward(query=[s["query"]], prompts=[s["prompt"]], labels=[s["answer"]])

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, order))
    return answers


def assert_same_memory(a, b) -> None:
    """Same keys, same stored vectors per key (as a set of rows), same normaliser windows (as sets)."""
    for name in ("success_memory", "failure_memory"):
        ma, mb = getattr(a, name), getattr(b, name)
        assert sorted(ma.key_ids()) == sorted(mb.key_ids())
        for key in ma.key_ids():
            va, vb = ma.values_of(key), mb.values_of(key)
            np.testing.assert_allclose(va[np.lexsort(va.T)], vb[np.lexsort(vb.T)], atol=TOL)
    for name in ("exploit_norm", "explore_norm"):
        np.testing.assert_allclose(sorted(getattr(a, name).values), sorted(getattr(b, name).values), atol=TOL)


# --------------------------------------------------------------------------- equality with in-process
def test_score_is_compute_without_the_write(encoder, tokenizer):
    ref = Reference(encoder)
    ref.step(samples_of(0, tokenizer), 0)
    kwargs = ref.kwargs(samples_of(1, tokenizer), 1)
    keys = (len(ref.memory.success_memory), ref.memory.success_memory.num_values, ref.memory.failure_memory.num_values)
    window = list(ref.memory.exploit_norm.values)
    preview = ref.memory.score(**kwargs)
    assert (len(ref.memory.success_memory), ref.memory.success_memory.num_values,
            ref.memory.failure_memory.num_values) == keys
    assert list(ref.memory.exploit_norm.values) == window and ref.memory.calls == 1
    result = ref.memory.compute(**kwargs)
    for k in ("exploit", "explore", "exploit_raw", "explore_raw"):
        np.testing.assert_allclose(preview[k], result[k], atol=1e-12)


def test_commit_mode_equals_one_in_process_step_whatever_the_arrival_order(encoder, tokenizer):
    """respond=commit, B = 8: per-sample OpenRLHF requests sent concurrently in a shuffled order
    get, for every reward and the total, the values of one in-process call over the step."""
    ref = Reference(encoder)
    with service(encoder, respond="commit", commit_every=8) as (engine, client):
        for step in range(3):
            samples = samples_of(step, tokenizer)
            got = as_arrays(send_concurrently(client, samples, seed=step), engine.spec.names)
            want = ref.step(samples, step)
            for key, values in want.items():
                np.testing.assert_allclose(got[key], values, atol=TOL, err_msg=f"step {step}: {key}")
        assert engine.commits == 3 and client.stats()["buffered"] == 0
        assert_same_memory(engine.spec.memory, ref.memory)
    # the checks had something to check: retrieval and both intrinsic rewards were live at step 2
    assert np.isfinite(want["exploit_raw"]).all() and np.isfinite(want["explore_raw"]).any()
    assert np.ptp(want["memory_exploit_reward"]) > 0.1 and np.ptp(want["memory_explore_reward"]) > 0.1


def test_immediate_mode_answers_each_request_against_the_committed_memory(encoder, tokenizer):
    """respond=immediate: R1 rewards and raw exploit/explore equal the in-process step; the
    normalised intrinsic rewards are the sample scored alone (MemoryRPlus.score) against the
    committed memory; a request holding the whole step equals the in-process step exactly."""
    ref = Reference(encoder)
    with service(encoder, commit_every=8) as (engine, client):
        for step in range(3):
            samples = samples_of(step, tokenizer)
            got = as_arrays(send_concurrently(client, samples, seed=10 + step), engine.spec.names)
            alone = [ref.memory.score(**ref.kwargs([s], step)) for s in samples]  # before the step's write
            want = ref.step(samples, step)
            for name in engine.spec.names[:5]:  # correctness + the four format rewards
                np.testing.assert_allclose(got[name], want[name], atol=TOL)
            for key in ("exploit_raw", "explore_raw"):
                np.testing.assert_allclose(got[key], want[key], atol=TOL)
            np.testing.assert_allclose(got["memory_exploit_reward"], [a["exploit"][0] for a in alone], atol=TOL)
            np.testing.assert_allclose(got["memory_explore_reward"], [a["explore"][0] for a in alone], atol=TOL)
        assert_same_memory(engine.spec.memory, ref.memory)
        # one request with the whole step (verl's batch reward manager sends this): the in-process values
        samples = samples_of(2, tokenizer)
        answer = client.get_reward(query=[s["query"] for s in samples], prompts=[s["prompt"] for s in samples],
                                   labels=[s["answer"] for s in samples])
        want = ref.step(samples, 3)
        np.testing.assert_allclose(answer["rewards"], want["total"], atol=TOL)
        for name in engine.spec.names:
            np.testing.assert_allclose(answer["extra_logs"][name], want[name], atol=TOL)
        assert engine.commits == 4
        assert_same_memory(engine.spec.memory, ref.memory)


def test_order_dependent_semantics_need_respond_commit_and_then_run_in_canonical_order(encoder, tokenizer):
    for values in ({**VALUES, "memory_semantics": "write_then_score"}, {**VALUES, "memory_semantics": "reference"},
                   {**VALUES, "memory_semantics": "group_loo"}, {"method": "outcome-batch"}):
        with pytest.raises(ValueError, match="--respond commit"):
            build_service(values, ServeConfig(port=0), encoder=encoder)
    values = {**VALUES, "memory_semantics": "write_then_score"}
    ref = Reference(encoder, values)
    samples = samples_of(0, tokenizer)
    canonical = sorted(range(len(samples)), key=lambda i: (samples[i]["question"], samples[i]["prompt"],
                                                           samples[i]["response"]))
    with service(encoder, values, respond="commit", commit_every=8) as (engine, client):
        got = as_arrays(send_concurrently(client, samples, seed=3), engine.spec.names)
    want = ref.step([samples[i] for i in canonical], 0)
    for key, values_ in want.items():
        np.testing.assert_allclose(got["total" if key == "total" else key][canonical], values_, atol=TOL)


# --------------------------------------------------------------------------- the zero-variance gate
# three steps of 2 questions x 4 completions from STEPS: one group whose correctness does not vary
# (all right, all wrong, all right) and one whose correctness varies, per step
GATE_STEPS = [[STEPS[0][0], STEPS[1][0], STEPS[1][1], STEPS[2][4], *STEPS[0][4:8]],
              [STEPS[0][1], STEPS[0][3], STEPS[1][2], STEPS[1][3], *STEPS[1][4:8]],
              [*STEPS[2][0:4], STEPS[0][4], STEPS[1][4], STEPS[2][6], STEPS[0][7]]]


def test_the_zero_variance_gate_through_the_service(encoder, tokenizer, capsys):
    """memory_gate=zero_variance needs --respond commit (a request does not hold its group); then
    per-sample requests in a shuffled order get the in-process values: R1's alone in the group whose
    correctness varies, the ungated intrinsic values in the other; the memory is the ungated run's."""
    from memrl.cli import main

    gated = {**VALUES, "memory_gate": "zero_variance"}
    with pytest.raises(ValueError, match="memory_gate='zero_variance'.*--respond commit"):
        build_service(gated, ServeConfig(port=0), encoder=encoder)
    assert main(["serve", "--print-config", "--memory-gate", "zero_variance", "--respond", "commit"]) == 0
    assert json.loads(capsys.readouterr().out)["options"]["memory"]["memory_gate"] == "zero_variance"
    ref, plain = Reference(encoder, gated), Reference(encoder)
    removed = 0.0
    with service(encoder, gated, respond="commit", commit_every=8) as (engine, client):
        names = engine.spec.names
        intrinsic = ["memory_exploit_reward", "memory_explore_reward"]
        for step in range(3):
            samples = samples_of(step, tokenizer, GATE_STEPS)
            got = as_arrays(send_concurrently(client, samples, seed=20 + step), names)
            want, ungated = ref.step(samples, step), plain.step(samples, step)
            for key, values in want.items():
                np.testing.assert_allclose(got[key], values, atol=TOL, err_msg=f"step {step}: {key}")
            correct = want["correctness_reward"]
            varies = np.repeat([np.ptp(correct[:4]) > 0, np.ptp(correct[4:]) > 0], 4)
            assert varies.sum() == 4  # one group of each kind
            np.testing.assert_allclose(got["total"][varies], sum(got[n] for n in names[:5])[varies], atol=TOL)
            for name in intrinsic:
                assert got[name][varies].tolist() == pytest.approx([0.0] * 4, abs=1e-12)
                np.testing.assert_allclose(got[name][~varies], ungated[name][~varies], atol=TOL)
                removed += np.abs(ungated[name][varies]).sum()
            assert client.stats()["last_commit"]["metrics"]["memory/gated_frac"] == pytest.approx(0.5)
        assert_same_memory(engine.spec.memory, plain.memory)
    assert removed > 0.5 and np.abs(want["memory_exploit_reward"]).sum() > 0.1  # real values on both sides


# --------------------------------------------------------------------------- verl and client steps
def test_verl_compute_score_and_batch(encoder, tokenizer, monkeypatch):
    from memrl.integrations import verl

    ref = Reference(encoder)
    with service(encoder, commit_every=8) as (engine, client):
        monkeypatch.setenv(verl.URL_ENV, client.url)
        step0 = samples_of(0, tokenizer)
        # verl's naive reward manager: one call per sample, in order, with the decoded response only
        scores = [verl.compute_score("openai/gsm8k", s["response"], s["answer"], {"question": s["question"], "index": i})
                  for i, s in enumerate(step0)]
        want = ref.step(step0, 0)
        np.testing.assert_allclose([r["score"] for r in scores], want["total"], atol=TOL)  # empty memory: alone = batch
        assert set(scores[0]) == {"score", *engine.spec.names}
        step1 = samples_of(1, tokenizer)
        # verl's batch reward manager: the whole step in one call and one request
        batch = verl.compute_score_batch(["openai/gsm8k"] * 8, [s["response"] for s in step1],
                                         np.array([s["answer"] for s in step1], dtype=object),
                                         [{"question": s["question"]} for s in step1])
        want = ref.step(step1, 1)
        np.testing.assert_allclose([r["score"] for r in batch], want["total"], atol=TOL)
        np.testing.assert_allclose([r["memory_exploit_reward"] for r in batch], want["memory_exploit_reward"], atol=TOL)
        assert engine.commits == 2
        with pytest.raises(ValueError, match="question"):
            verl.compute_score("x", "<answer>1</answer>", "1", {"index": 3})


def test_client_steps_commit_the_earlier_buffer_and_stale_steps_are_refused(encoder, tokenizer):
    with service(encoder) as (engine, client):  # no commit_every: steps come from the client
        step0, step1 = samples_of(0, tokenizer), samples_of(1, tokenizer)
        for s in step0:
            client.get_reward(responses=[s["response"]], prompts=[s["prompt"]], labels=[s["answer"]], step=0)
        assert engine.commits == 0 and client.stats()["buffered"] == 8
        answer = client.get_reward(responses=[step1[0]["response"]], prompts=[step1[0]["prompt"]],
                                   labels=[step1[0]["answer"]], step=1)
        assert answer["memrl"]["step"] == 1 and engine.commits == 1
        assert answer["memrl"]["raw"]["exploit_raw"][0] is not None  # read the committed step 0
        with pytest.raises(RewardServiceError) as err:
            client.get_reward(responses=["x"], prompts=["q"], labels=["1"], step=0)
        assert err.value.status == 409 and err.value.body["field"] == "step"
        assert client.commit(step=5) == {"committed": 1, "step": 5, "commits": 2}


# --------------------------------------------------------------------------- load and safety
def test_eight_clients_fifty_requests_each_without_an_error(encoder):
    """8 threads x 50 per-sample requests (distinct completions), B = 40: 10 commits, no error."""
    rng = random.Random(0)
    work = []
    for t in range(8):
        for j in range(50):
            qid = ("clips", "weng", "betty")[(t + j) % 3]
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            guess = Q[qid][1] if j % 3 == 0 else str(a + b)
            work.append((t, Q[qid][0], f"<think>\nTry {a} + {b} = {a + b} (client {t}, sample {j}).\n</think>\n"
                                       f"<answer>\n{guess}\n</answer>", Q[qid][1]))
    with service(encoder, commit_every=40, batch_wait_ms=5) as (engine, client):
        errors: list[BaseException] = []

        def run(t: int) -> None:
            for _, question, response, gold in [w for w in work if w[0] == t]:
                try:
                    answer = client.get_reward(responses=[response], prompts=[question], labels=[gold])
                    assert len(answer["rewards"]) == 1 and np.isfinite(answer["rewards"][0])
                except BaseException as exc:  # noqa: BLE001 - every failure counts
                    errors.append(exc)

        start = time.perf_counter()
        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        elapsed = time.perf_counter() - start
        stats = client.stats()
    assert not errors, errors[:3]
    assert elapsed < 90, elapsed
    assert stats["requests"] == 400 and stats["commits"] == 10 and stats["errors"] == {}
    assert stats["encoder"]["batch_size_mean"] > 1.5  # concurrent requests were encoded together
    assert stats["state"]["success_values"] + stats["state"]["failure_values"] == 400


def test_bad_requests_are_refused_by_field_and_change_nothing(encoder, tokenizer):
    import http.client

    s = samples_of(0, tokenizer)[0]
    good = {"query": [s["query"]], "prompts": [s["prompt"]], "labels": [s["answer"]]}
    with service(encoder, token="s3cret", max_samples=4, max_body_mb=0.01) as (engine, client):
        host, port = client.host, client.port

        def post(body: bytes | str, token: str | None = "s3cret", path: str = "/get_reward"):
            conn = http.client.HTTPConnection(host, port, timeout=30)
            headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
            conn.request("POST", path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            conn.close()
            return r.status, json.loads(data) if data else None

        assert post(json.dumps(good), token=None)[0] == 401
        assert post(json.dumps(good), token="wrong")[0] == 401
        assert post(json.dumps(good), token=None, path="/get_reward?token=wrong")[0] == 401
        assert RewardClient(client.url, token="").health()["status"] == "ok"  # /health needs no token
        cases = [
            (b"{not json", 400, "body"),
            (b"\xff\xfe", 400, "body"),
            ("[1, 2]", 400, "body"),
            ({"query": [s["query"]], "prompts": [s["prompt"]]}, 400, "labels"),
            ({**good, "labels": "42"}, 400, "labels"),
            ({**good, "labels": [None]}, 400, "labels[0]"),
            ({**good, "labels": [{"gold": 1}]}, 400, "labels[0]"),
            ({**good, "query": [17]}, 400, "query[0]"),
            ({**good, "query": ["an unrelated text"]}, 400, "query[0]"),
            ({**good, "prompts": [s["prompt"], s["prompt"]]}, 400, "labels"),
            ({**good, "prompts": [[{"role": "user"}]]}, 400, "prompts[0][0]"),
            ({**good, "step": "one"}, 400, "step"),
            ({**good, "step": -1}, 400, "step"),
            ({"prompts": [], "labels": [], "query": []}, 400, "prompts"),
            ({"query": [s["query"]] * 5, "prompts": [s["prompt"]] * 5, "labels": ["1"] * 5}, 413, "prompts"),
            ({**good, "query": [s["query"] + "x" * 20_000]}, 413, "body"),
        ]
        for body, status, field_name in cases:
            raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
            got_status, got = post(raw)
            assert (got_status, got["field"]) == (status, field_name), (body if len(str(body)) < 200 else field_name, got)
            assert got["error"]
        assert post("", path="/commit")[0] == 200  # an empty commit is fine
        assert post('{"step": "x"}', path="/commit") == (400, {"error": "step: must be an integer >= 0, got 'x'",
                                                               "field": "step"})
        stats = RewardClient(client.url, token="s3cret").stats()
        assert stats["buffered"] == 0 and stats["requests"] == 0 and stats["state"]["success_keys"] == 0
        assert stats["errors"]["400"] >= 14 and stats["errors"]["401"] == 3 and stats["errors"]["413"] == 2
        # still serving, and a good request works
        assert client.health()["status"] == "ok"
        assert post(json.dumps(good))[0] == 200 and engine.stats()["buffered"] == 1
        assert post(json.dumps(good), token=None, path="/get_reward?token=s3cret")[0] == 200  # OpenRLHF: no headers


# --------------------------------------------------------------------------- kill -9 and resume
def test_kill_9_during_and_after_a_snapshot_leaves_a_loadable_one_and_a_restart_continues(tmp_path, tokenizer, encoder):
    from memrl.grpo.config import read_yaml_config
    from memrl.options import preset_path
    from memrl.serve.snapshots import PAUSE_ENV, SnapshotStore

    samples = samples_of(0, tokenizer)  # step 0: clips x 4; step 1: weng x 4
    send = lambda client, s: client.get_reward(query=[s["query"]], prompts=[s["prompt"]], labels=[s["answer"]])
    # 1. the second snapshot (commit 2) pauses inside its temporary folder; kill -9 there
    first = Server(tmp_path, env={PAUSE_ENV: "60:2"})
    try:
        for s in samples[:4]:
            send(first.client, s)
        assert first.client.snapshot()["snapshot"].endswith("snapshot-00000001")  # answered once on disk
        after_one = first.client.stats()
        assert after_one["commits"] == 1 and (tmp_path / "snapshot-00000001" / "service.json").is_file()
        before_kill = [send(first.client, s) for s in samples[4:7]]
        # the request completing step 1 commits it; its answer waits for the (paused) snapshot
        threading.Thread(target=_quiet, args=(send, first.client, samples[7]), daemon=True).start()
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob(".snapshot-00000002*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.glob(".snapshot-00000002*")), "the second snapshot never started"
        writers = first.children()  # the forked process writing snapshot 2
        assert writers
    finally:
        first.kill9()
    assert not (tmp_path / "snapshot-00000002").exists()
    deadline = time.monotonic() + 10  # the writer died with the service (it would finish the write otherwise)
    while any(alive(pid) for pid in writers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in writers)
    # 2. a restart resumes from the previous snapshot and answers the interrupted step as before
    second = Server(tmp_path)
    try:
        assert second.client.health() == {"status": "ok", "step": 1, "commits": 1}
        resumed = second.client.stats()
        assert resumed["state"] == after_one["state"] and resumed["resumed_from"].endswith("snapshot-00000001")
        assert not list(tmp_path.glob(".snapshot-*"))  # the interrupted write was cleaned up
        again = [send(second.client, s) for s in samples[4:7]]
        assert again == before_kill
        send(second.client, samples[7])  # commit 2, its snapshot written (no pause now)
        # numbers are never reused: 2 was the interrupted write's, so this one is 3
        assert second.client.snapshot()["snapshot"].endswith("snapshot-00000003")
        after_two = second.client.stats()
        assert after_two["commits"] == 2 and after_two["last_snapshot"].endswith("snapshot-00000003")
    finally:
        second.kill9()  # 3. kill -9 after the snapshot: it is complete and loads
    values = {**read_yaml_config(preset_path("cpu-tiny", "grpo")), "method": "memory-r+",
              "memory_explore_warmup_steps": 0}
    spec = build_reward_spec(values, encoder=encoder)
    meta = SnapshotStore(tmp_path).load_latest(spec.state, spec.options)
    assert meta["commits"] == 2 and meta["step"] == 2 and meta["path"].endswith("snapshot-00000003")
    memory = spec.memory
    assert {"success_keys": len(memory.success_memory), "failure_values": memory.failure_memory.num_values} == {
        "success_keys": after_two["state"]["success_keys"], "failure_values": after_two["state"]["failure_values"]}


def _quiet(fn, *args) -> None:
    with contextlib.suppress(Exception):
        fn(*args)


# --------------------------------------------------------------------------- the other methods
def test_outcome_methods_and_weights_equal_the_in_process_step(tokenizer):
    """outcome-ucb answered per request equals the in-process step (its bonus reads the counts
    before the step); outcome-batch (within-group repeats) needs respond=commit; reward weights
    and the cosine reward's token counts go through as in TRL."""
    steps = [samples_of(0, tokenizer), samples_of(1, tokenizer)]
    for values, options in (({"method": "outcome-ucb", "reward_weights_by_name": {"correctness_reward": 2.0}}, {}),
                            ({"method": "outcome-batch"}, {"respond": "commit"})):
        ref = Reference(None, values)
        with service(None, values, commit_every=8, **options) as (engine, client):
            for step, samples in enumerate(steps):
                got = send_concurrently(client, samples, seed=step)
                kwargs = ref.kwargs(samples, step)
                want = {n: np.asarray(f(**kwargs), float) for n, f in zip(ref.spec.names, ref.spec.funcs)}
                total = sum(w * want[n] for n, w in zip(ref.spec.names, ref.spec.weights))
                np.testing.assert_allclose([a["rewards"][0] for a in got], total, atol=TOL)
                name = engine.spec.names[-1]
                np.testing.assert_allclose([a["extra_logs"][name][0] for a in got], want[name], atol=TOL)
                assert np.ptp(want[name]) > 0  # the exploration term varies within the step
    with service(None, {"method": "cosine"}) as (_, client):
        with pytest.raises(RewardServiceError, match="completion_ids"):
            client.get_reward(responses=["<answer>4</answer>"], prompts=["2+2?"], labels=["4"])
        ids = tokenizer("<answer>4</answer>", add_special_tokens=False)["input_ids"]
        answer = client.get_reward(responses=["<answer>4</answer>"], prompts=["2+2?"], labels=["4"], completion_ids=[ids])
        assert answer["scores"][0] > 0.5  # right and short: a high cosine reward


def test_sigterm_writes_a_final_snapshot_and_exits_cleanly(tmp_path, tokenizer):
    import signal

    server = Server(tmp_path, extra=["--snapshot-every", "100"])
    for s in samples_of(0, tokenizer)[:4]:
        server.client.get_reward(query=[s["query"]], prompts=[s["prompt"]], labels=[s["answer"]])
    assert not list(tmp_path.glob("snapshot-*"))  # no periodic snapshot yet
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    meta = json.loads((tmp_path / "snapshot-00000001" / "service.json").read_text())
    assert (meta["commits"], meta["step"]) == (1, 1)
    assert (tmp_path / "snapshot-00000001" / "memory" / "success.npz").is_file()
