import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memrl.poem.orders import decode_order, encode_order, kate_code, sample_orders, similarity_ranks

perm_pairs = st.integers(1, 8).flatmap(
    lambda n: st.tuples(st.permutations(list(range(n))), st.permutations(list(range(n))))
)


@given(perm_pairs)
def test_decode_inverts_encode(pr):
    perm, ranks = pr
    assert decode_order(encode_order(perm, ranks), ranks) == tuple(perm)


@given(perm_pairs)
def test_encode_inverts_decode(cr):
    code, ranks = cr
    assert encode_order(decode_order(code, ranks), ranks) == tuple(code)


@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=9))
def test_similarity_ranks_is_a_permutation_ordered_by_similarity(sims):
    ranks = similarity_ranks(sims)
    assert sorted(ranks) == list(range(len(sims)))
    for i, j in itertools.combinations(range(len(sims)), 2):
        if sims[i] > sims[j]:
            assert ranks[i] < ranks[j]
        elif sims[i] == sims[j]:  # ties: lower index first
            assert ranks[i] < ranks[j]


@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=8, unique=True))
def test_code_transfers_between_queries(sims):
    # "most similar last" decodes, for any query, to the examples sorted by ascending similarity
    perm = decode_order(kate_code(len(sims)), similarity_ranks(sims))
    assert [sims[p] for p in perm] == sorted(sims)


def test_encode_example_and_bad_input():
    assert encode_order((1, 2, 0), (2, 0, 1)) == (0, 1, 2)
    with pytest.raises(ValueError, match="permutation"):
        encode_order((0, 0, 1), (0, 1, 2))
    with pytest.raises(ValueError, match="ranks"):
        decode_order((0, 1), (0, 2))


@settings(max_examples=30)
@given(st.integers(1, 7), st.integers(1, 60), st.integers(0, 1000))
def test_sample_orders_distinct_and_capped(n, budget, seed):
    orders = sample_orders(n, budget, np.random.default_rng(seed))
    assert len(orders) == min(math.factorial(n), budget)
    assert len(set(orders)) == len(orders)
    assert all(sorted(o) == list(range(n)) for o in orders)


def test_sample_orders_all_when_within_budget():
    assert sample_orders(3, 6, np.random.default_rng(0)) == list(itertools.permutations(range(3)))
    with pytest.raises(ValueError):
        sample_orders(0, 3, np.random.default_rng(0))
