"""Cutting one data set into nodes: by a site column, by Dirichlet label skew, by quantity skew.

Every function returns row indices (sorted, int64) and uses each row exactly once. The random
ones are seeded with `numpy.random.default_rng(seed)`, so a seed gives the same split anywhere.
"""

import math

import numpy as np

CLASS_FLOOR = 2  # rows of each class every node gets when the target is binary


def natural(sites: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of each site label, by label in sorted order."""
    labels = np.asarray(sites)
    return {str(label): np.flatnonzero(labels == label) for label in np.unique(labels)}


def dirichlet_label_skew(
    y: np.ndarray, nodes: int, alpha: float, seed: int, min_rows: int = 10
) -> list[np.ndarray]:
    """Per class, shares of its rows ~ Dirichlet(alpha) over the nodes: small alpha, few classes
    per node; large alpha, about the global mix.

    Every node gets at least `min_rows` rows and, for a binary target, at least 2 rows of each
    class. Small data sets almost never meet that by chance (20 nodes, 569 rows, alpha 0.3: not
    once in 20,000 draws), so instead of redrawing, rows are moved one at a time from the node
    richest in what is missing to the node short of it, which keeps the skew of the draw.
    """
    y = np.asarray(y)
    _check(len(y), nodes, alpha, min_rows)
    classes, sizes = np.unique(y, return_counts=True)
    floor = CLASS_FLOOR if len(classes) == 2 else 0
    for label, size in zip(classes, sizes, strict=True):
        if size < floor * nodes:
            raise ValueError(
                f"cannot give each of {nodes} nodes {floor} rows of class {label}: "
                f"it has only {size} rows (at most {size // floor} nodes)"
            )
    rng = np.random.default_rng(seed)
    shares = [rng.dirichlet(np.full(nodes, alpha)) for _ in classes]
    counts = np.stack([rng.multinomial(n, p) for n, p in zip(sizes, shares, strict=True)], 1)
    _top_up(counts, floor, min_rows)
    parts: list[list[np.ndarray]] = [[] for _ in range(nodes)]
    for j, label in enumerate(classes):
        rows = rng.permutation(np.flatnonzero(y == label))
        for i, chunk in enumerate(np.split(rows, np.cumsum(counts[:, j])[:-1])):
            parts[i].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def quantity_skew(
    n_rows: int, nodes: int, alpha: float, seed: int, min_rows: int = 10
) -> list[np.ndarray]:
    """Node sizes ~ min_rows + Dirichlet(alpha) * the remaining rows; rows shuffled, so each
    node's labels follow the global mix (roughly: it is a random sample)."""
    _check(n_rows, nodes, alpha, min_rows)
    rng = np.random.default_rng(seed)
    extra = rng.multinomial(n_rows - nodes * min_rows, rng.dirichlet(np.full(nodes, alpha)))
    rows = rng.permutation(n_rows)
    return [np.sort(p).astype(np.int64) for p in np.split(rows, np.cumsum(min_rows + extra)[:-1])]


def _check(n_rows: int, nodes: int, alpha: float, min_rows: int) -> None:
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, got {nodes}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number, got {alpha}")
    if min_rows < 1:
        raise ValueError(f"min_rows must be at least 1, got {min_rows}")
    if min_rows * nodes > n_rows:
        raise ValueError(
            f"cannot split {n_rows} rows into {nodes} nodes of at least {min_rows} rows: "
            f"that needs {min_rows * nodes} rows"
        )


def _top_up(counts: np.ndarray, floor: int, min_rows: int) -> None:
    """Move rows (in place; counts is nodes x classes) until every node has `floor` rows of
    each class and `min_rows` in all. The caller checked that both are possible."""
    for j in range(counts.shape[1]):
        while (short := np.flatnonzero(counts[:, j] < floor)).size:
            donor = int(np.argmax(counts[:, j]))  # has more than floor: the class is big enough
            counts[donor, j] -= 1
            counts[short[0], j] += 1
    while (short := np.flatnonzero(counts.sum(1) < min_rows)).size:
        # The largest node has more than min_rows, hence more than floor rows of its main class.
        donor = int(np.argmax(counts.sum(1)))
        j = int(np.argmax(counts[donor]))
        counts[donor, j] -= 1
        counts[short[0], j] += 1


def hold_out(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified, seeded test set: (the rows kept, the rows held out), both sorted.

    Each class holds out ``round(fraction * its size)`` rows, at least 1 and at most all but
    one (a class of one row holds out none), so the test set has every class's share and the
    rest keeps every class."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"test fraction must be in (0, 1), got {fraction}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        k = min(max(round(fraction * len(rows)), 1), len(rows) - 1)
        held.append(rng.permutation(rows)[:k])
    test = np.sort(np.concatenate(held)).astype(np.int64) if held else np.zeros(0, np.int64)
    if test.size == 0:
        raise ValueError(f"a test fraction of {fraction} holds out no row of {len(y)}")
    keep = np.setdiff1d(np.arange(len(y), dtype=np.int64), test, assume_unique=True)
    return keep, test
