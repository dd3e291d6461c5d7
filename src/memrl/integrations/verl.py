"""verl custom reward functions backed by ``memrl serve`` (Memory-R / Memory-R+ in verl).

verl computes rule rewards with a ``compute_score`` function it loads from the custom reward
function settings; this module provides two that send the samples to one ``memrl serve`` process,
where the memory lives, and return its reward (R1 + intrinsic):

* :func:`compute_score` ``(data_source, solution_str, ground_truth, extra_info=None, **kwargs)``:
  one sample. verl 0.9 computes every reward through its reward loop
  (``verl/experimental/reward_loop/``): ``reward.num_workers`` Ray actors (default 8), each running
  the reward manager's ``run_single`` once per sample, the samples of a batch concurrently (one
  asyncio task each) and this synchronous function in the event loop's thread pool. With no
  reward model, the agent loop streams each finished rollout to a random worker, so the requests
  of a step arrive one sample at a time, concurrently, while the rollout goes on. Managers
  ``naive`` (default), ``dapo``, ``limited`` and ``remote`` call it this way.
* :func:`compute_score_batch` ``(data_sources, solution_strs, ground_truths, extra_infos,
  **kwargs)``: a whole batch in one request, for the legacy ``batch`` reward manager of verl
  before 0.8 (``reward_model.reward_manager=batch``); verl 0.9's reward loop has no ``batch``
  manager.

verl 0.9 config (the pre-0.9 keys ``custom_reward_function.*`` and ``reward_model.reward_manager``
are still read: verl migrates them to these)::

    reward.custom_reward_function.path=pkg://memrl.integrations.verl   # verl >= 0.8; else the file path:
    #   $(python -c 'import memrl.integrations.verl as m; print(m.__file__)')
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.memrl_url=http://127.0.0.1:5000   # or $MEMRL_REWARD_URL

The service URL comes from the ``memrl_url`` keyword (verl merges
``custom_reward_function.reward_kwargs`` into every call, ahead of its own arguments), else
``extra_info["memrl_url"]``, else the environment variable ``MEMRL_REWARD_URL`` (set it in the
Ray runtime env of the workers); the token from ``memrl_token`` or ``$MEMRL_SERVE_TOKEN``.

Validation: verl's ``_validate`` scores the validation set through the same function, with the
same keywords, so a sample is taken for evaluation when its ``extra_info["split"]`` is one of
:data:`EVAL_SPLITS` (verl's preprocessing scripts write ``"test"`` there for the validation file),
or when ``extra_info["memrl_eval"]`` says so (True or False, overriding the split). Those are sent
to the service's ``/get_reward_eval``: scored against the committed memory and never written to
it, not counted toward ``--commit-every``, and their ``score`` is the outcome reward
(correctness), so that verl's validation metrics read accuracy.

verl passes the decoded response (special tokens skipped) but not the prompt, so the memory key
is ``extra_info["question"]`` (verl's GSM8K preprocessing stores the raw question there), else
``extra_info["prompt"]``; a sample with neither is refused. ``ground_truth`` is the gold answer.
The return value is a dict: ``score`` (the total reward) and each reward by name, which verl logs
as ``reward_extra_info``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from memrl.serve.client import RewardClient

URL_ENV = "MEMRL_REWARD_URL"
EVAL_SPLITS = ("test", "val", "validation", "eval", "dev")  # extra_info["split"] of validation samples
_clients: dict[tuple[str, str | None], RewardClient] = {}
_clients_lock = threading.Lock()


def _client(url: str | None, token: str | None) -> RewardClient:
    url = url or os.environ.get(URL_ENV)
    if not url:
        raise ValueError(f"memrl reward: no service URL; set ${URL_ENV} in the reward workers' environment, or "
                         "custom_reward_function.reward_kwargs.memrl_url (or extra_info['memrl_url'])")
    with _clients_lock:
        if (url, token) not in _clients:
            _clients[(url, token)] = RewardClient(url, token=token)
        return _clients[(url, token)]


def _plain(value: Any) -> Any:
    """A JSON value of a ground truth or column (numpy scalars and arrays become Python values)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) or isinstance(value, dict):
        return value
    return str(value)


def _question(extra_info: Any, index: int) -> str:
    info = extra_info if isinstance(extra_info, dict) else {}
    for key in ("question", "prompt"):
        value = info.get(key)
        if isinstance(value, str) and value:
            return value
    raise ValueError(f"memrl reward: extra_info of sample {index} has no 'question' (the memory key); add the raw "
                     "question to extra_info when preparing the data (verl's gsm8k preprocessing does)")


def _results(answer: dict[str, Any], n: int) -> list[dict[str, float]]:
    logs = answer.get("extra_logs") or {}
    return [{"score": float(answer["rewards"][i]), **{k: float(v[i]) for k, v in logs.items()}} for i in range(n)]


def is_evaluation(extra_info: Any) -> bool:
    """Whether a sample is a validation sample (see the module docstring)."""
    info = extra_info if isinstance(extra_info, dict) else {}
    flag = info.get("memrl_eval")
    if flag is not None:
        return bool(flag)
    return str(info.get("split", "")).lower() in EVAL_SPLITS


def compute_score_batch(data_sources: Sequence[Any], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                        extra_infos: Sequence[Any] | None = None, *, memrl_url: str | None = None,
                        memrl_token: str | None = None, **kwargs: Any) -> list[dict[str, float]]:
    """verl's batch reward function: the training samples of the call in one ``/get_reward``
    request, its validation samples (if any) in one ``/get_reward_eval`` request."""
    n = len(solution_strs)
    infos = list(extra_infos) if extra_infos is not None else [{}] * n
    first = infos[0] if infos and isinstance(infos[0], dict) else {}
    client = _client(memrl_url or first.get("memrl_url"), memrl_token)
    questions = [_question(info, i) for i, info in enumerate(infos)]
    evaluation = [is_evaluation(info) for info in infos]
    results: list[dict[str, float]] = [{}] * n
    for wanted in (False, True):
        index = [i for i in range(n) if evaluation[i] == wanted]
        if not index:
            continue
        answer = client.get_reward(prompts=[questions[i] for i in index],
                                   responses=[str(solution_strs[i]) for i in index],
                                   labels=[_plain(ground_truths[i]) for i in index],
                                   questions=[questions[i] for i in index], evaluation=wanted)
        for i, result in zip(index, _results(answer, len(index))):
            results[i] = result
    return results


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, *,
                  memrl_url: str | None = None, memrl_token: str | None = None, **kwargs: Any) -> dict[str, float]:
    """verl's per-sample reward function (see the module docstring)."""
    info = extra_info if isinstance(extra_info, dict) else {}
    return compute_score_batch([data_source], [solution_str], [ground_truth], [info],
                               memrl_url=memrl_url or info.get("memrl_url"), memrl_token=memrl_token)[0]
