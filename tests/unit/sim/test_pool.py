"""Spreading nodes over the processes of the inproc backend."""

from hypothesis import given
from hypothesis import strategies as st

from sim.pool import balance


def test_the_heaviest_nodes_go_first_to_the_least_loaded_process():
    loads = {"a": 30.0, "b": 18.0, "c": 12.0, "d": 8.0, "e": 5.0}
    slots = balance(loads, 2)
    assert slots == {"a": 0, "b": 1, "c": 1, "d": 0, "e": 1}


@given(
    st.dictionaries(st.text(min_size=1, max_size=4), st.floats(0, 1e6), min_size=1, max_size=40),
    st.integers(1, 6),
)
def test_every_node_has_a_slot_and_no_slot_exceeds_the_lightest_by_more_than_one_node(loads, n):
    slots = balance(loads, n)
    assert set(slots) == set(loads) and set(slots.values()) <= set(range(n))
    totals = [sum(loads[k] for k, s in slots.items() if s == i) for i in range(n)]
    assert max(totals) - min(totals) <= max(loads.values()) + 1e-6
