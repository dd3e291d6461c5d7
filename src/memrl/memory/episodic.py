"""The episodic memory: at most N keys, each with a bounded FIFO list of at most L values.

Layout (why it is shaped this way):

* Keys live in one ``(capacity, d)`` matrix that doubles as the search index. Key *slots* are
  assigned round-robin: the t-th distinct key ever written goes to slot ``t % N``. Once the memory
  is full, the slot about to be reused always holds the oldest key, so FIFO eviction is a plain
  overwrite and the key, its id and its values are replaced together (they cannot desynchronise,
  the failure that crashed the reference code on the second eviction).
* Each slot's values are a small ring buffer of its own, grown by doubling up to L rows. At full
  capacity (N keys x L values) the footprint is the raw vector bytes plus one key matrix (1/L of
  it), well inside 1.2x; a memory that is mostly empty costs at most 2x what it stores.
* A key written again (same question text or id) appends to its ring; it does not refresh the
  key's age: eviction order is insertion order, as in the paper.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memrl.io import atomic_write_bytes
from memrl.memory.backends import BACKENDS, topk_search

logger = logging.getLogger(__name__)

FORMAT_NAME = "memrl.episodic_memory"
FORMAT_VERSION = 1
_DTYPES = {"float32": np.float32, "float16": np.float16}


class MemoryFormatError(ValueError):
    """A saved memory is truncated, foreign, of another version, or built for another encoder."""


class EpisodicMemory:
    """Bounded episodic kNN memory (keys -> FIFO lists of value vectors).

    Args:
        dim: vector dimension ``d`` (384 for all-MiniLM-L6-v2).
        max_keys: ``N``, the most keys kept; the oldest key is evicted beyond it.
        max_values: ``L``, the most values per key; a key's oldest value is dropped beyond it.
        backend: ``"exact"`` (numpy, default) or ``"faiss"`` (``faiss-cpu``); same results.
        dtype: ``"float32"`` (default) or ``"float16"`` storage; reads always return float32.
        encoder_name: name of the encoder that made the vectors; saved with the memory and
            checked on load so a memory is never read with vectors of another encoder.

    Example:
        >>> import numpy as np
        >>> m = EpisodicMemory(dim=2, max_keys=2, max_values=2)
        >>> m.add(["q1", "q1", "q2"], np.eye(2)[[0, 0, 1]], np.eye(2)[[1, 0, 0]])
        >>> len(m), m.num_values
        (2, 3)
        >>> m.centroids(np.array([[1.0, 0.0]]), k=1)[0].tolist()
        [[0.5, 0.5]]
    """

    def __init__(
        self,
        dim: int,
        max_keys: int = 7473,
        max_values: int = 100,
        *,
        backend: str = "exact",
        dtype: str = "float32",
        encoder_name: str | None = None,
    ) -> None:
        for name, value in (("dim", dim), ("max_keys", max_keys), ("max_values", max_values)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {tuple(_DTYPES)}")
        self.dim = int(dim)
        self.max_keys = int(max_keys)
        self.max_values = int(max_values)
        self.backend = backend
        self.dtype = dtype
        self.encoder_name = encoder_name
        self.clear()

    # ------------------------------------------------------------------ state
    def clear(self) -> None:
        """Forget everything (capacity settings are kept)."""
        self._np_dtype = _DTYPES[self.dtype]
        self._keys = np.zeros((0, self.dim), self._np_dtype)
        self._values: list[np.ndarray] = []  # per slot, (cap_i, d)
        self._counts: list[int] = []  # per slot, values stored (<= L)
        self._heads: list[int] = []  # per slot, ring position of the oldest value once full
        self._ids: list[str] = []  # per slot
        self._slot_of: dict[str, int] = {}
        self._inserted = 0  # distinct keys ever inserted; next slot is _inserted % N

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return (
            f"EpisodicMemory(keys={len(self)}/{self.max_keys}, values={self.num_values}, "
            f"L={self.max_values}, dim={self.dim}, backend={self.backend!r}, dtype={self.dtype!r})"
        )

    @property
    def num_values(self) -> int:
        """Total number of value vectors stored."""
        return int(sum(self._counts))

    @property
    def nbytes(self) -> int:
        """Bytes held by vector storage (keys + allocated value rows)."""
        return int(self._keys.nbytes + sum(v.nbytes for v in self._values))

    def key_ids(self) -> list[str]:
        """Stored key ids, oldest first (the order in which they will be evicted)."""
        n = len(self._ids)
        if n < self.max_keys:
            return list(self._ids)
        start = self._inserted % self.max_keys
        return self._ids[start:] + self._ids[:start]

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._slot_of

    def values_of(self, key_id: str) -> np.ndarray:
        """The values stored under ``key_id`` oldest first, as float32 ``(count, d)``."""
        if key_id not in self._slot_of:
            raise KeyError(f"no key {key_id!r} in memory")
        slot = self._slot_of[key_id]
        arr, count, head = self._values[slot], self._counts[slot], self._heads[slot]
        if count < self.max_values:
            out = arr[:count]
        else:
            out = np.concatenate([arr[head:count], arr[:head]])
        return np.asarray(out, dtype=np.float32)

    # ------------------------------------------------------------------ write
    def add(self, key_ids: Sequence[str], keys: np.ndarray, values: np.ndarray) -> None:
        """Append ``values[i]`` under key ``key_ids[i]`` (vector ``keys[i]``) for every i.

        A key id already present appends to its list; a new one takes a fresh slot, evicting the
        oldest key when ``max_keys`` are stored. Within one call pairs are applied in order, so
        the G completions of one question can be written together.
        """
        keys = self._check_matrix("keys", keys)
        values = self._check_matrix("values", values)
        key_ids = list(key_ids)
        if not (len(key_ids) == keys.shape[0] == values.shape[0]):
            raise ValueError(
                f"add() needs one key id, key and value per pair; got {len(key_ids)} ids, "
                f"{keys.shape[0]} keys, {values.shape[0]} values"
            )
        for i, key_id in enumerate(key_ids):
            if not isinstance(key_id, str):
                raise TypeError(f"key_ids[{i}] must be a str, got {type(key_id).__name__}")
            slot = self._slot_of.get(key_id)
            if slot is None:
                slot = self._new_slot(key_id, keys[i])
            self._append_value(slot, values[i])

    def _new_slot(self, key_id: str, key: np.ndarray) -> int:
        slot = self._inserted % self.max_keys
        self._inserted += 1
        if slot < len(self._ids):  # full: evict the oldest key, which sits exactly here
            del self._slot_of[self._ids[slot]]
            self._ids[slot] = key_id
            self._values[slot] = np.zeros((min(4, self.max_values), self.dim), self._np_dtype)
            self._counts[slot] = 0
            self._heads[slot] = 0
        else:
            if slot >= self._keys.shape[0]:  # grow the key matrix geometrically, capped at N
                new_cap = min(self.max_keys, max(16, 2 * self._keys.shape[0]))
                grown = np.zeros((new_cap, self.dim), self._np_dtype)
                grown[: self._keys.shape[0]] = self._keys
                self._keys = grown
            self._ids.append(key_id)
            self._values.append(np.zeros((min(4, self.max_values), self.dim), self._np_dtype))
            self._counts.append(0)
            self._heads.append(0)
        self._keys[slot] = key
        self._slot_of[key_id] = slot
        return slot

    def _append_value(self, slot: int, value: np.ndarray) -> None:
        count = self._counts[slot]
        arr = self._values[slot]
        if count < self.max_values:
            if count == arr.shape[0]:
                grown = np.zeros((min(self.max_values, 2 * arr.shape[0]), self.dim), self._np_dtype)
                grown[:count] = arr
                arr = self._values[slot] = grown
            arr[count] = value
            self._counts[slot] = count + 1
        else:  # ring full: overwrite the oldest value
            head = self._heads[slot]
            arr[head] = value
            self._heads[slot] = (head + 1) % self.max_values

    def _check_matrix(self, name: str, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (n, {self.dim}); got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains NaN or infinite values")
        return x

    # ------------------------------------------------------------------ read
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-``k`` stored keys by inner product (cosine for unit vectors) for each query.

        Returns ``(sims, ids)``: ``sims`` is ``(m, k')`` with ``k' = min(k, len(self))``, sorted
        descending, and ``ids[j]`` the matching key ids. An empty memory gives ``k' = 0``.
        """
        sims, slots = self._search_slots(queries, k)
        return sims, [[self._ids[s] for s in row] for row in slots]

    def _search_slots(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check_matrix("queries", queries)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return topk_search(queries, self._keys[: len(self)], k, self.backend)

    def read(self, queries: np.ndarray, k: int) -> list[np.ndarray]:
        """Pooled values ``B(M, q)`` of the top-``k`` keys of each query (float32 ``(p_j, d)``;
        ``p_j = 0`` when the memory is empty)."""
        _, slots = self._search_slots(queries, k)
        return [self._pool(row) for row in slots]

    def _pool(self, slots: np.ndarray) -> np.ndarray:
        parts = [self._values[s][: self._counts[s]] for s in slots if self._counts[s]]
        if not parts:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def centroids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean of the pooled values of each query's top-``k`` keys, without materialising the
        pool: per-key sums are added directly.

        Returns ``(centroids (m, d) float32, counts (m,) int)``; a row with ``count == 0`` (empty
        memory) is all zeros and must be treated as "nothing retrieved" by the caller.
        """
        _, slots = self._search_slots(queries, k)
        out = np.zeros((len(slots), self.dim), np.float32)
        counts = np.zeros(len(slots), np.int64)
        for j, row in enumerate(slots):
            total = np.zeros(self.dim, np.float64)
            for s in row:
                c = self._counts[s]
                if c:
                    total += self._values[s][:c].sum(axis=0, dtype=np.float64)
                    counts[j] += c
            if counts[j]:
                out[j] = total / counts[j]
        return out, counts

    def max_similarity(
        self, queries: np.ndarray, k: int, probes: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """For query j, the highest inner product of each row of ``probes[j]`` with the pooled
        values of the query's top-``k`` keys.

        Returns one float32 array per query of length ``len(probes[j])``; it is all NaN when
        nothing was retrieved (empty memory), which the caller must map to its neutral value.
        """
        pools = self.read(queries, k)
        if len(probes) != len(pools):
            raise ValueError(f"need one probe block per query: {len(probes)} != {len(pools)}")
        out = []
        for pool, probe in zip(pools, probes):
            probe = self._check_matrix("probes", probe)
            if pool.shape[0] == 0:
                out.append(np.full(probe.shape[0], np.nan, np.float32))
            else:
                out.append((probe @ pool.T).max(axis=1).astype(np.float32))
        return out

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "max_keys": self.max_keys,
            "max_values": self.max_values,
            "backend": self.backend,
            "dtype": self.dtype,
            "encoder_name": self.encoder_name,
        }

    def state_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-able metadata + numpy arrays) that restores this memory exactly,
        values stored oldest first per key, keys oldest first."""
        order = self.key_ids()
        counts = np.array([self._counts[self._slot_of[i]] for i in order], np.int64)
        keys = np.asarray(
            [self._keys[self._slot_of[i]] for i in order], self._np_dtype
        ).reshape(len(order), self.dim)
        vals = [self.values_of(i).astype(self._np_dtype) for i in order]
        values = np.concatenate(vals) if vals else np.zeros((0, self.dim), self._np_dtype)
        return {"config": self.config(), "ids": order, "keys": keys, "counts": counts, "values": values}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this memory's contents with ``state`` (validated first; on error nothing
        changes). Capacity and dtype become the saved ones; the search backend stays this one's."""
        fresh = EpisodicMemory(**{**state["config"], "backend": self.backend})
        ids, keys, counts, values = state["ids"], state["keys"], state["counts"], state["values"]
        if keys.shape != (len(ids), fresh.dim) or counts.shape != (len(ids),):
            raise MemoryFormatError(
                f"inconsistent memory state: {len(ids)} ids, keys {keys.shape}, counts {counts.shape}"
            )
        if int(counts.sum()) != values.shape[0] or (len(ids) and counts.max() > fresh.max_values):
            raise MemoryFormatError("inconsistent memory state: value counts do not match the values array")
        if fresh.dim != self.dim:
            raise MemoryFormatError(f"saved memory has dim {fresh.dim}, this memory has dim {self.dim}")
        if self.encoder_name and fresh.encoder_name and fresh.encoder_name != self.encoder_name:
            raise MemoryFormatError(
                f"saved memory was built with encoder {fresh.encoder_name!r}, this memory uses "
                f"{self.encoder_name!r}; vectors of different encoders are not comparable"
            )
        start = 0
        for key_id, key, c in zip(ids, keys, counts):
            c = int(c)
            fresh.add([key_id] * c, np.repeat(key[None], c, axis=0), values[start : start + c])
            if c == 0:  # a key with no values still occupies its slot
                fresh._new_slot(key_id, key)
            start += c
        self.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "backend"})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the memory to one ``.npz`` file, atomically (temp file + rename): an interrupted
        save never corrupts an existing file."""
        state = self.state_dict()
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "memrl_version": _memrl_version(),
            "config": state["config"],
            "ids": state["ids"],
        }
        buf = io.BytesIO()
        np.savez(
            buf,
            meta=np.array(json.dumps(meta)),
            keys=state["keys"],
            counts=state["counts"],
            values=state["values"],
        )
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue())
        logger.info("saved %r to %s", self, path)
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, encoder_name: str | None = None, backend: str | None = None
    ) -> EpisodicMemory:
        """Load a memory written by :meth:`save`.

        Raises :class:`MemoryFormatError` for a truncated or foreign file, an unknown format
        version, or (when ``encoder_name`` is given) a memory built with another encoder.
        """
        state = _read_state(Path(path))
        saved_encoder = state["config"].get("encoder_name")
        if encoder_name is not None and saved_encoder is not None and saved_encoder != encoder_name:
            raise MemoryFormatError(
                f"{path}: memory was built with encoder {saved_encoder!r}, expected {encoder_name!r}"
            )
        config = dict(state["config"])
        if backend is not None:
            config["backend"] = backend
        memory = cls(**config)
        memory.load_state_dict(state)
        return memory

    def restore(self, path: str | os.PathLike) -> None:
        """Replace this memory's contents with the file at ``path``; the file must match this
        memory's dimension and encoder. On any error this memory is left untouched."""
        state = _read_state(Path(path))
        try:
            self.load_state_dict(state)
        except MemoryFormatError as exc:
            raise MemoryFormatError(f"{path}: {exc}") from None


def _memrl_version() -> str:
    from memrl.version import __version__

    return __version__


def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no memory file at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            missing = {"meta", "keys", "counts", "values"} - files
            if missing:
                raise MemoryFormatError(
                    f"{path} is not a memrl memory file (missing entries: {sorted(missing)})"
                )
            meta = json.loads(str(data["meta"]))
            keys, counts, values = data["keys"], data["counts"], data["values"]
    except MemoryFormatError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise MemoryFormatError(f"{path} is truncated or not a memrl memory file ({exc})") from None
    if meta.get("format") != FORMAT_NAME:
        raise MemoryFormatError(f"{path} is not a memrl memory file (format {meta.get('format')!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise MemoryFormatError(
            f"{path} has memory format version {meta.get('version')}, this memrl reads version "
            f"{FORMAT_VERSION}"
        )
    config = meta.get("config") or {}
    needed = {"dim", "max_keys", "max_values", "dtype"}
    if not needed <= set(config):
        raise MemoryFormatError(f"{path}: config lacks fields {sorted(needed - set(config))}")
    return {"config": config, "ids": list(meta["ids"]), "keys": keys, "counts": counts, "values": values}
