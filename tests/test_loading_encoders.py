"""Model resolution (offline bundle, local folders, clear errors) and the encoder wrapper."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from memrl.encoders import Encoder, resolve_encoder_path
from memrl.lm.loading import SMOLLM2_HUB_ID, model_identity, resolve_model


def test_alias_resolves_to_converted_offline_bundle():
    path = Path(resolve_model("smollm2-135m"))
    assert (path / "config.json").is_file() and list(path.glob("*.safetensors"))
    assert (path / "tokenizer_config.json").is_file()
    assert resolve_model(str(path)) == str(path.resolve())  # a local folder is used as is
    assert model_identity("smollm2-135m") == f"{SMOLLM2_HUB_ID}@gguf-q4_1"
    assert model_identity(str(path)) == f"{SMOLLM2_HUB_ID}@gguf-q4_1"


def test_hub_id_falls_back_to_bundle_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model(SMOLLM2_HUB_ID) == resolve_model("smollm2-135m")


def test_unknown_model_offline_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="no offline bundle.*local checkpoint folder"):
        resolve_model("some-org/some-model-that-is-not-here")


def test_encoder_unit_norm_batched_and_cached():
    enc = Encoder()
    assert Path(resolve_encoder_path()).is_dir()  # the offline copy of all-MiniLM-L6-v2
    texts = ["What is 2 + 3?", "Two plus three is five.", "What is 2 + 3?"]
    before_calls, before_texts = enc.calls, enc.texts_encoded
    vecs = enc.encode(texts)
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vecs[0], vecs[2])
    assert enc.calls - before_calls == 1 and enc.texts_encoded - before_texts == 2  # duplicates encoded once
    enc.encode(texts[:2])
    assert enc.calls - before_calls == 1  # all cached now
    # similar texts are closer than unrelated ones
    other = enc.encode(["The weather in Paris is rainy."])[0]
    assert vecs[0] @ vecs[1] > vecs[0] @ other
    clone = pickle.loads(pickle.dumps(enc))
    assert clone._model is None and len(clone._cache) == 0  # pickles without the model
    np.testing.assert_allclose(clone.encode(texts[:1]), vecs[:1], atol=1e-6)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        enc.encode(["ok", None])
