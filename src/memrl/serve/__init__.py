"""``memrl serve``: Memory-R / Memory-R+ (and every other memrl reward method) as an HTTP service.

Trainers that compute rewards per sample in many rollout workers (OpenRLHF, verl) cannot each
hold the kNN memory: it must be one state that every worker reads and writes. This package runs
that state in one process and answers OpenRLHF's remote-reward protocol (``POST /get_reward``);
:mod:`memrl.integrations.verl` is verl's side. See ``docs/serve.md``.

Modules: :mod:`~memrl.serve.config` (options, the reward set), :mod:`~memrl.serve.protocol` (the
request format and its validation), :mod:`~memrl.serve.scoring` (reward calls on a batch),
:mod:`~memrl.serve.engine` (state, steps, commits, micro-batching), :mod:`~memrl.serve.snapshots`
(state on disk), :mod:`~memrl.serve.app` (HTTP), :mod:`~memrl.serve.client` (a small client),
:mod:`~memrl.serve.cli` (the command).
"""

from memrl.serve.config import RewardSpec, ServeConfig, build_reward_spec

__all__ = ["RewardSpec", "ServeConfig", "build_reward_spec"]
