"""Federated statistics equal pandas (and scipy) on the pooled records, with the disclosure
rule applied: the four heart-disease hospitals, and synthetic sites with chosen small cells."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from node.analytics.answer import answer
from node.analytics.disclosure import ReleaseLog, suppressed_cells
from node.analytics.query import Query
from node.analytics.stats import describe
from node.dataset import load_frame, load_schema
from node.errors import AnalyticsError
from tests.unit.node.analytics.sites import run_sites

ROOT = Path(__file__).resolve().parents[4]
SCHEMA = load_schema(ROOT / "data/heart-disease/schema.toml")
SITES = ["cleveland", "hungarian", "switzerland", "va"]
DATA = ROOT / "data/heart-disease"


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    return [load_frame(DATA / f"processed.{s}.data", SCHEMA) for s in SITES]


def _describe(frames, query, min_cell=5):
    stats = Query.model_validate(query).stats
    return run_sites(frames, lambda f, total: describe(f, SCHEMA, stats, min_cell, total))


def test_moments_equal_pandas_on_the_pooled_records(frames):
    results = _describe(frames, {"stats": {"columns": ["age", "chol", "trestbps", "num"]}})
    assert all(r == results[0] for r in results), "every site must release the same answer"
    pooled = pd.concat(frames, ignore_index=True)
    for name in ["age", "chol", "trestbps", "num"]:
        got, col = results[0]["columns"][name], pooled[name]
        assert got["count"] == col.count() and got["missing"] == col.isna().sum()
        assert got["mean"] == pytest.approx(col.mean(), abs=1e-9)
        assert got["sd"] == pytest.approx(col.std(ddof=1), abs=1e-9)
    # chol is missing at Switzerland (recorded as 0): counted as missing, not as zero
    assert results[0]["columns"]["chol"]["missing"] > 100


def test_histogram_and_level_counts_equal_the_pooled_ones(frames):
    results = _describe(frames, {"stats": {"columns": ["age", "cp"], "bins": 8}})
    pooled = pd.concat(frames, ignore_index=True)
    hist = results[0]["columns"]["age"]["histogram"]
    edges = np.array(hist["edges"])
    assert edges[0] == 18 and edges[-1] == 100  # the schema's range
    expected, _ = np.histogram(pooled["age"], bins=edges)
    hidden = suppressed_cells(expected, 5)
    assert [c for c, h in zip(hist["counts"], hidden, strict=True) if not h] == list(
        expected[~hidden]
    )
    assert all(c is None for c, h in zip(hist["counts"], hidden, strict=True) if h)
    levels = results[0]["columns"]["cp"]
    counts = pooled["cp"].value_counts()
    assert levels["counts"] == [int(counts[v]) for v in [1.0, 2.0, 3.0, 4.0]]


def test_crosstab_and_chi_square_equal_scipy_on_the_pooled_table(frames):
    results = _describe(frames, {"stats": {"columns": ["age"], "crosstabs": [["cp", "outcome"]]}})
    pooled = pd.concat(frames, ignore_index=True)
    table = pd.crosstab(pooled["cp"], pooled["outcome"]).to_numpy()
    got = results[0]["crosstabs"][0]
    assert got["counts"] == table.tolist()
    reference = chi2_contingency(table)
    assert got["chi2"] == pytest.approx(reference.statistic, rel=1e-12)
    assert got["p"] == pytest.approx(reference.pvalue, rel=1e-9)


def _synthetic_sites(rng, ages_at_fifty=(2, 0, 0)) -> list[pd.DataFrame]:
    frames = []
    for k, at_fifty in enumerate(ages_at_fifty):
        age = rng.integers(55, 80, 60 + 10 * k).astype(float)
        age[:at_fifty] = 50.0
        frame = pd.DataFrame({"num": rng.integers(0, 3, len(age)).astype(float), "age": age})
        frame["outcome"] = (frame["num"] > 0).astype(int)
        frame["cp"] = pd.Categorical(rng.choice([1.0, 2.0, 3.0], len(age)), [1.0, 2.0, 3.0, 4.0])
        frames.append(frame)
    return frames


def test_quantiles_are_within_the_resolution_of_pandas():
    rng = np.random.default_rng(1)
    frames = [pd.DataFrame({"num": rng.normal(40, 9, n)}) for n in (300, 500, 800)]
    results = _describe(frames, {"stats": {"columns": ["num"], "quantiles": [0.1, 0.5, 0.9]}})
    got = results[0]["columns"]["num"]
    pooled = pd.concat(frames)["num"]
    for q in (0.1, 0.5, 0.9):
        assert abs(got["quantiles"][f"{q:g}"] - pooled.quantile(q)) <= got["quantile_resolution"]


def test_quantiles_of_discrete_columns_are_within_the_resolution_of_pandas(frames):
    """Ages in whole years and num in 0..4: the order statistics sit on few values."""
    query = {"stats": {"columns": ["age", "num"], "quantiles": [0.1, 0.5, 0.9]}}
    results = _describe(frames, query)
    pooled = pd.concat(frames, ignore_index=True)
    for name in ["age", "num"]:
        got = results[0]["columns"][name]
        for q in (0.1, 0.5, 0.9):
            reference = pooled[name].quantile(q)
            assert abs(got["quantiles"][f"{q:g}"] - reference) <= got["quantile_resolution"]


def test_a_small_cell_is_suppressed_with_a_second_one_beside_it():
    counts = np.array([40, 3, 20, 9])
    hidden = suppressed_cells(counts, 5)
    assert list(hidden) == [False, True, False, True]  # 3 alone, 9 (the smallest other) too
    table = np.array([[50, 2], [30, 40]])
    assert suppressed_cells(table, 5).all()  # rows and columns each need two


def test_differencing_by_two_overlapping_filters_is_refused(tmp_path):
    """The first answer (age >= 50) is released; asking again with age >= 51 would give the
    two patients aged 50 at site 0 by difference: site 0 refuses, so nobody answers."""
    rng = np.random.default_rng(2)
    frames = _synthetic_sites(rng)
    files = []
    for i in range(len(frames)):
        files.append(tmp_path / f"site{i}.csv")
        files[-1].write_text(f"site {i}\n")
    logs = [ReleaseLog(tmp_path / f"released{i}.json", f) for i, f in enumerate(files)]
    schema = SCHEMA.model_copy(update={"features": [SCHEMA.features[0], SCHEMA.features[2]]})

    def ask(where):
        query = Query.model_validate({"where": [where], "stats": {"columns": ["age", "cp"]}})
        indexed = list(zip(frames, logs, strict=True))
        return run_sites(indexed, lambda fl, total: answer(fl[0], schema, query, fl[1], total))

    first = ask({"column": "age", "min": 50})
    assert all(isinstance(r, dict) for r in first), first
    assert first[0]["rows"] == sum(len(f) for f in frames)
    second = ask({"column": "age", "min": 51})
    assert all(isinstance(r, AnalyticsError) for r in second), second
    assert "refused by 1 hospital(s)" in str(second[0])
    # A fresh log (the same hospital's file on disk) remembers the first answer.
    reopened = ReleaseLog(tmp_path / "released0.json", files[0])
    assert reopened.refusal(frames[0]["age"].to_numpy() >= 51, 5) is not None
    # Rows differing by five or more are answered.
    assert ask({"column": "age", "min": 60})[0]["rows"] > 0


def test_too_few_sites_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    frames = _synthetic_sites(rng, (0, 0, 0))
    files = [tmp_path / f"s{i}" for i in range(3)]
    for f in files:
        f.write_text(str(f))
    logs = [ReleaseLog(tmp_path / f"r{i}.json", f) for i, f in enumerate(files)]
    schema = SCHEMA.model_copy(update={"features": [SCHEMA.features[0], SCHEMA.features[2]]})
    # Only site 0 has rows with age <= 56 ... filter so that just one site contributes.
    frames[1]["age"] = 70.0
    frames[2]["age"] = 70.0
    query = Query.model_validate(
        {"where": [{"column": "age", "max": 60}], "stats": {"columns": ["age"]},
         "disclosure": {"min_sites": 2}}
    )  # fmt: skip
    out = run_sites(list(zip(frames, logs, strict=True)),
                    lambda fl, total: answer(fl[0], schema, query, fl[1], total))  # fmt: skip
    assert all(isinstance(r, AnalyticsError) and "1 hospital(s)" in str(r) for r in out), out


def test_unknown_columns_are_named(frames):
    out = _describe(frames, {"stats": {"columns": ["age", "bmi"]}})
    assert all(isinstance(r, AnalyticsError) and "'bmi'" in str(r) for r in out)
    out = _describe(frames, {"stats": {"crosstabs": [["num", "outcome"]]}})
    assert all(isinstance(r, AnalyticsError) and "integer range" in str(r) for r in out)
    out = _describe(frames, {"stats": {"crosstabs": [["chol", "outcome"]]}})
    assert all(isinstance(r, AnalyticsError) and "651 values" in str(r) for r in out)
