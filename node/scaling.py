"""Swarm-wide feature scaling from the pooled column moments.

Every hospital must standardize its features identically, or the parameters they average mean
different things. Before training the swarm sums, by two exact secure sums over the members
(node/agreement.py), each column's non-missing count and total (`column_sums`), then the squared
deviations from the pooled mean (`centred_squares`); every node builds the same `Scaler` with
`Scaler.from_moments`, equal to the pooled records' mean and standard deviation to float64
rounding. `local_stats` / `Scaler.from_stats` (count, sum and sum of squares at once) serve the
baselines, which pool rows in one process.

Precision: the variance comes from ``E[x^2] - E[x]^2``, whose absolute error is about
``1e-16 * E[x^2]``. That is negligible for clinical features, but a column whose spread is
tiny next to its magnitude loses digits; below 1e-6 of the column's root mean square it is
treated as constant (std 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

STD_FLOOR = 1e-8
# A std below this fraction of the column's root mean square is rounding noise of
# E[x^2] - E[x]^2 (a constant column), not spread.
RELATIVE_STD_FLOOR = 1e-6


def local_stats(x: np.ndarray) -> np.ndarray:
    """``[count_j..., sum_j..., sumsq_j...]`` over the non-NaN values of each column of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array (rows x columns), got shape {x.shape}")
    present = ~np.isnan(x)
    filled = np.where(present, x, 0.0)
    return np.concatenate(
        [present.sum(axis=0).astype(np.float64), filled.sum(axis=0), (filled**2).sum(axis=0)]
    )


def column_sums(x: np.ndarray) -> np.ndarray:
    """``[count_j..., sum_j...]`` over the non-NaN values of each column of ``x``."""
    return local_stats(x)[: 2 * np.asarray(x).shape[1]]


def centred_squares(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per column, the sum of squared deviations of the non-NaN values from ``mean``."""
    x = np.asarray(x, dtype=np.float64)
    present = ~np.isnan(x)
    return np.where(present, (np.where(present, x, 0.0) - mean) ** 2, 0.0).sum(axis=0)


@dataclass(frozen=True)
class Scaler:
    """Standardize with the swarm-wide mean and (population) std; impute NaN with the mean."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError(f"mean and std must be 1-D of equal length: {mean.shape} {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("mean must be finite and std finite and positive")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_stats(cls, stats: np.ndarray) -> Scaler:
        """Build from one site's `local_stats`, or the sum or plain average of several sites'.

        A column with count 0 gets mean 0 and std 1. A std below 1e-8, or below 1e-6 of the
        column's root mean square (a constant column, up to rounding), becomes 1.
        """
        stats = np.asarray(stats, dtype=np.float64)
        if stats.ndim != 1 or stats.size % 3 != 0 or stats.size == 0:
            raise ValueError(f"stats must be a vector of length 3*d, got shape {stats.shape}")
        if not np.isfinite(stats).all():
            raise ValueError("stats contain a non-finite value")
        count, total, sumsq = np.split(stats, 3)
        if (count < 0).any() or (sumsq < 0).any():
            raise ValueError("stats have a negative count or sum of squares")
        seen = count > 0
        safe = np.where(seen, count, 1.0)
        mean = np.where(seen, total / safe, 0.0)
        var = np.maximum(np.where(seen, sumsq / safe - mean**2, 1.0), 0.0)
        std = np.sqrt(var)
        rms = np.sqrt(np.where(seen, sumsq / safe, 0.0))
        std = np.where((std < STD_FLOOR) | (std < RELATIVE_STD_FLOOR * rms), 1.0, std)
        return cls(mean=mean, std=std)

    @classmethod
    def from_moments(cls, count: np.ndarray, total: np.ndarray, centred: np.ndarray) -> Scaler:
        """From pooled counts, totals and squared deviations from the pooled mean (no
        cancellation: the variance is exact). A column with count 0 gets mean 0 and std 1, a
        constant one std 1."""
        count, total, centred = (np.asarray(a, dtype=np.float64) for a in (count, total, centred))
        seen = count > 0
        safe = np.where(seen, count, 1.0)
        mean = np.where(seen, total / safe, 0.0)
        std = np.sqrt(np.where(seen, np.maximum(centred, 0.0) / safe, 1.0))
        return cls(mean=mean, std=np.where(std < STD_FLOOR, 1.0, std))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """float32 standardized copy of ``x``; NaN becomes 0 (the swarm-wide mean)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected shape (rows, {self.n_features}), got {x.shape}")
        z = (x - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        try:
            return cls(mean=np.asarray(d["mean"], dtype=np.float64), std=np.asarray(d["std"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a scaler dict (needs 'mean' and 'std' lists): {e}") from None
