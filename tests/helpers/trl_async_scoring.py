"""Test fixture: TRL's AsyncGRPO scoring path, run in a process spawned as ``AsyncRolloutWorker`` spawns it.

``AsyncRolloutWorker`` (trl/experimental/async_grpo/async_rollout_worker.py, TRL 1.16) cannot be
built on a machine without vLLM (its ``__init__`` raises ``ImportError``), and its child's
generation loop needs a vLLM server. What a reward function sees does not depend on either, so
:func:`child_main` reproduces the rest of that file exactly:

* the parent pickles the loop's keyword arguments (``AsyncRolloutWorker.start`` checks
  ``pickle.dumps(self._loop_kwargs)``) and hands them, with the worker's shared queues, values and
  events, to a ``multiprocessing.get_context("spawn")`` process (``AsyncRolloutWorker.__init__``
  and ``start``);
* the child does what ``_child_main`` does before the loop runs: ``_scrub_child_env()`` (no CUDA,
  no torch.distributed variables), ``PartialState()``, then builds TRL's own ``_AsyncRolloutLoop``
  from those arguments;
* each group is assembled as ``_generate_loop`` and ``_generate_one`` assemble it from a dataset
  row and the generated tokens (the row's columns repeated G times as ``reward_kwargs``; each
  completion a chat message made by TRL's ``parse_response`` from the turn's token ids; its
  training rows by ``_chain_to_sequences``), and is scored by TRL's ``_AsyncRolloutLoop._score_group``
  on the loop's own event loop, which calls every reward function concurrently
  (``asyncio.to_thread``) with ``completions``, ``prompts``, ``completion_ids`` and the columns.

Only generation is replaced: the "generated" token ids are the tokenization of given texts, with
the tokenizer's end-of-turn token appended as vLLM returns it.
"""

from __future__ import annotations

import multiprocessing
from typing import Any


def build_group(loop: Any, group_id: int, row: dict[str, Any], texts: list[str]) -> Any:
    """A ``RolloutGroup`` as TRL's generate loop fills it for ``row`` and these completions."""
    from trl.chat_template_utils import parse_response
    from trl.experimental.async_grpo.async_rollout_worker import RolloutGroup, TurnRecord, _chain_to_sequences

    tokenizer = loop.tokenizer
    # _generate_loop: the row's columns other than the prompt, one copy per generation
    reward_kwargs = {key: [row[key]] * loop.num_generations for key in row
                     if key not in {"prompt", "completion", "completion_ids"}}
    group = RolloutGroup(prompts=[], reward_kwargs=reward_kwargs, completions=[], completions_ids=[],
                         completions_sequences=[], tool_call_counts=[], tool_failure_counts=[],
                         model_version=loop.model_version, group_id=group_id, env_rewards=[], rollout_rewards=[])
    prompt = row["prompt"]
    # _generate_one: the whole conversation through the chat template, one turn, parsed back to a message
    prompt_ids = tokenizer.apply_chat_template(prompt, return_dict=False, add_generation_prompt=True,
                                               chat_template=loop.chat_template, **loop.chat_template_kwargs)
    for i, text in enumerate(texts):
        turn_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        message = parse_response(tokenizer, turn_ids, prefix=prompt_ids, tools=None)
        turn = TurnRecord(prompt_ids, turn_ids, [0.0] * len(turn_ids))
        sequences, _ = _chain_to_sequences([turn], f"{group_id}-{i}", loop._fork_threshold_tokens)
        group.prompts.append(prompt)
        group.completions.append([message])
        group.completions_ids.append(turn_ids)
        group.completions_sequences.append(sequences)
        group.tool_call_counts.append(0)
        group.tool_failure_counts.append(0)
        group.rollout_rewards.append(None)
    return group


def child_main(loop_kwargs: dict[str, Any], rollout_buffer: Any, model_version_value: Any, stop_event: Any,
               child_ready_event: Any, heartbeat_value: Any, failed_event: Any, exception_info_queue: Any,
               metrics_queue: Any, groups: list[tuple[dict[str, Any], list[str]]], results: Any) -> None:
    """The spawned child: TRL's preparation, TRL's loop, then ``_score_group`` on each group in
    order; puts ``[(completion messages, per-sample metrics), ...]`` (or the error text) on ``results``."""
    try:
        from trl.experimental.async_grpo.async_rollout_worker import _AsyncRolloutLoop, _scrub_child_env

        _scrub_child_env()
        from accelerate.state import PartialState

        PartialState()
        loop = _AsyncRolloutLoop(**loop_kwargs, rollout_buffer=rollout_buffer, model_version_value=model_version_value,
                                 heartbeat_value=heartbeat_value, failed_event=failed_event,
                                 exception_info_queue=exception_info_queue, metrics_queue=metrics_queue)
        child_ready_event.set()
        out = []
        for group_id, (row, texts) in enumerate(groups):
            group = build_group(loop, group_id, row, texts)
            samples = loop._loop.run_until_complete(loop._score_group(group))
            out.append((group.completions, [s.metrics for s in samples]))
        loop._tool_pool.shutdown(wait=False)
        loop._loop.close()
        results.put(out)
    except BaseException:  # the parent reads the reason instead of waiting for a result
        import traceback

        results.put(traceback.format_exc())
        raise


def compute_in_child(rewards: Any, kwargs: dict[str, Any], claim: bool, results: Any) -> None:
    """A spawned child given a pickled reward object that learns as it scores (``MemoryRPlus``,
    ``OutcomeUCBReward``): compute once (after ``claim_process()`` when ``claim``); puts the size of
    its state (values in the memories, or answers counted), or the error's text, on ``results``."""
    try:
        if claim:
            rewards.claim_process()
        rewards.compute(**kwargs)
        if hasattr(rewards, "num_answers"):
            results.put(rewards.num_answers)
        else:
            results.put(rewards.success_memory.num_values + rewards.failure_memory.num_values)
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def spawn_child(target, *args, timeout: float = 600):
    """Run ``target(*args, results)`` in a spawned process; what it put on ``results``."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=target, args=(*args, results), daemon=True)
    child.start()
    try:
        return results.get(timeout=timeout)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
