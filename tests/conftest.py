"""Shared session fixtures: the real tiny LLM and the real sentence encoder, loaded once."""

from __future__ import annotations

import os

from memrl.runtime import setup_process

setup_process()  # as the CLI does, before torch loads: passive OpenMP waiting, no tokenizer threads

import pytest  # noqa: E402

# The hub is unreachable on the CI machines; fail fast instead of retrying network calls.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``gpu`` where torch sees no CUDA device (torch is imported only when
    such a test was collected)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA device; torch {torch.__version__} sees none "
                                   f"(built with CUDA {torch.version.cuda})")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    """Local folder of SmolLM2-135M-Instruct (the offline bundle, converted once and cached)."""
    from memrl.lm.loading import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    """``(model, tokenizer)`` of the real SmolLM2-135M-Instruct, float32 on CPU (shared: do not train it)."""
    from memrl.lm.loading import load_model

    return load_model(tiny_model_path)


@pytest.fixture(scope="session")
def encoder():
    """The real all-MiniLM-L6-v2 encoder (384-d), shared by the session."""
    from memrl.encoders import Encoder

    enc = Encoder()
    enc.encode(["warm-up"])  # load now so test timings do not include it
    return enc


@pytest.fixture(scope="session")
def shared_data():
    """The shared benchmark data folder (skips when it is not available)."""
    from memrl.paths import data_dir

    root = data_dir(required=False)
    if root is None:
        pytest.skip("shared benchmark data not found (set MEMRL_DATA_DIR)")
    return root
