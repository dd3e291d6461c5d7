"""Real components for reward tests, loaded once per session."""

import pytest

from memrl.encoders import Encoder


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture(scope="session")
def smollm2():
    from memrl.lm.loading import load_model

    return load_model("smollm2-135m")
