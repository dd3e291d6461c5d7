"""Process set-up shared by the entry points: thread policy, thread counts, seeds.

Library modules do not change the process environment when imported; the CLI, the bench scripts
and the test session call :func:`setup_process` once, before torch loads.
"""

from __future__ import annotations

import os
import random


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
