"""Descriptive statistics over every member's records, from exact sums (see `Total`):
counts, missing counts, means and standard deviations per column, histograms on agreed bins
with approximate quantiles, level counts, and contingency tables with a chi-square test.

Four sums: (counts, missing, totals, level and table cells), then the squared deviations from
the pooled means (two passes, as a careful one-machine computation would, so the standard
deviation is exact, not a difference of large sums), then the histograms, on bins every
hospital derives alike from the schema's range or the pooled mean and deviation, then finer
histograms inside the bins that hold the quantiles.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from node.analytics import Total
from node.analytics.disclosure import released, suppressed_cells
from node.analytics.query import StatsQuery
from node.dataset import OUTCOME, DataSchema
from node.errors import AnalyticsError

# Quantiles are read off a histogram of this many bins, then one of as many inside the bin that
# holds each quantile: resolved to range / QUANTILE_BINS^2 for two small sums, not one large.
QUANTILE_BINS = 100
MAX_LEVELS = 20  # a numeric column cross-tabulated by its integer values: at most this many


@dataclass(frozen=True)
class Column:
    name: str
    levels: list[float] | None  # None: numeric (moments, histogram); else counted per level
    low: float | None  # the schema's range, when it gives both ends
    high: float | None


def plan_columns(schema: DataSchema, query: StatsQuery) -> list[Column]:
    """The columns asked for (default: the numeric features and the target), as the schema
    describes them; an unknown name is an error naming the known ones."""
    known = {f.name: f for f in schema.features}
    names = query.columns or [schema.target.column] + [
        f.name for f in schema.features if f.kind == "numeric"
    ]
    columns = []
    for name in names:
        if name in (schema.target.column, OUTCOME):
            levels = [0.0, 1.0] if name == OUTCOME else None
            columns.append(Column(name, levels, None, None))
        elif name in known:
            f = known[name]
            levels = f.levels if f.kind == "categorical" else None
            columns.append(Column(name, levels, f.min, f.max))
        else:
            raise AnalyticsError(_unknown(name, schema))
    return columns


def table_levels(schema: DataSchema, name: str) -> list[float]:
    """The levels a cross-tabulated column is counted on, agreed from the schema alone."""
    if name == OUTCOME:
        return [0.0, 1.0]
    feature = next((f for f in schema.features if f.name == name), None)
    if feature is None and name != schema.target.column:
        raise AnalyticsError(_unknown(name, schema))
    if feature is not None and feature.kind == "categorical":
        return list(feature.levels or [])
    low, high = (feature.min, feature.max) if feature is not None else (None, None)
    if low is None or high is None or not (low.is_integer() and high.is_integer()):
        raise AnalyticsError(
            f"stats.crosstabs: {name!r} is numeric without an integer range in the schema; a "
            f"table needs a categorical feature, {OUTCOME!r}, or a numeric one with integer "
            "min and max"
        )
    if high - low + 1 > MAX_LEVELS:
        raise AnalyticsError(
            f"stats.crosstabs: {name!r} takes {int(high - low + 1)} values in the schema's "
            f"range [{low:g}, {high:g}]; at most {MAX_LEVELS} can be cross-tabulated"
        )
    return [float(v) for v in range(int(low), int(high) + 1)]


def _unknown(name: str, schema: DataSchema) -> str:
    names = [schema.target.column, OUTCOME, *(f.name for f in schema.features)]
    return f"unknown column {name!r}; the schema's columns are {', '.join(names)}"


async def describe(
    frame: pd.DataFrame, schema: DataSchema, query: StatsQuery, min_cell: int, total: Total
) -> dict[str, Any]:
    """The statistics of `query` over every site's `frame` (this site's rows asked for),
    with the disclosure rule applied: what may be released, as JSON."""
    columns = plan_columns(schema, query)
    tables = [(a, b, table_levels(schema, a), table_levels(schema, b)) for a, b in query.crosstabs]
    numeric = [c for c in columns if c.levels is None]
    values = {c.name: frame[c.name].to_numpy(np.float64) for c in columns}

    # 1: counts, missing, totals; level counts; table cells.
    first: list[np.ndarray] = []
    for c in columns:
        x = values[c.name]
        present = ~np.isnan(x)
        if c.levels is None:
            first.append(np.array([present.sum(), (~present).sum(), x[present].sum()]))
        else:
            first.append(np.append(_level_counts(x, c.levels), (~present).sum()))
    for a, b, la, lb in tables:
        first.append(_cross(frame[a].to_numpy(np.float64), frame[b].to_numpy(np.float64), la, lb))
    sums = _split(await total(np.concatenate(first)), [len(v) for v in first])
    count = {c.name: sums[i][0] for i, c in enumerate(columns) if c.levels is None}
    means = {}
    for i, c in enumerate(columns):
        if c.levels is None:
            n, _, s = sums[i]
            means[c.name] = s / n if n > 0 else np.nan

    # 2: squared deviations from the pooled means.
    spread = np.array([_centred(values[c.name], means[c.name]) for c in numeric])
    squares = await total(spread) if numeric else spread
    sd = {
        c.name: float(np.sqrt(squares[i] / (count[c.name] - 1))) if count[c.name] > 1 else np.nan
        for i, c in enumerate(numeric)
    }

    # 3: histograms (coarse, released) and finer ones (for quantiles, not released); 4: inside
    # the finer bin that holds each quantile, finer again.
    edges = {c.name: _edges(c, means[c.name], sd[c.name], query.bins) for c in numeric}
    third = [
        part
        for c in numeric
        for part in (
            _histogram(values[c.name], edges[c.name]),
            _histogram(values[c.name], _finer(edges[c.name])),
        )
    ]
    hist = _split(await total(np.concatenate(third)), [len(p) for p in third]) if numeric else []
    # As pandas (and R's default): between the order statistics at ranks floor and ceil of
    # q (n - 1), each located in a finer bin, then inside it.
    ranks = {c.name: _ranks(count[c.name], query.quantiles) for c in numeric}
    located = {
        c.name: [_locate(hist[2 * j + 1], _finer(edges[c.name]), k) for k in ranks[c.name]]
        for j, c in enumerate(numeric)
    }
    # One finer histogram per distinct bin (the ranks of a quantile, and close quantiles, share
    # one); every site picks the same ones, from the same sums.
    bins = sorted({(c.name, where) for c in numeric for where, _ in located[c.name]})
    fourth = [_within(values[name], where) for name, where in bins]
    summed = _split(await total(np.concatenate(fourth)), [len(p) for p in fourth]) if bins else []
    inner = dict(zip(bins, summed, strict=True))

    out: dict[str, Any] = {"columns": {}, "crosstabs": []}
    for i, c in enumerate(columns):
        if c.levels is None:
            j = numeric.index(c)
            stats = [
                _order_statistic(rank, below, where, inner[(c.name, where)])
                for rank, (where, below) in zip(ranks[c.name], located[c.name], strict=True)
            ]
            quantiles = {}
            for m, q in enumerate(query.quantiles):
                low, high = stats[2 * m], stats[2 * m + 1]
                quantiles[f"{q:g}"] = low + (q * (count[c.name] - 1) % 1) * (high - low)
            resolution = (edges[c.name][-1] - edges[c.name][0]) / QUANTILE_BINS**2
            out["columns"][c.name] = _numeric_entry(
                sums[i], sd[c.name], edges[c.name], hist[2 * j], quantiles, resolution, min_cell,
                c.low is None or c.high is None,
            )  # fmt: skip
        else:
            counts, missing = sums[i][:-1], sums[i][-1]
            hidden = suppressed_cells(counts, min_cell)
            out["columns"][c.name] = {
                "levels": [_label(v) for v in c.levels],
                "counts": released(counts, hidden),
                "missing": int(missing),
            }
    for (a, b, la, lb), cells in zip(tables, sums[len(columns) :], strict=True):
        out["crosstabs"].append(_crosstab_entry(a, b, la, lb, cells, min_cell))
    return out


def _level_counts(x: np.ndarray, levels: list[float]) -> np.ndarray:
    return np.array([(x == v).sum() for v in levels], dtype=np.float64)


def _cross(a: np.ndarray, b: np.ndarray, la: list[float], lb: list[float]) -> np.ndarray:
    return np.array([[((a == u) & (b == v)).sum() for v in lb] for u in la], np.float64).ravel()


def _centred(x: np.ndarray, mean: float) -> float:
    x = x[~np.isnan(x)]
    return float(((x - mean) ** 2).sum()) if np.isfinite(mean) else 0.0


def _edges(c: Column, mean: float, sd: float, bins: int) -> np.ndarray:
    """The schema's [min, max] when it gives both; else mean +- 3 sd (open at both ends)."""
    if c.low is not None and c.high is not None and c.high > c.low:
        low, high = c.low, c.high
    elif np.isfinite(sd) and sd > 0:
        low, high = mean - 3 * sd, mean + 3 * sd
    else:
        low, high = (mean - 0.5, mean + 0.5) if np.isfinite(mean) else (0.0, 1.0)
    return np.linspace(low, high, bins + 1)


def _finer(edges: np.ndarray) -> np.ndarray:
    return np.linspace(edges[0], edges[-1], QUANTILE_BINS + 1)


def _histogram(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin; values beyond the ends go in the end bins (open-ended ranges)."""
    x = x[~np.isnan(x)]
    index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(index, minlength=len(edges) - 1).astype(np.float64)


def _ranks(n: float, qs: list[float]) -> list[float]:
    """For each quantile, the 0-based ranks of the two order statistics it lies between."""
    return [r for q in qs for r in (np.floor(q * (n - 1)), np.ceil(q * (n - 1)))]


def _locate(
    counts: np.ndarray, edges: np.ndarray, rank: float
) -> tuple[tuple[float, float, bool, bool], float]:
    """The bin of `counts` (on `edges`) that holds the order statistic of `rank`, as (its low
    and high edge, whether it is the first, the last), and how many values lie below it."""
    cumulative = np.cumsum(counts)
    i = int(np.clip(np.searchsorted(cumulative, rank, side="right"), 0, len(counts) - 1))
    below = float(cumulative[i - 1]) if i else 0.0
    return (float(edges[i]), float(edges[i + 1]), i == 0, i == len(counts) - 1), below


def _within(x: np.ndarray, bin_edges: tuple[float, float, bool, bool]) -> np.ndarray:
    """The histogram of the values in one bin, on QUANTILE_BINS bins of its own (an end bin
    keeps the values beyond its end, as `_histogram` put them there)."""
    low, high, first, last = bin_edges
    x = x[~np.isnan(x)]
    inside = (first | (x >= low)) & (last | (x < high))
    return _histogram(x[inside], np.linspace(low, high, QUANTILE_BINS + 1))


def _order_statistic(
    rank: float, below: float, bin_edges: tuple[float, float, bool, bool], counts: np.ndarray
) -> float:
    """The value of rank `rank` (0-based), inside the finest bin that holds it (its values
    taken as evenly spread there): off by at most that bin's width."""
    low, high = bin_edges[:2]
    edges = np.linspace(low, high, QUANTILE_BINS + 1)
    cumulative = below + np.cumsum(counts)
    i = int(np.clip(np.searchsorted(cumulative, rank, side="right"), 0, len(counts) - 1))
    before = float(cumulative[i - 1]) if i else below
    inside = (rank - before + 0.5) / counts[i] if counts[i] > 0 else 0.5
    return float(edges[i] + min(max(inside, 0.0), 1.0) * (edges[i + 1] - edges[i]))


def _numeric_entry(
    sums: np.ndarray,
    sd: float,
    edges: np.ndarray,
    coarse: np.ndarray,
    quantiles: dict[str, float],
    resolution: float,
    min_cell: int,
    open_ends: bool,
) -> dict[str, Any]:
    n, missing, total = sums
    entry: dict[str, Any] = {"count": int(n), "missing": int(missing)}
    if 0 < n < min_cell:
        entry["withheld"] = f"{int(n)} value(s), fewer than the minimum cell count {min_cell}"
        return entry
    entry |= {
        "mean": float(total / n) if n else None,
        "sd": sd if np.isfinite(sd) else None,
        "quantiles": quantiles if n else {},
        "quantile_resolution": float(resolution),
        "histogram": {
            "edges": [float(e) for e in edges],
            "counts": released(coarse, suppressed_cells(coarse, min_cell)),
            "open_ends": open_ends,
        },
    }
    return entry


def _crosstab_entry(
    a: str, b: str, la: list[float], lb: list[float], cells: np.ndarray, min_cell: int
) -> dict[str, Any]:
    from scipy.stats import chi2_contingency

    table = cells.reshape(len(la), len(lb))
    hidden = suppressed_cells(table, min_cell)
    entry: dict[str, Any] = {
        "rows": a,
        "columns": b,
        "row_levels": [_label(v) for v in la],
        "column_levels": [_label(v) for v in lb],
        "counts": released(table, hidden),
    }
    kept = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    if hidden.any():
        entry["chi2_withheld"] = "a cell is suppressed: the test would give it back"
    elif kept.shape[0] < 2 or kept.shape[1] < 2:
        entry["chi2_withheld"] = "fewer than two levels with rows on a side"
    else:
        # scipy's test, as R's chisq.test: Yates' continuity correction on a 2 x 2 table.
        result = chi2_contingency(kept)
        entry |= {"chi2": float(result.statistic), "dof": int(result.dof)}
        entry["p"] = float(result.pvalue)
    return entry


def _label(value: float) -> str:
    return f"{value:g}"


def _split(vector: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    return np.split(np.asarray(vector, np.float64), np.cumsum(lengths)[:-1])
