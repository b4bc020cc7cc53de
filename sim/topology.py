"""Who gossips with whom: neighbour sets of n nodes (0..n-1), symmetric, no self loops, connected.

Consensus averaging only reaches agreement on a connected graph, so a disconnected one is an
error rather than a topology.
"""

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a graph is drawn: an inproc worker never draws one
    import networkx as nx

KINDS = ("ring", "k_regular", "random", "full", "edges")
ATTEMPTS = 100  # random graphs drawn before giving up on a connected one


def neighbours(
    kind: str,
    n: int,
    *,
    degree: int | None = None,
    seed: int = 0,
    edges: Sequence[Sequence[int]] | None = None,
) -> list[set[int]]:
    """Neighbour sets for `kind`:

    - ``ring``: i links to i - 1 and i + 1.
    - ``k_regular``: a random graph where every node has `degree` links (n * degree even).
    - ``random``: n * degree / 2 links drawn uniformly (`degree` is the average).
    - ``full``: everyone links to everyone.
    - ``edges``: the given undirected links.

    The random kinds are seeded and redrawn until connected.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown topology {kind!r}: expected one of {', '.join(KINDS)}")
    if n < 2:
        raise ValueError(f"a swarm needs at least 2 nodes, got {n}")
    if (degree is not None) != (kind in ("k_regular", "random")):
        raise ValueError(f"{kind} needs a degree" if degree is None else f"{kind} takes no degree")
    if (edges is not None) != (kind == "edges"):
        raise ValueError(f"{kind} needs edges" if edges is None else f"{kind} takes no edges")
    graph = _graph(kind, n, degree, seed, edges)
    nbrs = [set(graph.neighbors(i)) for i in range(n)]
    if not is_connected(nbrs):
        raise ValueError(f"the {kind} graph of {n} nodes is not connected")
    return nbrs


def is_connected(nbrs: Sequence[set[int]]) -> bool:
    """Whether every node reaches every other (a graph without nodes is not connected)."""
    if not nbrs:
        return False
    seen, todo = {0}, [0]
    while todo:
        for j in nbrs[todo.pop()] - seen:
            seen.add(j)
            todo.append(j)
    return len(seen) == len(nbrs)


def _graph(
    kind: str, n: int, degree: int | None, seed: int, edges: Sequence[Sequence[int]] | None
) -> "nx.Graph":
    import networkx as nx

    if kind == "ring":
        return nx.cycle_graph(n)
    if kind == "full":
        return nx.complete_graph(n)
    if kind == "edges":
        return _explicit(n, edges or [])
    assert degree is not None
    if not 1 <= degree < n:
        raise ValueError(f"degree must be in 1..{n - 1} for {n} nodes, got {degree}")
    links = round(n * degree / 2)
    if kind == "k_regular" and n * degree % 2:
        raise ValueError(f"no {degree}-regular graph on {n} nodes: n * degree must be even")
    if links < n - 1:
        raise ValueError(f"degree {degree} gives {links} links; {n} nodes need {n - 1} to connect")
    rng = random.Random(seed)
    for _ in range(ATTEMPTS):
        if kind == "k_regular":
            graph = nx.random_regular_graph(degree, n, seed=rng)
        else:
            graph = nx.gnm_random_graph(n, links, seed=rng)
        if nx.is_connected(graph):
            return graph
    raise ValueError(
        f"no connected {kind} graph with degree {degree} on {n} nodes in {ATTEMPTS} draws "
        f"(seed {seed}): raise the degree"
    )


def _explicit(n: int, edges: Sequence[Sequence[int]]) -> "nx.Graph":
    import networkx as nx

    graph = nx.empty_graph(n)
    for k, edge in enumerate(edges):
        if len(edge) != 2:
            raise ValueError(f"edges.{k}: {list(edge)} is not a pair of nodes")
        a, b = edge
        if not (0 <= a < n and 0 <= b < n):
            raise ValueError(f"edges.{k}: [{a}, {b}] names a node outside 0..{n - 1}")
        if a == b:
            raise ValueError(f"edges.{k}: [{a}, {b}] is a self loop")
        graph.add_edge(a, b)
    return graph


def matchings(nbrs: Sequence[set[int]], seed: int = 0) -> dict[frozenset[int], int]:
    """Each link's phase in a rotation of matchings: no node has two links in one phase, so a
    node gossips with at most one neighbour a round (MATCHA-style: Wang et al., 2019).

    A proper edge colouring, drawn greedily over shuffled link orders; the one with the fewest
    colours wins (never more than 2 * max degree - 1; the max degree itself is the best case).
    """
    links = sorted({frozenset((i, j)) for i, js in enumerate(nbrs) for j in js}, key=sorted)
    best = max((len(js) for js in nbrs), default=0)
    rng = random.Random(seed)
    chosen: dict[frozenset[int], int] = {}
    for _ in range(ATTEMPTS):
        used: list[set[int]] = [set() for _ in nbrs]  # colours already at each node
        colours: dict[frozenset[int], int] = {}
        for link in links:
            a, b = sorted(link)
            colour = next(c for c in range(len(links) + 1) if c not in used[a] | used[b])
            colours[link] = colour
            used[a].add(colour)
            used[b].add(colour)
        if not chosen or max(colours.values()) < max(chosen.values()):
            chosen = colours
        if max(chosen.values(), default=-1) + 1 <= best:
            break
        rng.shuffle(links)
    return chosen
