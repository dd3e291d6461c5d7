"""RemoteMemoryReward: TRL reward functions whose Memory-R+ memory lives in a ``memrl serve`` process.

The AsyncGRPO test runs TRL's own scoring code (``_AsyncRolloutLoop._score_group``) in a process
spawned the way ``AsyncRolloutWorker`` spawns its child (see tests/helpers/trl_async_scoring.py
for what is reproduced and why), against a real service on loopback with the real encoder; the
expected values come from the same reward set in-process (the service's scoring rule: each request
alone against the memory committed at the previous step).
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from helpers.serving import Q  # noqa: E402  the GSM8K questions the serve tests use
from memrl.integrations.remote import RemoteMemoryReward  # noqa: E402
from memrl.rewards.common import completion_text  # noqa: E402
from memrl.serve.app import ServiceThread, build_service  # noqa: E402
from memrl.serve.client import RewardClient  # noqa: E402
from memrl.serve.config import ServeConfig, build_reward_spec  # noqa: E402
from memrl.tasks.math import system_prompt  # noqa: E402

# two steps of 2 questions x G = 4 completions, written like a small model's outputs
STEPS = [
    [("clips", ["<think>\nIn May she sold 48 / 2 = 24 clips.\nAltogether 48 + 24 = 72.\n</think>\n<answer>\n72\n</answer>",
                "<think>\nHalf of 48 is 24. 48 + 24 = 82\n</think>\n<answer>\n82\n</answer>",
                "She sold 48 and then 24, so 72 clips.",
                "<think>\n48 * 2 = 96\n</think>\n<answer>\n96\n</answer>"]),
     ("weng", ["<think>\n$12 per hour is $0.2 per minute. 50 * 0.2 = 10\n</think>\n<answer>\n10\n</answer>",
               "<think>\n12 * 50 = 600\n</think>\n<answer>\n600\n</answer>",
               "<think>\n60 - 50 = 10\n</think>\n<answer>\n12\n</answer>",
               "<think>\n50 minutes is 5/6 of an hour, 12 * 5/6 = 10\n</think>\n<answer>\n10\n</answer>"])],
    [("clips", ["<think>\nApril 48, May half of that: 24. Total 72.\n</think>\n<answer>\n72\n</answer>",
                "<think>\n48 + 48 / 2 = 48 + 24 = 72\n</think>\n<answer>\n72\n</answer>",
                "<think>\n48 - 24 = 24\n</think>\n<answer>\n24\n</answer>",
                "<answer>\n70\n</answer>"]),
     ("weng", ["<think>\n12 / 60 = 0.2 dollars a minute, times 50 is 10 dollars.\n</think>\n<answer>\n10\n</answer>",
               "<think>\n12 + 50 = 62\n</think>\n<answer>\n62\n</answer>",
               "<think>\n60 - 50 = 10 minutes short, so 12 - 2 = 10\n</think>\n<answer>\n10\n</answer>",
               "I think she earned 12 dollars."])],
]
G = 4
# explore on from the service's step 1 (its steps are commits: B = 8 completions, set below)
VALUES = {"method": "memory-r+", "memory_explore_warmup_steps": 1, "memory_max_keys": 64}
NAMES = ["memory_exploit_reward", "memory_explore_reward"]
TOL = 1e-6


def row(qid: str) -> dict:
    question, gold = Q[qid]
    prompt = [{"role": "system", "content": system_prompt("think")}, {"role": "user", "content": question}]
    return {"prompt": prompt, "question": question, "answer": gold}


def kwargs_of(groups, step: int) -> dict:
    """The in-process call on these groups (raw texts, as the model wrote them)."""
    rows = [row(qid) for qid, texts in groups for _ in texts]
    return {"prompts": [r["prompt"] for r in rows], "completions": [t for _, texts in groups for t in texts],
            "answer": [r["answer"] for r in rows], "question": [r["question"] for r in rows],
            "trainer_state": SimpleNamespace(global_step=step)}


@pytest.fixture(scope="module")
def policy_tokenizer(tiny_model_path):
    """SmolLM2's tokenizer with the response parser TRL assigns to Qwen2.5's ChatML template (TRL
    recognises chat templates by their exact text and knows no SmolLM2 one; both are ChatML). It
    moves a ``<think>`` block out of the message's content, as it does for Qwen2.5 and Qwen3."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import qwen3_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    tokenizer.response_template = qwen3_template
    return tokenizer


def test_async_grpo_child_scores_through_the_service_and_the_service_keeps_the_memory(encoder, policy_tokenizer):
    pytest.importorskip("trl.experimental.async_grpo.async_rollout_worker")
    from datasets import Dataset

    from helpers.trl_async_scoring import child_main

    engine, app = build_service(dict(VALUES), ServeConfig(port=0, commit_every=2 * G), encoder=encoder)
    ref = build_reward_spec(dict(VALUES), encoder=encoder).memory  # the same rewards, in-process
    groups = [(row(qid), texts) for step in STEPS for qid, texts in step]
    with ServiceThread(app) as server:
        remote = RemoteMemoryReward(server.url)
        # the keyword arguments AsyncGRPOTrainer forwards to AsyncRolloutWorker (the ones scoring reads)
        loop_kwargs = {"model_name": "policy", "dataset": Dataset.from_list([g[0] for g in groups]),
                       "reward_funcs": remote.reward_functions(), "processing_class": policy_tokenizer,
                       "eos_token_ids": [policy_tokenizer.eos_token_id], "num_generations": G,
                       "max_inflight_tasks": G, "queue_maxsize": 0, "dataset_start_index": 0}
        pickle.dumps(loop_kwargs)  # AsyncRolloutWorker.start refuses what does not pickle
        ctx = mp.get_context("spawn")
        shared = (ctx.Queue(), ctx.Value("i", 0), ctx.Event(), ctx.Event(), ctx.Value("d", 0.0), ctx.Event(),
                  ctx.Queue(maxsize=1), ctx.Queue(maxsize=4096))
        results = ctx.Queue()
        child = ctx.Process(target=child_main, args=(loop_kwargs, *shared, groups, results), daemon=True)
        child.start()
        try:
            out = results.get(timeout=600)
        finally:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
        assert not isinstance(out, str), out
        assert remote._client is None  # the trainer's copy never sent anything: the child's copy did
        stats = RewardClient(server.url).stats()

    # TRL's parser moved the reasoning out of the content; the client put it back
    message = out[0][0][0][0]
    assert message["reasoning_content"].startswith("In May she sold") and "<think>" not in message["content"]
    assert completion_text([message]).startswith("<think>\nIn May she sold 48 / 2 = 24 clips.")

    # each group reached the service once, although TRL called the two functions concurrently
    assert stats["requests"] == len(groups) and stats["samples"] == 2 * len(STEPS) * G
    # the service holds the memory and counted the steps
    assert engine.commits == 2 and stats["step"] == 2
    memory = engine.spec.memory
    assert len(memory.success_memory) == 2 and memory.success_memory.num_values == 8
    assert len(memory.failure_memory) == 2 and memory.failure_memory.num_values == 8

    got = np.array([[m[f"rewards/{n}"] for n in NAMES] for _, metrics in out for m in metrics])
    want = []
    for step, step_groups in enumerate(STEPS):
        for group in step_groups:  # immediate mode: each request alone against the committed memory
            scored = ref.score(**kwargs_of([group], step))
            want += list(zip(scored["exploit"], scored["explore"]))
        ref.compute(**kwargs_of(step_groups, step))  # the commit
    want = np.array(want)
    np.testing.assert_allclose(got, want, atol=TOL)
    assert np.all(got[: 2 * G] == 0.0)  # step 0: empty memory (exploit 0.0) and explore in warm-up
    assert np.ptp(got[2 * G :, 0]) > 0.1 and np.ptp(got[2 * G :, 1]) > 0.1  # step 1: both rewards live
    # the advantage TRL computed from the summed rewards, per group
    totals = np.array([m["reward"] for _, metrics in out for m in metrics])
    np.testing.assert_allclose(totals, got.sum(axis=1), atol=TOL)


def test_a_memory_reward_copied_into_the_async_grpo_child_refuses_naming_the_remote_client(encoder, policy_tokenizer):
    """A MemoryRPlus given to AsyncGRPO is pickled into its scoring child, where its writes would be lost."""
    pytest.importorskip("trl.experimental.async_grpo.async_rollout_worker")
    from datasets import Dataset

    from helpers.trl_async_scoring import child_main, spawn_child
    from memrl.rewards import MemoryRPlus

    rewards = MemoryRPlus(encoder=encoder, memory_explore_warmup_steps=0)
    groups = [(row(qid), texts) for qid, texts in STEPS[0]]
    loop_kwargs = {"model_name": "policy", "dataset": Dataset.from_list([g[0] for g in groups]),
                   "reward_funcs": rewards.reward_functions(), "processing_class": policy_tokenizer,
                   "eos_token_ids": [policy_tokenizer.eos_token_id], "num_generations": G,
                   "max_inflight_tasks": G, "queue_maxsize": 0, "dataset_start_index": 0}
    pickle.dumps(loop_kwargs)  # it pickles, so AsyncRolloutWorker.start accepts it
    ctx = mp.get_context("spawn")
    shared = (ctx.Queue(), ctx.Value("i", 0), ctx.Event(), ctx.Event(), ctx.Value("d", 0.0), ctx.Event(),
              ctx.Queue(maxsize=1), ctx.Queue(maxsize=4096))
    out = spawn_child(child_main, loop_kwargs, *shared, groups)
    assert isinstance(out, str) and "RuntimeError: MemoryRPlus was built in process" in out
    assert "RemoteMemoryReward" in out and "memrl serve" in out
    assert len(rewards.success_memory) == 0 and rewards.compute(**kwargs_of(STEPS[0], 0))  # the owner still works


def test_a_copy_that_claims_its_process_computes(encoder):
    from helpers.trl_async_scoring import compute_in_child, spawn_child
    from memrl.rewards import MemoryRPlus

    rewards = MemoryRPlus(encoder=encoder, memory_explore_warmup_steps=0)
    kwargs = kwargs_of(STEPS[0], 0)
    assert "was built in process" in spawn_child(compute_in_child, rewards, kwargs, False)
    assert spawn_child(compute_in_child, rewards, kwargs, True) == 2 * G  # every completion written, in the child


def test_trainer_steps_reach_the_service_and_each_batch_is_sent_once(encoder):
    """GRPOTrainer's call: the functions one after the other on the step's batch, with ``trainer_state``.
    A request holding the whole step gets exactly the in-process values."""
    engine, app = build_service(dict(VALUES), ServeConfig(port=0), encoder=encoder)  # steps come from the client
    ref = build_reward_spec(dict(VALUES), encoder=encoder)
    names = [*NAMES, "total", "correctness_reward"]
    with ServiceThread(app) as server:
        remote = RemoteMemoryReward(server.url, names=names)
        assert [f.__name__ for f in remote.reward_functions()] == names
        for step, step_groups in enumerate(STEPS):
            kwargs = kwargs_of(step_groups, step)
            got = {f.__name__: f(**kwargs) for f in remote.reward_functions()}
            assert remote.client.stats()["requests"] == step + 1
            ref.memory.compute(**kwargs)
            want = {name: np.asarray(f(**kwargs), float) for name, f in zip(ref.names, ref.funcs)}
            want["total"] = sum(w * want[n] for n, w in zip(ref.names, ref.weights))
            for name in names:
                np.testing.assert_allclose(got[name], want[name], atol=TOL, err_msg=f"step {step} {name}")
        assert engine.step == 1 and engine.commits == 1  # step 1's request committed step 0
        # the same texts again (another batch of the same step) are sent again, not served from the last answer
        again = remote.reward_functions()[0](**kwargs_of(STEPS[1], 1))
        assert remote.client.stats()["requests"] == 3
        assert again == pytest.approx(got["memory_exploit_reward"], abs=TOL)


def test_completion_text_from_the_messages_or_from_the_tokens(policy_tokenizer, tiny_model_path):
    """TRL's parser moves the reasoning out of the message; the client puts it back (canonical
    newlines around it), or, given the tokenizer, decodes the completion's own tokens (exact)."""
    from trl.chat_template_utils import parse_response

    raw = "<think>\n a \n</think>\n\n<answer>\n72\n</answer>"
    ids = policy_tokenizer(raw, add_special_tokens=False)["input_ids"] + [policy_tokenizer.eos_token_id]
    prompt_ids = policy_tokenizer.apply_chat_template([{"role": "user", "content": "q"}], add_generation_prompt=True,
                                                      return_dict=False)
    message = parse_response(policy_tokenizer, ids, prefix=prompt_ids, tools=None)
    assert message["content"] == "<answer>\n72\n</answer>" and message["reasoning_content"] == "a"
    assert RemoteMemoryReward("http://h:1").texts([[message]], [ids]) == ["<think>\na\n</think>\n<answer>\n72\n</answer>"]
    exact = RemoteMemoryReward("http://h:1", tokenizer=tiny_model_path)
    assert exact.texts([[message]], [ids]) == [raw]
    assert pickle.loads(pickle.dumps(exact))._tokenizer is None  # the loaded tokenizer stays in its process


def test_client_pickles_without_its_connections_and_refuses_what_the_service_lacks(encoder):
    remote = RemoteMemoryReward("http://127.0.0.1:1", names=["memory_exploit_reward"], token="t0k")
    copy = pickle.loads(pickle.dumps(remote))
    assert copy.url == remote.url and copy.token == "t0k" and copy._client is None
    assert copy.reward_functions()[0].owner is copy
    with pytest.raises(ValueError, match="not an http"):
        RemoteMemoryReward("ftp://x")
    with pytest.raises(ValueError, match="distinct"):
        RemoteMemoryReward("http://127.0.0.1:1", names=["total", "total"])
    with pytest.raises(ValueError, match="column 'answer' is missing"):
        remote.payload([[{"role": "user", "content": "q"}]], ["a"], {"solution": ["1"]})
    engine, app = build_service({"method": "r1"}, ServeConfig(port=0), encoder=encoder)
    with ServiceThread(app) as server:
        r1 = RemoteMemoryReward(server.url)
        with pytest.raises(ValueError, match="start it with the method"):
            r1.reward_functions()[0](**kwargs_of(STEPS[0][:1], 0))
