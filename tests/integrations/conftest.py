"""Real components for the integration tests, shared with tests/poem/conftest.py.

The one-thread setting and the SST-2 task are that file's own fixtures (imported, so there is one
definition); the scorer wraps the root conftest's ``tiny_model`` (the real SmolLM2-135M, loaded
once per session) and ``encoder`` is the root conftest's real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import os

import pytest

from poem.conftest import _one_torch_thread, sst2  # noqa: F401  (fixtures, re-exported for this folder)

# DSPy 3.4 refreshes its model metadata (litellm's price list) from the network on first use, with a
# 5 s timeout, unless this is set; the test machines are offline
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def scorer(tiny_model):
    from memrl.lm import HFScorer
    from memrl.lm.loading import model_identity

    model, tokenizer = tiny_model
    return HFScorer(model, tokenizer, identity=model_identity("smollm2-135m"), batch_size=8)
