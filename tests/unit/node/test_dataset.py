"""Data schema, intake, cleaning and validation split."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from node.dataset import (
    CleaningReport,
    CleanTable,
    DataSchema,
    FeatureSpec,
    RowFilter,
    TargetSpec,
    load_schema,
    load_table,
    load_test_set,
    split_validation,
)
from node.errors import DataError, NodeError, SchemaError

DATA = Path(__file__).resolve().parents[3] / "data" / "heart-disease"
SITES = ["cleveland", "hungarian", "switzerland", "va"]


@pytest.fixture(scope="module")
def heart_schema() -> DataSchema:
    return load_schema(DATA / "schema.toml")


# --------------------------------------------------------------------------- real data


def _expected_clean(path: Path, schema_toml: dict) -> tuple[pd.DataFrame, dict[str, int]]:
    """The cleaning rules re-done with pandas, straight from the TOML (not from node.dataset)."""
    raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    raw.columns = schema_toml["columns"]
    raw = raw.apply(lambda col: col.str.strip())
    dropped: dict[str, int] = {}
    dup = raw.duplicated()
    if dup.any():
        dropped["duplicate"] = int(dup.sum())
    df = raw[~dup]
    tokens = set(schema_toml["missing_tokens"])
    num = df.apply(lambda col: pd.to_numeric(col.where(~col.isin(tokens)), errors="coerce"))
    out_of_range = pd.Series(False, index=df.index)
    unknown = pd.Series(False, index=df.index)
    for feat in schema_toml["features"]:
        v = num[feat["name"]].where(~num[feat["name"]].isin(feat.get("missing_values", [])))
        if feat.get("kind") == "categorical":
            unknown |= v.notna() & ~v.isin(feat["levels"])
        else:
            out_of_range |= (v < feat.get("min", -np.inf)) | (v > feat.get("max", np.inf))
    if out_of_range.sum():
        dropped["out_of_range"] = int(out_of_range.sum())
    unknown &= ~out_of_range
    if unknown.sum():
        dropped["unknown_level"] = int(unknown.sum())
    return num[~out_of_range & ~unknown], dropped


@pytest.mark.parametrize("site", SITES)
def test_heart_disease_intake_matches_independent_cleaning(site, heart_schema):
    path = DATA / f"processed.{site}.data"
    schema_toml = tomllib.loads((DATA / "schema.toml").read_text())
    kept, dropped = _expected_clean(path, schema_toml)
    n_lines = sum(1 for line in path.read_text().splitlines() if line.strip())

    table = load_table(path, heart_schema)

    assert table.report.rows_in == n_lines
    assert table.report.dropped == dropped
    assert table.report.rows_out == len(kept) == n_lines - sum(dropped.values())
    assert table.features.shape == (len(kept), 15)
    assert table.features.dtype == np.float64
    assert table.target.dtype == np.int64
    np.testing.assert_array_equal(table.target, (kept["num"] > 0).astype(np.int64).to_numpy())
    # Numeric columns carry the values, with NaN for missing tokens and sentinels.
    for name in ["age", "trestbps", "chol", "thalach", "oldpeak"]:
        expected = kept[name].where(kept[name] != 0) if name in ("chol", "trestbps") else kept[name]
        np.testing.assert_array_equal(
            table.features[:, table.columns.index(name)], expected.to_numpy()
        )
    # One-hot columns: exactly one 1 per row where the value is present, all NaN where missing.
    cp = table.features[:, [table.columns.index(f"cp={v}") for v in (1.0, 2.0, 3.0, 4.0)]]
    np.testing.assert_array_equal(np.argmax(cp, axis=1) + 1, kept["cp"].to_numpy())
    restecg = table.features[:, [table.columns.index(f"restecg={v}") for v in (0.0, 1.0, 2.0)]]
    missing_ecg = kept["restecg"].isna().to_numpy()
    assert np.isnan(restecg[missing_ecg]).all()
    assert (np.nansum(restecg[~missing_ecg], axis=1) == 1).all()
    assert table.report.imputed.get("restecg", 0) == int(missing_ecg.sum())


def test_switzerland_keeps_every_row_with_cholesterol_imputed(heart_schema):
    table = load_table(DATA / "processed.switzerland.data", heart_schema)
    assert table.report.rows_out == table.report.rows_in == 123
    assert np.isnan(table.features[:, table.columns.index("chol")]).all()
    assert table.report.imputed["chol"] == 123


def test_heart_disease_copy_keeps_attribution():
    readme = (DATA / "README.md").read_text()
    assert "CC BY 4.0" in readme
    assert "Janosi" in readme and "Detrano" in readme


# --------------------------------------------------------------------------- each rule

BAD_ROWS_CSV = """\
a,b,c,d,y
1,1,5,1,1
1,1,5,1,1
2,1,5,1,?
2,1,5,1,abc
x,1,5,1,1
11,1,5,1,1
3,3,5,1,0
4,2,,1,1
5,2,5,-1,1
-1,2,5,1,1
6,?,5,1,0
x,3,5,1,1

7,2,5,1,0
"""


def _tmp_schema(**overrides) -> DataSchema:
    fields: dict[str, Any] = {
        "missing_tokens": ["", "?"],
        "target": TargetSpec(column="y", positive_above=0),
        "features": [
            FeatureSpec(name="a", min=0, max=10, missing_values=[-1]),
            FeatureSpec(name="b", kind="categorical", levels=[1, 2]),
            FeatureSpec(name="c", missing="drop"),
        ],
        "filters": [RowFilter(column="d", min=0)],
    } | overrides
    return DataSchema(**fields)


def test_each_rule_is_counted_with_line_numbers(tmp_path):
    path = tmp_path / "site.csv"
    path.write_text(BAD_ROWS_CSV)
    table = load_table(path, _tmp_schema())
    report = table.report

    assert report.rows_in == 13  # the blank line is not a row
    assert report.dropped == {
        "duplicate": 1,
        "target_missing": 1,
        "target_unparsable": 1,
        "unparsable": 2,  # line 13 also has an unknown level but counts once, under the first
        "out_of_range": 1,
        "unknown_level": 1,
        "missing_c": 1,
        "filter_d": 1,
    }
    assert report.examples == {
        "duplicate": [3],
        "target_missing": [4],
        "target_unparsable": [5],
        "unparsable": [6, 13],
        "out_of_range": [7],
        "unknown_level": [8],
        "missing_c": [9],
        "filter_d": [10],
    }
    assert report.by_column["unparsable"] == {"a": 2}
    assert report.by_column["out_of_range"] == {"a": 1}
    assert report.rows_out == 4
    assert report.imputed == {"a": 1, "b": 1}
    assert table.columns == ["a", "b=1.0", "b=2.0", "c"]
    expected = np.array(
        [
            [1, 1, 0, 5],
            [np.nan, 0, 1, 5],  # sentinel -1 means missing
            [6, np.nan, np.nan, 5],  # missing categorical: NaN in all its one-hot columns
            [7, 0, 1, 5],
        ]
    )
    np.testing.assert_array_equal(table.features, expected)
    np.testing.assert_array_equal(table.target, [1, 1, 0, 0])
    assert "out_of_range 1 (a 1; lines 7)" in report.summary()
    assert report.to_dict()["dropped"] == report.dropped


def test_duplicates_kept_when_disabled(tmp_path):
    path = tmp_path / "site.csv"
    path.write_text("a,y\n1,1\n1,1\n 1 ,1\n")
    kept = load_table(path, _tmp_schema(features=[FeatureSpec(name="a")], filters=[]))
    assert kept.report.dropped == {"duplicate": 2}
    schema = _tmp_schema(features=[FeatureSpec(name="a")], filters=[], drop_duplicates=False)
    assert load_table(path, schema).report.rows_out == 3


def test_parquet_round_trip_matches_csv(tmp_path, heart_schema):
    csv_path = DATA / "processed.hungarian.data"
    df = pd.read_csv(csv_path, header=None, names=heart_schema.columns, na_values="?")
    parquet_path = tmp_path / "hungarian.parquet"
    df.to_parquet(parquet_path)

    from_csv = load_table(csv_path, heart_schema)
    from_parquet = load_table(parquet_path, heart_schema)

    assert from_parquet.report.rows_in == from_csv.report.rows_in
    assert from_parquet.report.dropped == from_csv.report.dropped
    assert from_parquet.report.imputed == from_csv.report.imputed
    assert from_parquet.columns == from_csv.columns
    np.testing.assert_array_equal(from_parquet.features, from_csv.features)
    np.testing.assert_array_equal(from_parquet.target, from_csv.target)


def _numeric_frame() -> pd.DataFrame:
    """Typed columns (floats, ints, a boolean target) with nulls, infinities, a sentinel, an
    out-of-range value, an unknown level, a filter failure and a duplicate row."""
    return pd.DataFrame(
        {
            "a": [1.5, None, -1.0, 11.0, 2.0, 3.0, 3.0, float("inf"), 4.0, 0.25],
            "b": pd.array([1, 2, 1, 2, 3, 1, 1, 2, 1, None], dtype="Int64"),
            "c": [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 6.0, None, 7.0],
            "d": pd.array([1, 1, 1, 1, 1, 1, 1, 1, 1, -2], dtype="Int64"),
            "y": [True, False, True, False, True, False, False, True, False, True],
        }
    )


@pytest.mark.parametrize("tokens", [["", "?"], ["", "?", "-999"]])
def test_typed_parquet_cleans_like_its_csv(tmp_path, tokens):
    """Numeric Parquet columns are read as arrays (fast), yet cleaned exactly as the same
    records in CSV; with a numeric missing token they are read as text, as before."""
    frame = _numeric_frame()
    frame.to_parquet(tmp_path / "site.parquet")
    text = frame.astype(object).where(frame.notna(), "")
    text["y"] = frame["y"].astype(int)
    text.replace({float("inf"): "inf"}).to_csv(tmp_path / "site.csv", index=False)
    schema = _tmp_schema(missing_tokens=tokens)

    from_csv = load_table(tmp_path / "site.csv", schema)
    from_parquet = load_table(tmp_path / "site.parquet", schema)

    assert from_parquet.report.dropped == from_csv.report.dropped
    assert set(from_csv.report.dropped) >= {"duplicate", "unparsable", "out_of_range"}
    assert from_parquet.report.imputed == from_csv.report.imputed == {"a": 2}  # null, -1
    np.testing.assert_array_equal(from_parquet.features, from_csv.features)
    np.testing.assert_array_equal(from_parquet.target, from_csv.target)


# --------------------------------------------------------------------------- structural errors


def test_missing_file_names_the_file(tmp_path, heart_schema):
    with pytest.raises(DataError, match=r"nowhere\.csv: data file not found"):
        load_table(tmp_path / "nowhere.csv", heart_schema)


def test_absent_column_names_column_and_schema_key(tmp_path):
    path = tmp_path / "site.csv"
    path.write_text("a,b,y\n1,1,1\n")
    with pytest.raises(DataError) as err:
        load_table(path, _tmp_schema())
    message = str(err.value)
    assert str(path) in message
    assert "'c'" in message and "features[2].name" in message


def test_wrong_field_count_names_the_line(tmp_path, heart_schema):
    path = tmp_path / "site.data"
    lines = (DATA / "processed.cleveland.data").read_text().splitlines()[:3]
    lines[2] = lines[2].rsplit(",", 1)[0]  # 13 fields instead of 14
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"site\.data, line 3: 13 fields, expected 14"):
        load_table(path, heart_schema)


def test_all_rows_dropped_says_why(tmp_path):
    path = tmp_path / "site.csv"
    path.write_text("a,b,c,d,y\n" + "".join(f"{20 + i},1,5,1,1\n" for i in range(3)))
    with pytest.raises(DataError) as err:
        load_table(path, _tmp_schema())
    message = str(err.value)
    assert str(path) in message
    assert "all 3 rows dropped: out_of_range 3 (a 3; lines 2, 3, 4)" in message


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("empty.csv", "", "empty file"),
        ("header-only.csv", "a,b,c,d,y\n", "no data rows"),
        ("site.xlsx", "a,y\n1,1\n", "unsupported file type '.xlsx'"),
        ("latin1.csv", b"a,b,c,d,y\n1,1,5,\xe9,1\n", "not UTF-8"),
        ("dupe-header.csv", "a,a,b,c,d,y\n1,1,1,5,1,1\n", r"line 1: duplicate column name\(s\)"),
    ],
)
def test_unreadable_files_raise_data_error(tmp_path, name, content, pattern):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(DataError, match=pattern) as err:
        load_table(path, _tmp_schema())
    assert name in str(err.value)
    assert isinstance(err.value, NodeError)


# --------------------------------------------------------------------------- schema file


def _write_schema(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schema.toml"
    path.write_text(text)
    return path


MINIMAL = """
[target]
column = "y"
positive_above = 0
[[features]]
name = "a"
[[features]]
name = "b"
"""


def test_minimal_schema_defaults(tmp_path):
    schema = load_schema(_write_schema(tmp_path, MINIMAL))
    assert schema.header is True
    assert schema.missing_tokens == ["", "?", "NA"]
    assert schema.features[1].kind == "numeric"
    assert schema.features[1].missing == "impute"


@pytest.mark.parametrize(
    ("extra", "key", "what"),
    [
        ('[[features]]\nname = "c"\nunit = "mg"\n', "features[2].unit", "unknown key"),
        ('[[features]]\nname = "c"\nkind = "ordinal"\n', "features[2].kind", "'numeric'"),
        ('[[features]]\nname = "c"\nkind = "categorical"\n', "features[2]", "levels: required"),
        ('[[features]]\nname = "c"\nmin = "low"\n', "features[2].min", "valid number"),
        ('[[features]]\nname = "c"\nmin = 5\nmax = 1\n', "features[2]", "greater than max"),
        ("header = false\n", "columns", "required when header = false"),
        ("colour = 1\n", "colour", "unknown key"),
        ('[[filters]]\ncolumn = "a"\n', "filters[0]", "needs min, max or both"),
    ],
)
def test_schema_errors_name_file_and_key(tmp_path, extra, key, what):
    # Top-level keys must come before the tables in TOML.
    text = extra + MINIMAL if not extra.startswith("[") else MINIMAL + extra
    path = _write_schema(tmp_path, text)
    with pytest.raises(SchemaError) as err:
        load_schema(path)
    message = str(err.value)
    assert str(path) in message
    assert f"{key}:" in message
    assert what in message


def test_schema_reference_to_undeclared_column_names_the_key(tmp_path):
    text = 'header = false\ncolumns = ["a", "y"]\n' + MINIMAL
    with pytest.raises(SchemaError, match=r"features\[1\]\.name: 'b' is not one of columns"):
        load_schema(_write_schema(tmp_path, text))


def test_schema_missing_target_and_bad_toml(tmp_path):
    with pytest.raises(SchemaError, match=r"target: required key is missing"):
        load_schema(_write_schema(tmp_path, '[[features]]\nname = "a"\n'))
    with pytest.raises(SchemaError, match=r"schema\.toml: not valid TOML: .*line 1"):
        load_schema(_write_schema(tmp_path, "header = \n"))
    with pytest.raises(SchemaError, match="not found"):
        load_schema(tmp_path / "absent.toml")


# --------------------------------------------------------------------------- split


def _table(y: list[int]) -> CleanTable:
    n = len(y)
    report = CleaningReport(file="t.csv", rows_in=n, dropped={}, examples={}, rows_out=n)
    x = np.arange(n, dtype=np.float64)[:, None]  # the row index, to trace rows through a split
    return CleanTable(
        features=x, target=np.asarray(y, dtype=np.int64), columns=["i"], report=report
    )


def test_split_is_seeded_and_partitions_the_rows():
    table = _table([0] * 30 + [1] * 70)
    a = split_validation(table, 0.25, seed=7)
    b = split_validation(table, 0.25, seed=7)
    c = split_validation(table, 0.25, seed=8)
    np.testing.assert_array_equal(a.val_x, b.val_x)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert not np.array_equal(a.val_x, c.val_x)
    rows = np.sort(np.concatenate([a.train_x[:, 0], a.val_x[:, 0]]))
    np.testing.assert_array_equal(rows, np.arange(100))
    np.testing.assert_array_equal(a.val_y, table.target[a.val_x[:, 0].astype(int)])


@pytest.mark.parametrize(
    ("n_neg", "n_pos", "fraction"), [(30, 70, 0.25), (2, 44, 0.25), (5, 9, 0.5)]
)
def test_split_is_stratified(n_neg, n_pos, fraction):
    table = _table([0] * n_neg + [1] * n_pos)
    split = split_validation(table, fraction, seed=0)
    for cls, count in ((0, n_neg), (1, n_pos)):
        expected = min(max(round(fraction * count), 1), count - 1)
        assert int((split.val_y == cls).sum()) == expected
        assert int((split.train_y == cls).sum()) == count - expected


def test_split_falls_back_to_shuffle_with_a_singleton_class():
    table = _table([1] + [0] * 9)
    splits = [split_validation(table, 0.2, seed=s) for s in range(20)]
    assert all(len(s.val_y) == 2 and len(s.train_y) == 8 for s in splits)
    # The lone positive lands in validation for some seeds and in training for others.
    assert {int(s.val_y.sum()) for s in splits} == {0, 1}


def test_split_keeps_at_least_one_validation_row_and_rejects_bad_input():
    assert len(split_validation(_table([0, 1, 0]), 0.01, seed=0).val_y) == 1
    with pytest.raises(ValueError, match="fraction"):
        split_validation(_table([0, 1]), 1.0, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        split_validation(_table([0, 1]), -0.1, seed=0)
    with pytest.raises(DataError, match="need 2"):
        split_validation(_table([1]), 0.5, seed=0)


def test_a_fraction_of_zero_holds_nothing_out():
    table = _table([1, 0, 1, 1])
    split = split_validation(table, 0.0, seed=3)
    np.testing.assert_array_equal(split.train_x, table.features)
    np.testing.assert_array_equal(split.train_y, table.target)
    assert split.val_x.shape == (0, 1) and split.val_y.shape == (0,)
    assert len(split_validation(_table([1]), 0.0, seed=0).train_y) == 1  # nothing to split


# --------------------------------------------------------------------------- common test set


def test_a_common_test_set_is_cleaned_like_a_site(heart_schema):
    path = DATA / "processed.va.data"
    assert load_test_set(path, heart_schema).report == load_table(path, heart_schema).report


def test_a_test_set_with_a_value_that_is_not_a_number_names_the_file_and_column(
    tmp_path, heart_schema
):
    lines = (DATA / "processed.va.data").read_text().splitlines()
    cells = lines[2].split(",")
    cells[4] = "high"  # chol
    lines[2] = ",".join(cells)
    path = tmp_path / "test.data"
    path.write_text("\n".join(lines) + "\n")
    assert load_table(path, heart_schema).report.dropped["unparsable"] == 1  # a site drops it
    with pytest.raises(DataError) as err:
        load_test_set(path, heart_schema)
    message = str(err.value)
    assert message.startswith(f"{path}: not in the data schema's format")
    assert "column 'chol' (1 row), e.g. line 3" in message


def test_a_test_set_without_a_schema_column_names_the_file_and_column(tmp_path):
    schema = _tmp_schema(features=[FeatureSpec(name="age"), FeatureSpec(name="bp")], filters=[])
    path = tmp_path / "test.csv"
    path.write_text("age,pressure,y\n50,120,1\n61,130,0\n")
    with pytest.raises(DataError) as err:
        load_test_set(path, schema)
    assert str(err.value).startswith(f"{path}: column 'bp' (features[1].name in the data schema)")
