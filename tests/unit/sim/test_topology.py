import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.topology import is_connected, matchings, neighbours


def check_graph(nbrs: list[set[int]], n: int) -> None:
    assert len(nbrs) == n
    for i, links in enumerate(nbrs):
        assert i not in links
        assert links <= set(range(n))
        assert all(i in nbrs[j] for j in links)
    assert is_connected(nbrs)


def degrees(nbrs: list[set[int]]) -> list[int]:
    return [len(links) for links in nbrs]


def test_ring_and_full():
    assert neighbours("ring", 5) == [{4, 1}, {0, 2}, {1, 3}, {2, 4}, {3, 0}]
    assert neighbours("ring", 2) == [{1}, {0}]
    assert neighbours("full", 4) == [{1, 2, 3}, {0, 2, 3}, {0, 1, 3}, {0, 1, 2}]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 30), degree=st.integers(2, 29), seed=st.integers(0, 10**6))
def test_k_regular_gives_every_node_degree_links(n, degree, seed):
    if degree >= n or n * degree % 2:
        with pytest.raises(ValueError, match=r"degree must be in|must be even"):
            neighbours("k_regular", n, degree=degree, seed=seed)
        return
    nbrs = neighbours("k_regular", n, degree=degree, seed=seed)
    check_graph(nbrs, n)
    assert degrees(nbrs) == [degree] * n


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 30), degree=st.integers(3, 10), seed=st.integers(0, 10**6))
def test_random_has_the_average_degree_and_is_connected(n, degree, seed):
    degree = min(degree, n - 1)
    nbrs = neighbours("random", n, degree=degree, seed=seed)
    check_graph(nbrs, n)
    assert sum(degrees(nbrs)) == 2 * round(n * degree / 2)


def test_random_kinds_are_seeded():
    for kind in ("k_regular", "random"):
        graphs = [neighbours(kind, 20, degree=4, seed=s) for s in (1, 1, 2)]
        assert graphs[0] == graphs[1]
        assert graphs[0] != graphs[2]


def test_explicit_edges_are_made_symmetric():
    nbrs = neighbours("edges", 4, edges=[(0, 1), (2, 1), (3, 2), (1, 0)])
    assert nbrs == [{1}, {0, 2}, {1, 3}, {2}]


@pytest.mark.parametrize(
    ("kind", "n", "kwargs", "message"),
    [
        ("star", 4, {}, r"unknown topology 'star'"),
        ("ring", 1, {}, r"at least 2 nodes"),
        ("k_regular", 5, {"degree": 3}, r"no 3-regular graph on 5 nodes: n \* degree must be even"),
        ("k_regular", 5, {"degree": 5}, r"degree must be in 1..4"),
        ("k_regular", 6, {"degree": 1}, r"6 nodes need 5 to connect"),
        ("k_regular", 6, {}, r"k_regular needs a degree"),
        ("ring", 6, {"degree": 2}, r"ring takes no degree"),
        ("random", 10, {"degree": 1}, r"gives 5 links; 10 nodes need 9"),
        ("random", 40, {"degree": 2}, r"no connected random graph .* raise the degree"),
        ("edges", 3, {}, r"edges needs edges"),
        ("full", 3, {"edges": [(0, 1)]}, r"full takes no edges"),
        ("edges", 3, {"edges": [(0, 1), (1, 3)]}, r"edges.1: \[1, 3\] names a node outside 0..2"),
        ("edges", 3, {"edges": [(0, 1), (2, 2)]}, r"edges.1: \[2, 2\] is a self loop"),
        ("edges", 4, {"edges": [(0, 1), (2, 3)]}, r"edges graph of 4 nodes is not connected"),
        ("edges", 3, {"edges": [(0, 1, 2)]}, r"edges.0: \[0, 1, 2\] is not a pair of nodes"),
    ],
)
def test_impossible_topologies_raise(kind, n, kwargs, message):
    with pytest.raises(ValueError, match=message):
        neighbours(kind, n, **kwargs)


def test_is_connected_edge_cases():
    assert not is_connected([])
    assert is_connected([set()])
    assert not is_connected([{1}, {0}, set()])


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 12),
    pairs=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=30),
)
def test_is_connected_agrees_with_networkx(n, pairs):
    graph = nx.empty_graph(n)
    graph.add_edges_from((a, b) for a, b in pairs if a < n and b < n and a != b)
    nbrs = [set(graph.neighbors(i)) for i in range(n)]
    assert is_connected(nbrs) == nx.is_connected(graph)


@settings(max_examples=40, deadline=None)
@given(
    kind_degree=st.sampled_from([("ring", None), ("full", None), ("k_regular", 3), ("k_regular", 4),
                                 ("random", 3)]),
    n=st.integers(6, 24),
    seed=st.integers(0, 10**6),
)  # fmt: skip
def test_matchings_give_each_node_at_most_one_link_per_phase(kind_degree, n, seed):
    kind, degree = kind_degree
    if kind == "k_regular" and n * degree % 2:
        n += 1
    nbrs = neighbours(kind, n, degree=degree, seed=seed)
    phases = matchings(nbrs, seed)
    links = {frozenset((i, j)) for i, js in enumerate(nbrs) for j in js}
    assert set(phases) == links  # every link gets a phase
    for i, js in enumerate(nbrs):
        mine = [phases[frozenset((i, j))] for j in js]
        assert len(set(mine)) == len(mine), f"node {i} has two links in one phase"
    max_degree = max(degrees(nbrs))
    assert max_degree <= max(phases.values()) + 1 <= 2 * max_degree - 1


def test_matchings_of_regular_graphs_use_few_phases():
    # Vizing: max degree or max degree + 1 colours always exist; the greedy draws find them here.
    assert max(matchings(neighbours("ring", 20)).values()) + 1 == 2
    assert max(matchings(neighbours("k_regular", 20, degree=4, seed=0)).values()) + 1 <= 5
    assert max(matchings(neighbours("full", 6)).values()) + 1 == 5
