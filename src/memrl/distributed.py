"""Cross-process helpers for stateful rewards.

TRL calls reward functions on each process's own shard of the batch (a GRPO group may straddle
ranks). A memory written only from the local shard would differ per rank, so every rank gathers
the step's new entries from all ranks and writes the same list in the same (rank) order.
"""

from __future__ import annotations

from typing import Any


def _initialized_dist():
    """``torch.distributed`` when a process group is up, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    dist = _initialized_dist()
    return dist.get_world_size() if dist else 1


def rank() -> int:
    dist = _initialized_dist()
    return dist.get_rank() if dist else 0


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj_rank0, obj_rank1, ...]`` on every rank (just ``[obj]`` in a single process).

    Uses ``torch.distributed.all_gather_object``, which works with the gloo (CPU) and nccl
    backends alike; objects must be picklable (numpy arrays and lists of strings are).
    """
    dist = _initialized_dist()
    if dist is None or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
