"""Session-scoped real components for the POEM tests (loaded once: ~5 s)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # The CI box has 2 cores shared with other jobs: one intra-op thread avoids OpenMP threads
    # spinning against each other under oversubscription (measured 4-5x faster here).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def lm():
    from memrl.lm.loading import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def scorer(lm):
    from memrl.lm import HFScorer
    from memrl.lm.loading import model_identity

    model, tokenizer = lm
    return HFScorer(model, tokenizer, identity=model_identity("smollm2-135m"), batch_size=8)


@pytest.fixture(scope="session")
def encoder():
    from memrl.encoders import Encoder

    return Encoder()


@pytest.fixture(scope="session")
def sst2():
    from memrl.tasks.classification import load_task

    return load_task("sst2", 13)
