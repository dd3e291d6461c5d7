"""memrl.integrations.verl against a real ``memrl serve`` on loopback, called the way verl 0.9 calls it.

* ``test_verl_reward_loop_calls_compute_score``: verl's own reward-loop code
  (``verl.experimental.reward_loop.RewardLoopWorker`` with its ``naive`` manager, the function
  loaded by ``verl.trainer.ppo.reward.get_custom_reward_fn`` from a ``pkg://`` path) scores a
  batch built as verl's agent loop builds it. Skipped where verl is not installed (it is not a
  memrl dependency: it needs Ray; verl 0.9.1 was run with ``pip install --no-deps verl`` plus
  omegaconf, hydra-core, ray, tensordict, codetiming, protobuf, pyvers).
* the other tests reproduce that call without verl, as read in verl 0.9.1's source:
  ``verl/trainer/ppo/reward.py::get_custom_reward_fn`` wraps the function in
  ``functools.partial(_call_with_kwargs, fn, reward_kwargs)`` (the config's ``reward_kwargs``
  override the call's keywords); ``verl/experimental/reward_loop/reward_manager/naive.py::
  NaiveRewardManager.run_single`` calls it with the keywords ``data_source``, ``solution_str``
  (the response decoded with ``skip_special_tokens=True``), ``ground_truth`` and ``extra_info``
  (the row's, plus ``num_turns`` and ``rollout_reward_scores``), in ``loop.run_in_executor(None,
  ...)``; ``verl/experimental/reward_loop/reward_loop.py::RewardLoopWorker.compute_score_batch``
  runs one asyncio task per sample, so the samples of a batch are scored concurrently.
"""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from helpers.serving import Q  # noqa: E402  the GSM8K questions the serve tests use
from memrl.integrations import verl  # noqa: E402
from memrl.serve.app import ServiceThread, build_service  # noqa: E402
from memrl.serve.client import RewardClient  # noqa: E402
from memrl.serve.config import ServeConfig, build_reward_spec  # noqa: E402

RESPONSES = {
    "clips": ["<think>\nIn May she sold 48 / 2 = 24 clips.\nAltogether 48 + 24 = 72.\n</think>\n<answer>\n72\n</answer>",
              "<think>\nHalf of 48 is 24. 48 + 24 = 82\n</think>\n<answer>\n82\n</answer>",
              "She sold 48 and then 24, so 72 clips.",
              "<think>\n48 * 2 = 96\n</think>\n<answer>\n96\n</answer>"],
    "weng": ["<think>\n$12 per hour is $0.2 per minute. 50 * 0.2 = 10\n</think>\n<answer>\n10\n</answer>",
             "<think>\n12 * 50 = 600\n</think>\n<answer>\n600\n</answer>",
             "<think>\n60 - 50 = 10\n</think>\n<answer>\n12\n</answer>",
             "<think>\n50 minutes is 5/6 of an hour, 12 * 5/6 = 10\n</think>\n<answer>\n10\n</answer>"],
}
VALUES = {"method": "memory-r+", "memory_explore_warmup_steps": 1, "memory_max_keys": 64}
TOL = 1e-6


def rows(split: str = "train") -> list[dict]:
    """One sample per response, with the non-tensor fields verl's GSM8K preprocessing writes."""
    out = []
    for qid, responses in RESPONSES.items():
        question, gold = Q[qid]
        for response in responses:
            out.append({"data_source": "openai/gsm8k", "response": response,
                        "reward_model": {"style": "rule", "ground_truth": gold},
                        "extra_info": {"split": split, "index": len(out), "answer": f"... #### {gold}",
                                       "question": question}})
    return out


def _call_with_kwargs(raw_fn, extra_kwargs, *args, **kwargs):
    """verl/trainer/ppo/reward.py's wrapper: the config's reward_kwargs take precedence."""
    return raw_fn(*args, **{**kwargs, **extra_kwargs})


def naive_manager_call(fn, row: dict, reward_kwargs: dict) -> dict:
    """NaiveRewardManager.run_single's call of the function get_custom_reward_fn returns."""
    wrapped = functools.partial(_call_with_kwargs, fn, reward_kwargs)
    extra_info = dict(row["extra_info"], num_turns=2, rollout_reward_scores={})
    return wrapped(data_source=row["data_source"], solution_str=row["response"],
                   ground_truth=row["reward_model"]["ground_truth"], extra_info=extra_info)


async def reward_loop_batch(fn, batch: list[dict], reward_kwargs: dict) -> list[dict]:
    """RewardLoopWorker.compute_score_batch: one task per sample, the sync function in the executor."""
    loop = asyncio.get_running_loop()
    tasks = [loop.run_in_executor(None, naive_manager_call, fn, row, reward_kwargs) for row in batch]
    return list(await asyncio.gather(*tasks))


def in_process_total(spec, batch: list[dict], step: int) -> np.ndarray:
    kwargs = {"prompts": [r["extra_info"]["question"] for r in batch], "completions": [r["response"] for r in batch],
              "answer": [r["reward_model"]["ground_truth"] for r in batch],
              "question": [r["extra_info"]["question"] for r in batch],
              "trainer_state": SimpleNamespace(global_step=step)}
    spec.memory.compute(**kwargs)
    values = [np.asarray(f(**kwargs), float) for f in spec.funcs]
    return sum(w * v for w, v in zip(spec.weights, values))


def test_concurrent_per_sample_calls_make_one_step_of_the_service(encoder):
    """A step of 8 samples scored concurrently, as verl's reward loop does, then a second step: the
    service commits each step (--commit-every 8) and its memory equals the in-process one's."""
    ref = build_reward_spec(dict(VALUES), encoder=encoder)
    engine, app = build_service(dict(VALUES), ServeConfig(port=0, commit_every=8), encoder=encoder)
    with ServiceThread(app) as server:
        kwargs = {"memrl_url": server.url}
        first = asyncio.run(reward_loop_batch(verl.compute_score, rows(), kwargs))
        # empty memory: every sample alone equals the in-process step over the batch
        np.testing.assert_allclose([r["score"] for r in first], in_process_total(ref, rows(), 0), atol=TOL)
        assert set(first[0]) == {"score", *engine.spec.names} and engine.commits == 1
        second = asyncio.run(reward_loop_batch(verl.compute_score, rows(), kwargs))
        assert engine.commits == 2 and RewardClient(server.url).stats()["samples"] == 16
        in_process_total(ref, rows(), 1)
        for name in ("success_memory", "failure_memory"):
            assert sorted(getattr(engine.spec.memory, name).key_ids()) == sorted(getattr(ref.memory, name).key_ids())
            assert getattr(engine.spec.memory, name).num_values == getattr(ref.memory, name).num_values == 8
        # one-sample requests: the first step with retrievals gets the neutral 0.0 (its normaliser window
        # is still empty), later steps are normalised against the earlier steps' values
        assert all(r["memory_exploit_reward"] == 0.0 for r in second)
        third = asyncio.run(reward_loop_batch(verl.compute_score, rows(), kwargs))
        assert engine.commits == 3 and len({round(r["memory_exploit_reward"], 6) for r in third}) > 2


def test_validation_samples_are_scored_read_only(encoder):
    """verl scores its validation set through the same function: those samples (extra_info split
    test) go to /get_reward_eval and are never written to the memory nor counted toward a step."""
    engine, app = build_service(dict(VALUES), ServeConfig(port=0, commit_every=8), encoder=encoder)
    with ServiceThread(app) as server:
        kwargs = {"memrl_url": server.url}
        results = asyncio.run(reward_loop_batch(verl.compute_score, rows("test")[:3], kwargs))
        stats = RewardClient(server.url).stats()
        assert stats["samples"] == 0 and stats["eval_samples"] == 3 and engine.commits == 0
        assert all(set(r) >= {"score"} for r in results)
        mixed = rows("train")[:2] + rows("test")[2:4]
        verl.compute_score_batch([r["data_source"] for r in mixed], [r["response"] for r in mixed],
                                 [r["reward_model"]["ground_truth"] for r in mixed],
                                 [r["extra_info"] for r in mixed], **kwargs)
        stats = RewardClient(server.url).stats()
        assert stats["samples"] == 2 and stats["eval_samples"] == 5
        # memrl_eval overrides the split either way
        assert verl.is_evaluation({"split": "train", "memrl_eval": True})
        assert not verl.is_evaluation({"split": "test", "memrl_eval": False})
        assert len(engine.spec.memory.success_memory) + len(engine.spec.memory.failure_memory) == 0


def test_verl_reward_loop_calls_compute_score(encoder, tiny_model_path):
    pytest.importorskip("verl.experimental.reward_loop")
    import torch
    from omegaconf import OmegaConf
    from tensordict import TensorDict
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    ref = build_reward_spec(dict(VALUES), encoder=encoder)
    engine, app = build_service(dict(VALUES), ServeConfig(port=0, commit_every=8), encoder=encoder)
    with ServiceThread(app) as server:
        config = OmegaConf.create({
            "actor_rollout_ref": {"model": {"path": tiny_model_path, "tokenizer_path": None}},
            "reward": {"num_workers": 1, "reward_model": {"enable": False},
                       "reward_manager": {"source": "register", "name": "naive"},
                       "custom_reward_function": {"path": "pkg://memrl.integrations.verl", "name": "compute_score",
                                                  "reward_kwargs": {"memrl_url": server.url}}}})
        worker = RewardLoopWorker(config)
        batch = rows()
        # as verl's agent loop builds a scored sample (AgentLoopWorker._compute_score): token tensors
        # of prompt and response, the row's non-tensor fields repeated per sample
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": r["extra_info"]["question"]}],
                                                 add_generation_prompt=True, return_dict=False) for r in batch]
        responses = [tokenizer(r["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                     for r in batch]
        p_len, r_len = max(map(len, prompts)), max(map(len, responses))
        prompt_t = torch.zeros(len(batch), p_len, dtype=torch.long)
        response_t = torch.zeros(len(batch), r_len, dtype=torch.long)
        mask = torch.zeros(len(batch), p_len + r_len, dtype=torch.long)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            prompt_t[i, p_len - len(p):] = torch.tensor(p)  # prompts left-padded, responses right-padded
            response_t[i, : len(r)] = torch.tensor(r)
            mask[i, p_len - len(p): p_len + len(r)] = 1
        data = DataProto(
            batch=TensorDict({"prompts": prompt_t, "responses": response_t, "attention_mask": mask,
                              "input_ids": torch.cat([prompt_t, response_t], dim=1)}, batch_size=len(batch)),
            non_tensor_batch={key: np.array([r[key] for r in batch], dtype=object)
                              for key in ("data_source", "reward_model", "extra_info")})
        outputs = worker.loop.run_until_complete(worker.compute_score_batch(data))
    np.testing.assert_allclose([o["reward_score"] for o in outputs], in_process_total(ref, batch, 0), atol=TOL)
    assert set(outputs[0]["reward_extra_info"]) == {"score", *engine.spec.names}
    assert engine.commits == 1 and len(engine.spec.memory.success_memory) == 2
