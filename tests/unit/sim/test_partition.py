import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sim.partition import dirichlet_label_skew, natural, quantity_skew


def binary(n: int, positives: int) -> np.ndarray:
    return np.random.default_rng(99).permutation(np.r_[np.ones(positives), np.zeros(n - positives)])


def assert_partition(parts: list[np.ndarray], n: int) -> None:
    """Every row in exactly one part."""
    assert all(p.dtype == np.int64 for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def skew(y: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean distance of the nodes' positive rate from the overall rate."""
    return float(np.mean([abs(y[p].mean() - y.mean()) for p in parts]))


def test_natural_groups_rows_by_sorted_label():
    parts = natural(np.array(["va", "cleveland", "va", "hungarian", "cleveland"]))
    assert list(parts) == ["cleveland", "hungarian", "va"]
    assert [p.tolist() for p in parts.values()] == [[1, 4], [3], [0, 2]]
    assert list(natural(np.array([2, 1, 2]))) == ["1", "2"]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(40, 400),
    share=st.floats(0.1, 0.9),
    nodes=st.integers(1, 12),
    alpha=st.floats(0.01, 100),
    min_rows=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_split_uses_every_row_once_and_meets_the_floors(
    n, share, nodes, alpha, min_rows, seed
):
    y = binary(n, round(share * n))
    assume(min(y.sum(), n - y.sum()) >= 2 * nodes and n >= nodes * min_rows)
    parts = dirichlet_label_skew(y, nodes, alpha, seed, min_rows)
    assert len(parts) == nodes
    assert_partition(parts, n)
    for p in parts:
        assert len(p) >= min_rows
        assert y[p].sum() >= 2 and (1 - y[p]).sum() >= 2


def test_dirichlet_without_a_binary_target_only_keeps_min_rows():
    y = np.repeat([0, 1, 2], [5, 100, 100])
    parts = dirichlet_label_skew(y, 8, 0.1, seed=3, min_rows=20)
    assert_partition(parts, len(y))
    assert min(len(p) for p in parts) >= 20
    assert any(not np.isin(0, y[p]) for p in parts)  # no floor of 2 per class here


def test_dirichlet_seeds_reproduce_and_differ():
    y = binary(500, 200)
    a, b, c = (dirichlet_label_skew(y, 10, 0.5, seed) for seed in (7, 7, 8))
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


def test_small_alpha_skews_labels_and_large_alpha_does_not():
    y = binary(4000, 2000)
    low = np.mean([skew(y, dirichlet_label_skew(y, 10, 0.05, s)) for s in range(5)])
    high = np.mean([skew(y, dirichlet_label_skew(y, 10, 1000.0, s)) for s in range(5)])
    assert low > 0.25
    assert high < 0.03


def test_dirichlet_breast_cancer_sized_split_is_feasible_and_skewed():
    """569 rows, 20 nodes, alpha 0.3: a plain redraw would essentially never meet the floors."""
    y = binary(569, 212)
    parts = dirichlet_label_skew(y, 20, 0.3, seed=0)
    assert_partition(parts, 569)
    assert min(len(p) for p in parts) >= 10
    assert skew(y, parts) > 0.15


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 10, "min_rows": 11}, r"cannot split 100 rows into 10 nodes .* needs 110 rows"),
        ({"nodes": 0}, r"nodes must be at least 1"),
        ({"alpha": 0.0}, r"alpha must be a positive number"),
        ({"alpha": float("nan")}, r"alpha must be a positive number"),
        ({"min_rows": 0}, r"min_rows must be at least 1"),
        ({"nodes": 6, "min_rows": 1}, r"6 nodes 2 rows of class 1.* only 11 rows \(at most 5"),
    ],
)
def test_impossible_dirichlet_requests_say_why(kwargs, message):
    args = {"nodes": 4, "alpha": 1.0, "min_rows": 5} | kwargs
    with pytest.raises(ValueError, match=message):
        dirichlet_label_skew(binary(100, 11), seed=0, **args)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 500),
    nodes=st.integers(1, 20),
    alpha=st.floats(0.01, 100),
    min_rows=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantity_split_uses_every_row_once_and_keeps_min_rows(n, nodes, alpha, min_rows, seed):
    assume(n >= nodes * min_rows)
    parts = quantity_skew(n, nodes, alpha, seed, min_rows)
    assert len(parts) == nodes
    assert_partition(parts, n)
    assert min(len(p) for p in parts) >= min_rows


def test_small_alpha_gives_unequal_sizes_with_iid_labels():
    y = binary(6000, 2000)
    skewed = quantity_skew(len(y), 10, 0.1, seed=1)
    even = quantity_skew(len(y), 10, 1000.0, seed=1)
    sizes = sorted(len(p) for p in skewed)
    assert sizes[-1] > 10 * sizes[0]
    assert max(len(p) for p in even) < 1.2 * min(len(p) for p in even)
    big = [p for p in skewed if len(p) >= 500]
    assert big and all(abs(y[p].mean() - 1 / 3) < 0.1 for p in big)


def test_quantity_seeds_reproduce_and_differ():
    a, b, c = (quantity_skew(300, 5, 1.0, seed) for seed in (1, 1, 2))
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


def test_impossible_quantity_request_says_why():
    with pytest.raises(ValueError, match=r"cannot split 50 rows into 6 nodes of at least 10"):
        quantity_skew(50, 6, 1.0, seed=0)
