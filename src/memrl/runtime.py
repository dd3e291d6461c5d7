"""Process set-up shared by the entry points: thread policy, thread counts, seeds, torch devices.

Library modules do not change the process environment when imported; the CLI, the bench scripts
and the test session call :func:`setup_process` once, before torch loads.
"""

from __future__ import annotations

import os
import random
import re

DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


def setup_process(threads: int | None = None) -> None:
    """Environment for CPU-friendly torch, set before torch is imported.

    OpenMP threads that spin while waiting make torch 5x slower when the CPU is shared (measured:
    95 s vs 16 s for the same sampling on 2 busy cores); passive waiting computes the same thing,
    and only takes effect if set before torch loads. Tokenizer worker threads fight the same
    cores. ``threads`` also fixes torch's intra-op thread count (torch is then imported).
    Values already in the environment win, so a user can still choose.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch in one place."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_device(name: str, device: str) -> None:
    """Refuse a device setting that is not one of ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (the
    syntax only: torch is not imported)."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"{name}={device!r}: choose {DEVICE_FORMS}")


def resolve_device(device: str, name: str = "device") -> str:
    """The torch device of a setting: ``auto`` is ``cuda`` (the process's current CUDA device,
    which trainers set to the process's own GPU) when torch sees CUDA, else ``cpu``. An explicit
    CUDA device torch does not see is refused, naming the setting."""
    check_device(name, device)
    if device == "cpu":
        return device
    import torch

    if not torch.cuda.is_available():
        if device == "auto":
            return "cpu"
        raise ValueError(f"{name}={device!r}, but torch {torch.__version__} sees no CUDA device "
                         f"(CUDA build {torch.version.cuda}); use auto or cpu")
    if device == "auto":
        return "cuda"
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"{name}={device!r}, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device
