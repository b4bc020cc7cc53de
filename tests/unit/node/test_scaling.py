"""Swarm-wide scaling: averaged sufficient statistics reproduce the pooled mean and std."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from node.scaling import Scaler, local_stats

values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def sites(draw, min_sites: int = 1):
    """Several sites' feature arrays with the same columns, some cells missing (NaN)."""
    d = draw(st.integers(1, 4))
    n_sites = draw(st.integers(min_sites, 5))
    out = []
    for _ in range(n_sites):
        n = draw(st.integers(1, 12))
        x = draw(hnp.arrays(np.float64, (n, d), elements=values))
        gaps = draw(hnp.arrays(np.bool_, (n, d)))
        out.append(np.where(gaps, np.nan, x))
    return out


def _pooled(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.concatenate(parts)
    counts = (~np.isnan(x)).sum(axis=0)
    mean = np.array(
        [np.mean(c[~np.isnan(c)]) if k else 0.0 for c, k in zip(x.T, counts, strict=True)]
    )
    std = np.array(
        [np.std(c[~np.isnan(c)]) if k else 1.0 for c, k in zip(x.T, counts, strict=True)]
    )
    return x, mean, std


@settings(max_examples=200, deadline=None)
@given(sites())
def test_averaged_site_stats_give_the_pooled_mean_and_std(parts):
    x, mean, std = _pooled(parts)
    averaged = np.mean([local_stats(p) for p in parts], axis=0)
    scaler = Scaler.from_stats(averaged)

    np.testing.assert_allclose(scaler.mean, mean, rtol=1e-9, atol=1e-9)
    # E[x^2] - E[x]^2 loses digits when the spread is tiny next to the magnitude (documented);
    # compare where the spread is resolvable, and check the floor where there is none.
    scale = np.nanmax(np.abs(x), axis=0, initial=1.0)
    resolvable = std > 1e-3 * np.maximum(scale, 1.0)
    np.testing.assert_allclose(scaler.std[resolvable], std[resolvable], rtol=1e-9, atol=1e-9)
    assert (scaler.std[std == 0] == 1.0).all()
    # Summing instead of averaging changes nothing: only the ratios matter.
    summed = Scaler.from_stats(np.sum([local_stats(p) for p in parts], axis=0))
    np.testing.assert_allclose(summed.mean, scaler.mean, rtol=1e-12, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(sites(min_sites=2))
def test_transform_of_pooled_data_is_standardized(parts):
    x, _, std = _pooled(parts)
    scaler = Scaler.from_stats(np.mean([local_stats(p) for p in parts], axis=0))
    z = scaler.transform(x)

    assert z.dtype == np.float32
    assert z.shape == x.shape
    assert np.isfinite(z).all()
    assert (z[np.isnan(x)] == 0).all()  # missing -> the swarm-wide mean
    scale = np.nanmax(np.abs(x), axis=0, initial=1.0)
    seen = (~np.isnan(x)).any(axis=0)
    for j in np.flatnonzero(seen & (std > 1e-3 * np.maximum(scale, 1.0))):
        present = z[~np.isnan(x[:, j]), j].astype(np.float64)
        assert abs(present.mean()) < 1e-5
        assert abs(present.std() - 1.0) < 1e-5


def test_local_stats_layout():
    x = np.array([[1.0, np.nan], [3.0, 2.0], [np.nan, np.nan]])
    np.testing.assert_array_equal(local_stats(x), [2, 1, 4, 2, 10, 4])


def test_unseen_and_constant_columns_get_mean_zero_or_unit_std():
    x = np.array([[np.nan, 5.0, 1.0], [np.nan, 5.0, 3.0]])
    scaler = Scaler.from_stats(local_stats(x))
    np.testing.assert_array_equal(scaler.mean, [0.0, 5.0, 2.0])
    np.testing.assert_array_equal(scaler.std, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(scaler.transform(x), [[0, 0, -1], [0, 0, 1]])


def test_round_trips_through_json():
    scaler = Scaler.from_stats(local_stats(np.array([[1.0, 10.0], [2.0, 30.0], [4.0, 20.0]])))
    restored = Scaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(restored.mean, scaler.mean)
    np.testing.assert_array_equal(restored.std, scaler.std)


@pytest.mark.parametrize(
    "stats",
    [np.array([1.0, 2.0]), np.zeros((2, 3)), np.array([1.0, np.nan, 1.0]), np.array([-1.0, 0, 0])],
)
def test_from_stats_rejects_malformed_vectors(stats):
    with pytest.raises(ValueError):
        Scaler.from_stats(stats)


def test_rejects_mismatched_inputs():
    scaler = Scaler.from_stats(local_stats(np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"\(rows, 3\)"):
        scaler.transform(np.ones((2, 4)))
    with pytest.raises(ValueError, match="mean and std"):
        Scaler.from_dict({"mean": [0.0, 1.0], "std": [1.0]})
    with pytest.raises(ValueError, match="positive"):
        Scaler.from_dict({"mean": [0.0], "std": [0.0]})
    with pytest.raises(ValueError, match="needs 'mean'"):
        Scaler.from_dict({"mu": [0.0]})
