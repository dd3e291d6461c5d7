"""EpisodicMemory: capacity, FIFO order, alignment, backends, persistence.

The property tests drive the memory and a plain-Python reference model (an ordered dict of
lists) with the same random operations and compare everything observable.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memrl.memory import EpisodicMemory, MemoryFormatError, topk_search

faiss = pytest.importorskip("faiss")

DIM = 8


def unit(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class ReferenceMemory:
    """The spec, written as plainly as possible: FIFO keys, FIFO values per key."""

    def __init__(self, max_keys: int, max_values: int) -> None:
        self.max_keys, self.max_values = max_keys, max_values
        self.data: OrderedDict[str, list[np.ndarray]] = OrderedDict()

    def add(self, key_id: str, value: np.ndarray) -> None:
        if key_id not in self.data:
            if len(self.data) == self.max_keys:
                self.data.popitem(last=False)
            self.data[key_id] = []
        values = self.data[key_id]
        values.append(value)
        if len(values) > self.max_values:
            values.pop(0)


def key_vector(key_id: str) -> np.ndarray:
    # deterministic per id, so alignment between a key and its vector can be checked
    rng = np.random.default_rng(abs(hash(key_id)) % (2**32))
    return unit(rng, 1)[0]


ops = st.lists(
    st.tuples(st.integers(0, 11), st.integers(1, 5)),  # (question id, number of values to append)
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, max_keys=st.integers(1, 5), max_values=st.integers(1, 4), batch=st.booleans())
def test_matches_reference_model(ops, max_keys, max_values, batch):
    mem = EpisodicMemory(DIM, max_keys, max_values)
    ref = ReferenceMemory(max_keys, max_values)
    counter = 0
    pending: list[tuple[str, np.ndarray]] = []
    for qid, n_values in ops:
        key_id = f"q{qid}"
        for _ in range(n_values):
            # value = key vector with the running counter in the last coordinate: checks both
            # alignment (which key) and order (which write)
            value = np.zeros(DIM, np.float32)
            value[:-1] = key_vector(key_id)[:-1]
            value[-1] = counter
            counter += 1
            ref.add(key_id, value)
            pending.append((key_id, value))
        if not batch:  # one add() per op, else a single add() for everything at the end
            mem.add([k for k, _ in pending], np.stack([key_vector(k) for k, _ in pending]),
                    np.stack([v for _, v in pending]))
            pending = []
    if pending:
        mem.add([k for k, _ in pending], np.stack([key_vector(k) for k, _ in pending]),
                np.stack([v for _, v in pending]))

    assert len(mem) == len(ref.data) <= max_keys
    assert mem.key_ids() == list(ref.data)
    assert mem.num_values == sum(len(v) for v in ref.data.values())
    for key_id, values in ref.data.items():
        got = mem.values_of(key_id)
        assert got.shape[0] <= max_values
        np.testing.assert_array_equal(got, np.stack(values))
    # the key matrix row of each id is that id's vector (no drift after evictions)
    sims, ids = mem.search(np.stack([key_vector(k) for k in ref.data]), k=1)
    assert [row[0] for row in ids] == list(ref.data)
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)


def test_exact_key_match_appends_and_fifo_eviction_order():
    mem = EpisodicMemory(DIM, max_keys=2, max_values=2)
    rng = np.random.default_rng(0)
    k = unit(rng, 3)
    mem.add(["a", "b", "a"], k[[0, 1, 0]], unit(rng, 3))
    assert mem.key_ids() == ["a", "b"] and mem.num_values == 3
    mem.add(["c"], k[2:3], unit(rng, 1))  # evicts "a", the oldest key, with its two values
    assert mem.key_ids() == ["b", "c"] and "a" not in mem and mem.num_values == 2
    with pytest.raises(KeyError):
        mem.values_of("a")


@settings(max_examples=50, deadline=None)
@given(n_keys=st.integers(1, 60), k=st.integers(1, 12), levels=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_exact_topk_breaks_ties_by_lower_index(n_keys, k, levels, seed):
    # few distinct similarity levels: many exact ties, also across the k-th place
    rng = np.random.default_rng(seed)
    sims_row = rng.integers(0, levels, size=n_keys).astype(np.float32)
    keys = np.zeros((n_keys, 2), np.float32)
    keys[:, 0] = sims_row
    query = np.array([[1.0, 0.0]], np.float32)
    s, i = topk_search(query, keys, k, "exact")
    expected = sorted(range(n_keys), key=lambda j: (-sims_row[j], j))[: min(k, n_keys)]
    assert i[0].tolist() == expected
    np.testing.assert_array_equal(s[0], sims_row[expected])


@settings(max_examples=25, deadline=None)
@given(n_keys=st.integers(1, 300), k=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_exact_backend_equals_faiss(n_keys, k, seed):
    rng = np.random.default_rng(seed)
    keys, queries = unit(rng, n_keys), unit(rng, 7)
    s_exact, i_exact = topk_search(queries, keys, k, "exact")
    s_faiss, i_faiss = topk_search(queries, keys, k, "faiss")
    assert s_exact.shape == s_faiss.shape == (7, min(k, n_keys))
    np.testing.assert_allclose(s_exact, s_faiss, atol=1e-5)
    # indices agree except where similarities tie (then either order is right)
    for row in range(7):
        for j in range(i_exact.shape[1]):
            if i_exact[row, j] != i_faiss[row, j]:
                assert abs(s_exact[row, j] - queries[row] @ keys[i_faiss[row, j]]) < 1e-5


def test_exact_search_chunks_merge_like_one_block(monkeypatch):
    import memrl.memory.backends as backends

    rng = np.random.default_rng(1)
    keys, queries = unit(rng, 1000), unit(rng, 5)
    full = topk_search(queries, keys, 10)
    monkeypatch.setattr(backends, "_CHUNK", 64)  # force 16 chunks and the merge path
    chunked = topk_search(queries, keys, 10)
    np.testing.assert_array_equal(full[1], chunked[1])
    brute = np.argsort(-(queries @ keys.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(full[1], brute)


def test_memory_backends_give_same_reads():
    rng = np.random.default_rng(3)
    mems = {b: EpisodicMemory(DIM, 50, 5, backend=b) for b in ("exact", "faiss")}
    ids = [f"q{i % 60}" for i in range(400)]  # 60 ids into 50 slots: evictions happen
    keys = np.stack([key_vector(i) for i in ids])
    values = unit(rng, 400)
    for m in mems.values():
        m.add(ids, keys, values)
    q = unit(rng, 9)
    c_exact, n_exact = mems["exact"].centroids(q, 3)
    c_faiss, n_faiss = mems["faiss"].centroids(q, 3)
    np.testing.assert_allclose(c_exact, c_faiss, atol=1e-6)
    np.testing.assert_array_equal(n_exact, n_faiss)


def test_reads_on_small_and_empty_memory():
    mem = EpisodicMemory(DIM, 10, 3)
    q = unit(np.random.default_rng(0), 2)
    sims, ids = mem.search(q, k=5)
    assert sims.shape == (2, 0) and ids == [[], []]  # empty: no -1 sentinels
    cen, counts = mem.centroids(q, 5)
    assert counts.tolist() == [0, 0] and not cen.any()
    assert [m.tolist() for m in mem.max_similarity(q, 5, [q[:1], q[:1]])] == [[pytest.approx(np.nan, nan_ok=True)]] * 2
    mem.add(["a"], q[:1], q[1:])
    sims, ids = mem.search(q, k=5)  # fewer keys than k: narrower result
    assert sims.shape == (2, 1) and ids == [["a"], ["a"]]


def test_centroids_and_max_similarity_by_hand():
    mem = EpisodicMemory(2, 4, 4)
    e0, e1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    mem.add(["x", "x", "y"], np.stack([e0, e0, e1]), np.stack([e0, e1, e1]))
    # query e0 -> key "x" (sim 1) -> values {e0, e1} -> centroid (0.5, 0.5)
    cen, counts = mem.centroids(e0[None], k=1)
    np.testing.assert_allclose(cen, [[0.5, 0.5]])
    assert counts.tolist() == [2]
    # K=2 pools x and y: {e0, e1, e1} -> (1/3, 2/3)
    cen, counts = mem.centroids(e0[None], k=2)
    np.testing.assert_allclose(cen, [[1 / 3, 2 / 3]], rtol=1e-6)
    assert counts.tolist() == [3]
    probe = np.array([[np.sqrt(0.5), np.sqrt(0.5)], [-1.0, 0.0]])
    (mx,) = mem.max_similarity(e1[None], k=1, probes=[probe])  # pool of "y" = {e1}
    np.testing.assert_allclose(mx, [np.sqrt(0.5), 0.0], atol=1e-6)


def test_validation_errors_name_the_problem():
    mem = EpisodicMemory(DIM, 4, 4)
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        mem.add(["a"], np.ones((1, 3)), np.ones((1, DIM)))
    with pytest.raises(ValueError, match="2 ids, 1 keys"):
        mem.add(["a", "b"], np.ones((1, DIM)), np.ones((1, DIM)))
    with pytest.raises(ValueError, match="NaN"):
        mem.add(["a"], np.full((1, DIM), np.nan), np.ones((1, DIM)))
    with pytest.raises(ValueError, match="max_keys"):
        EpisodicMemory(DIM, 0, 4)
    with pytest.raises(ValueError, match="backend"):
        EpisodicMemory(DIM, 4, 4, backend="annoy")


def test_footprint_at_full_capacity_and_float16():
    n, values_per_key, d = 64, 10, 32
    rng = np.random.default_rng(0)
    for dtype, itemsize in (("float32", 4), ("float16", 2)):
        mem = EpisodicMemory(d, n, values_per_key, dtype=dtype)
        ids = [f"q{i}" for i in range(n) for _ in range(values_per_key)]
        keys = np.repeat(unit(rng, n, d), values_per_key, axis=0)
        mem.add(ids, keys, unit(rng, n * values_per_key, d))
        raw = n * values_per_key * d * itemsize
        assert mem.num_values == n * values_per_key
        assert mem.nbytes <= 1.2 * raw, (dtype, mem.nbytes / raw)
    # float16 storage reads back close to float32
    m32, m16 = EpisodicMemory(d, 8, 4), EpisodicMemory(d, 8, 4, dtype="float16")
    v = unit(rng, 8, d)
    for m in (m32, m16):
        m.add([f"q{i}" for i in range(8)], v, v)
    np.testing.assert_allclose(m32.centroids(v, 2)[0], m16.centroids(v, 2)[0], atol=2e-3)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_ops=st.integers(0, 80), seed=st.integers(0, 1000), dtype=st.sampled_from(["float32", "float16"]))
def test_save_load_round_trip(tmp_path, n_ops, seed, dtype):
    rng = np.random.default_rng(seed)
    mem = EpisodicMemory(DIM, 5, 3, dtype=dtype, encoder_name="enc-a")
    ids = [f"q{rng.integers(0, 9)}" for _ in range(n_ops)]
    mem.add(ids, np.stack([key_vector(i) for i in ids]) if ids else np.zeros((0, DIM)), unit(rng, n_ops))
    path = mem.save(tmp_path / f"m{seed}-{n_ops}-{dtype}.npz")
    loaded = EpisodicMemory.load(path)
    assert loaded.key_ids() == mem.key_ids() and loaded.config() == mem.config()
    for key_id in mem.key_ids():
        np.testing.assert_array_equal(loaded.values_of(key_id), mem.values_of(key_id))
    # the loaded memory keeps evicting in the same order as the original
    more = [f"new{i}" for i in range(3)]
    for m in (mem, loaded):
        m.add(more, np.stack([key_vector(i) for i in more]), unit(np.random.default_rng(0), 3))
    assert loaded.key_ids() == mem.key_ids()


def test_load_rejects_bad_files_and_leaves_memory_untouched(tmp_path):
    rng = np.random.default_rng(0)
    mem = EpisodicMemory(DIM, 5, 3, encoder_name="enc-a")
    mem.add(["a", "b"], unit(rng, 2), unit(rng, 2))
    good = mem.save(tmp_path / "good.npz")
    before = (mem.key_ids(), mem.values_of("a").copy())

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.ones(3))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    other_enc = EpisodicMemory(DIM, 5, 3, encoder_name="enc-b")
    other_enc.add(["z"], unit(rng, 1), unit(rng, 1))
    other_path = other_enc.save(tmp_path / "other.npz")
    other_dim = EpisodicMemory(DIM + 1, 5, 3, encoder_name="enc-a").save(tmp_path / "dim.npz")

    for path, pattern in ((truncated, "truncated"), (foreign, "not a memrl memory"),
                          (garbage, "truncated or not"), (other_path, "enc-b"), (other_dim, "dim")):
        with pytest.raises(MemoryFormatError, match=pattern):
            mem.restore(path)
        assert (mem.key_ids(), mem.values_of("a").tolist()) == (before[0], before[1].tolist())
    with pytest.raises(MemoryFormatError, match="enc-b"):
        EpisodicMemory.load(other_path, encoder_name="enc-a")
    with pytest.raises(FileNotFoundError):
        EpisodicMemory.load(tmp_path / "missing.npz")


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    mem = EpisodicMemory(DIM, 5, 3)
    mem.add(["a"], unit(rng, 1), unit(rng, 1))
    path = mem.save(tmp_path / "m.npz")
    original = path.read_bytes()
    mem.add(["b"], unit(rng, 1), unit(rng, 1))

    import memrl.io as utils

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(utils.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        mem.save(path)
    assert path.read_bytes() == original  # the old file survived intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp litter
