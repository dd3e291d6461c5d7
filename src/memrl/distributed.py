"""Cross-process helpers for stateful rewards.

TRL calls reward functions on each process's own shard of the batch (a GRPO group may straddle
ranks). A memory written only from the local shard would differ per rank, so every rank gathers
the step's new entries from all ranks and writes the same list in the same (rank) order.
"""

from __future__ import annotations

from typing import Any


def world_size() -> int:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return 0
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj_rank0, obj_rank1, ...]`` on every rank (just ``[obj]`` in a single process).

    Uses ``torch.distributed.all_gather_object``, which works with the gloo (CPU) and nccl
    backends alike; objects must be picklable (numpy arrays and lists of strings are).
    """
    n = world_size()
    if n == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * n
    dist.all_gather_object(out, obj)
    return out
