"""Label-aware order codes: (label, similarity rank within that label) per prompt position."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memrl.poem.orders import decode_label_order, encode_label_order, label_ranks

# n examples with labels from {0, 1, 2}, a permutation, and two independent sets of similarities
cases = st.integers(1, 7).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 2), min_size=n, max_size=n),
    st.permutations(list(range(n))),
    st.lists(st.floats(-1, 1, allow_nan=False), min_size=n, max_size=n),
    st.lists(st.floats(-1, 1, allow_nan=False), min_size=n, max_size=n),
))


@settings(max_examples=200, deadline=None)
@given(cases)
def test_label_code_round_trip_and_transfer_keeps_the_label_pattern(case):
    labels, perm, sims_a, sims_b = case
    ranks_a, ranks_b = label_ranks(labels, sims_a), label_ranks(labels, sims_b)
    code = encode_label_order(perm, labels, ranks_a)
    # same ranks: decode gives the order back
    assert decode_label_order(code, labels, ranks_a) == tuple(perm)
    # another query's ranks: a permutation with the same label at every position, and each
    # position holds the example of that within-label rank for the new query
    other = decode_label_order(code, labels, ranks_b)
    assert sorted(other) == list(range(len(labels)))
    assert [labels[i] for i in other] == [labels[i] for i in perm]
    assert [(labels[i], ranks_b[i]) for i in other] == list(code)


def test_label_ranks_and_a_worked_example():
    labels, sims = (0, 1, 0, 1), (0.1, 0.9, 0.5, 0.2)
    assert label_ranks(labels, sims) == (1, 0, 0, 1)  # within label 0: ex 2 (0.5) before ex 0 (0.1)
    code = encode_label_order((0, 1, 2, 3), labels, label_ranks(labels, sims))
    assert code == ((0, 1), (1, 0), (0, 0), (1, 1))
    # a query for which example 0 is the most similar of label 0 and example 3 of label 1
    assert decode_label_order(code, labels, label_ranks(labels, (0.9, 0.1, 0.2, 0.5))) == (2, 3, 0, 1)


def test_label_code_that_the_candidates_cannot_realise_is_refused():
    code = ((0, 0), (0, 1))
    with pytest.raises(ValueError, match="cannot be realised"):
        decode_label_order(code, (0, 1), (0, 0))  # only one example of label 0
