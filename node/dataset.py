"""Data intake: the consortium's data schema, loading a hospital's file, cleaning, splitting.

A consortium shares ONE schema file (TOML) that every hospital applies identically. It names the
target and the features, the valid range or levels of each feature and what to do with missing
values. `load_table` applies it to one file and returns a numeric table plus a report of every
row it dropped and why (with line numbers), so the IT team can check the result.

Cleaning rules, in order; a row is counted under the first rule it breaks:

1. ``duplicate``: an exact duplicate (cell by cell, surrounding spaces ignored) of an earlier
   row of the file, when ``drop_duplicates`` is on.
2. ``target_missing`` / ``target_unparsable``: the target cell is a missing token, or not a
   finite number.
3. ``unparsable``: a feature cell that is neither a number nor a missing token (``inf`` counts
   as unparsable, ``nan`` as missing).
4. ``out_of_range``: a numeric feature outside its ``[min, max]``.
5. ``unknown_level``: a categorical feature whose value is not one of its ``levels``.
6. ``missing_<feature>``: a missing value (a missing token or one of the feature's
   ``missing_values`` sentinels) of a feature with ``missing = "drop"``. With ``"impute"`` the
   row is kept and the value is NaN in the table, for the scaler to impute.
7. ``filter_<column>``: the row's value of a ``[[filters]]`` column is outside the filter's
   range, or missing (an inclusion criterion that cannot be checked is not met).

Structural problems (missing file, absent column, wrong number of fields, nothing left after
cleaning) raise `DataError` naming the file, the line or column and the rule.
"""

from __future__ import annotations

import csv
import io
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from node.errors import DataError, SchemaError
from node.row_filter import RowFilter

if TYPE_CHECKING:
    import pandas as pd

CSV_SUFFIXES = (".csv", ".data", ".txt")
PARQUET_SUFFIXES = (".parquet",)
MAX_EXAMPLES = 5
OUTCOME = "outcome"  # `load_frame`'s column of 0/1 labels (the target's positive_above rule)

_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)


# --------------------------------------------------------------------------- schema


class TargetSpec(BaseModel):
    """The label column; ``y = 1`` when its value is greater than ``positive_above``."""

    model_config = _MODEL_CONFIG

    column: str
    positive_above: float


class FeatureSpec(BaseModel):
    """One input column of the model."""

    model_config = _MODEL_CONFIG

    name: str
    kind: Literal["numeric", "categorical"] = "numeric"
    min: float | None = None
    max: float | None = None
    levels: list[float] | None = None
    missing: Literal["impute", "drop"] = "impute"
    missing_values: list[float] = []

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        if self.kind == "categorical":
            if not self.levels:
                raise ValueError("levels: required (a non-empty list) when kind = 'categorical'")
            if len(set(self.levels)) != len(self.levels):
                raise ValueError(f"levels: duplicate level in {self.levels}")
            if self.min is not None or self.max is not None:
                raise ValueError("min/max: not allowed for a categorical feature (use levels)")
        elif self.levels is not None:
            raise ValueError("levels: only allowed when kind = 'categorical'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if not all(math.isfinite(v) for v in [*(self.levels or []), *self.missing_values]):
            raise ValueError("levels and missing_values must be finite numbers")
        return self


class DataSchema(BaseModel):
    """The consortium-wide description of a hospital's data file."""

    model_config = _MODEL_CONFIG

    header: bool = True
    columns: list[str] | None = None
    missing_tokens: list[str] = ["", "?", "NA"]
    target: TargetSpec
    features: list[FeatureSpec]
    filters: list[RowFilter] = []
    drop_duplicates: bool = True

    @model_validator(mode="after")
    def _check(self) -> DataSchema:
        if not self.features:
            raise ValueError("features: at least one feature is required")
        if self.header and self.columns is not None:
            raise ValueError("columns: only allowed with header = false (names come from the file)")
        if not self.header and not self.columns:
            raise ValueError("columns: required when header = false (the file has no names)")
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            raise ValueError(f"columns: duplicate name in {self.columns}")
        seen: set[str] = set()
        for i, feat in enumerate(self.features):
            if feat.name in seen:
                raise ValueError(f"features[{i}].name: duplicate feature {feat.name!r}")
            if feat.name == self.target.column:
                raise ValueError(f"features[{i}].name: {feat.name!r} is the target column")
            seen.add(feat.name)
        if self.columns is not None:
            refs = [("target.column", self.target.column)]
            refs += [(f"features[{i}].name", f.name) for i, f in enumerate(self.features)]
            refs += [(f"filters[{i}].column", f.column) for i, f in enumerate(self.filters)]
            for key, name in refs:
                if name not in self.columns:
                    raise ValueError(f"{key}: {name!r} is not one of columns {self.columns}")
        return self

    def feature_columns(self) -> list[str]:
        """Names of the table's columns after one-hot encoding, e.g. ``cp=1.0``."""
        out: list[str] = []
        for feat in self.features:
            if feat.kind == "categorical":
                out += [f"{feat.name}={level!r}" for level in feat.levels or []]
            else:
                out.append(feat.name)
        return out


def _format_loc(loc: Sequence[int | str]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = _format_loc(e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] != "value_error":
            msg += f" (got {e['input']!r})"
        lines.append(f"{key}: {msg}" if key else msg)
    return f"{path}: invalid data schema:\n  " + "\n  ".join(lines)


def load_schema(path: Path) -> DataSchema:
    """Read and validate a data schema TOML file; `SchemaError` names the file and the key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SchemaError(f"{path}: data schema file not found") from None
    except OSError as e:
        raise SchemaError(f"{path}: cannot read data schema: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SchemaError(f"{path}: not valid TOML: {e}") from None
    try:
        return DataSchema.model_validate(data)
    except ValidationError as e:
        raise SchemaError(_format_validation_error(path, e)) from None


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class CleaningReport:
    """What cleaning did to one file. Rules with no dropped row are absent from `dropped`.

    `examples` holds the first few 1-based line numbers per rule (row numbers for Parquet);
    `by_column` breaks the per-column rules down by column; `imputed` counts, per feature, the
    kept rows whose value is missing and will be imputed.
    """

    file: str
    rows_in: int
    dropped: dict[str, int]
    examples: dict[str, list[int]]
    rows_out: int
    by_column: dict[str, dict[str, int]] = field(default_factory=dict)
    imputed: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(self.dropped),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "by_column": {k: dict(v) for k, v in self.by_column.items()},
            "imputed": dict(self.imputed),
        }

    def summary(self) -> str:
        """One line per rule, e.g. ``out_of_range 3 (chol 2, age 1; lines 4, 9, 12)``."""
        parts = []
        for rule, count in self.dropped.items():
            detail = [f"{c} {n}" for c, n in self.by_column.get(rule, {}).items()]
            lines = ", ".join(str(n) for n in self.examples.get(rule, []))
            detail_text = f"{', '.join(detail)}; " if detail else ""
            parts.append(f"{rule} {count} ({detail_text}lines {lines})")
        return ", ".join(parts) if parts else "nothing dropped"


@dataclass(frozen=True)
class CleanTable:
    """A cleaned file: float64 features (NaN = to impute), int64 0/1 target."""

    features: np.ndarray
    target: np.ndarray
    columns: list[str]
    report: CleaningReport


@dataclass(frozen=True)
class _RawTable:
    names: list[str]
    # Column-major; None = null (Parquet). A numeric Parquet column is a float64 array instead
    # (NaN = null): parsing 10^7 cells as text one by one takes tens of seconds.
    cells: list[list[str | None] | np.ndarray]
    lines: np.ndarray  # 1-based line (CSV) or row (Parquet) number of each row
    arrow: Any = None  # the Parquet table, for the text of its numeric columns

    def text(self, j: int) -> list[str | None]:
        """Column `j`'s cells as text (what duplicate detection compares)."""
        column = self.cells[j]
        if isinstance(column, np.ndarray):
            return [_parquet_cell(v) for v in self.arrow.column(j).to_pylist()]
        return column


def _read_csv(path: Path, schema: DataSchema) -> _RawTable:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read data file: {e.strerror}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[list[str]] = []
    lines: list[int] = []
    names: list[str] | None = None if schema.header else list(schema.columns or [])
    last = 0
    try:
        for record in reader:
            start, last = last + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if names is None:
                names = [c.strip() for c in record]
                dupes = sorted({n for n in names if names.count(n) > 1})
                if dupes:
                    raise DataError(f"{path}, line {start}: duplicate column name(s) {dupes}")
                continue
            if len(record) != len(names):
                raise DataError(
                    f"{path}, line {start}: {len(record)} fields, expected {len(names)} "
                    f"(columns {names})"
                )
            rows.append(record)
            lines.append(start)
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV: {e}") from None
    if names is None:
        raise DataError(f"{path}: empty file (no header line)")
    cells: list[list[str | None] | np.ndarray] = [
        [row[j] for row in rows] for j in range(len(names))
    ]
    return _RawTable(names, cells, np.asarray(lines, dtype=np.int64))


def _parquet_cell(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _read_parquet(path: Path, tokens: frozenset[str]) -> _RawTable:
    """A numeric column (integers, floats, booleans) comes as a float64 array unless a
    missing token is a number (a token such as "-999" must be matched as text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataError(f"{path}: data file not found") from None
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read Parquet file: {e}") from None
    names = [str(n) for n in table.column_names]
    fast = not any(_is_number(t) for t in tokens)
    cells: list[list[str | None] | np.ndarray] = []
    for j in range(len(names)):
        column, kind = table.column(j), table.column(j).type
        if fast and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            # Nulls become NaN, which `_parse` counts as missing, as it does a null cell.
            cells.append(np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64))
        elif fast and pa.types.is_boolean(kind) and column.null_count == 0:
            cells.append(np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64))
        else:
            cells.append([_parquet_cell(v) for v in column.to_pylist()])
    return _RawTable(names, cells, np.arange(1, table.num_rows + 1, dtype=np.int64), table)


def _is_number(token: str) -> bool:
    """Whether a missing token reads as a number other than NaN (which is missing anyway)."""
    try:
        return not math.isnan(float(token.strip()))
    except ValueError:
        return False


def _read(path: Path, schema: DataSchema) -> _RawTable:
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(path, frozenset(t.strip() for t in schema.missing_tokens))
    if suffix in CSV_SUFFIXES:
        return _read_csv(path, schema)
    known = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)
    raise DataError(f"{path}: unsupported file type {suffix!r} (expected one of {known})")


def _parse(
    cells: list[str | None] | np.ndarray, tokens: frozenset[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values (NaN where not a number), missing mask, unparsable mask."""
    if isinstance(cells, np.ndarray):  # a numeric Parquet column: the same rules, vectorized
        bad = np.isinf(cells)
        return np.where(bad, np.nan, cells), np.isnan(cells), bad
    if fast := _parse_clean(cells, tokens):
        return fast
    n = len(cells)
    values = np.full(n, np.nan)
    missing = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    for i, cell in enumerate(cells):
        if cell is None:
            missing[i] = True
            continue
        text = cell.strip()
        if text in tokens:
            missing[i] = True
            continue
        try:
            v = float(text)
        except ValueError:
            bad[i] = True
            continue
        if math.isnan(v):
            missing[i] = True
        elif math.isinf(v):
            bad[i] = True
        else:
            values[i] = v
    return values, missing, bad


def _parse_clean(
    cells: list[str | None], tokens: frozenset[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """`_parse` at C speed for a column where every cell is a number (NumPy converts each with
    Python's own float()); None when any is not, or when a missing token is itself a number."""
    if any(_is_number(t) for t in tokens):
        return None
    try:
        values = np.array(cells, dtype=np.float64)
    except (TypeError, ValueError):  # None, a missing token, text: cell by cell instead
        return None
    if values.ndim != 1:
        return None
    missing, bad = np.isnan(values), np.isinf(values)
    values[bad] = np.nan
    return values, missing, bad


class _Cleaner:
    """Applies the rules one after another, counting each row under the first it breaks."""

    def __init__(self, lines: np.ndarray) -> None:
        self.lines = lines
        self.alive = np.ones(len(lines), dtype=bool)
        self.dropped: dict[str, int] = {}
        self.examples: dict[str, list[int]] = {}
        self.by_column: dict[str, dict[str, int]] = {}

    def drop(self, rule: str, mask: np.ndarray, column: str | None = None) -> None:
        hit = mask & self.alive
        count = int(hit.sum())
        if count == 0:
            return
        self.alive &= ~hit
        self.dropped[rule] = self.dropped.get(rule, 0) + count
        merged = self.examples.get(rule, []) + [int(n) for n in self.lines[hit][:MAX_EXAMPLES]]
        self.examples[rule] = sorted(merged)[:MAX_EXAMPLES]
        if column is not None:
            per_column = self.by_column.setdefault(rule, {})
            per_column[column] = per_column.get(column, 0) + count


def _column(raw: _RawTable, path: Path, name: str, key: str) -> list[str | None] | np.ndarray:
    try:
        return raw.cells[raw.names.index(name)]
    except ValueError:
        raise DataError(
            f"{path}: column {name!r} ({key} in the data schema) is not in the file; "
            f"its columns are {raw.names}"
        ) from None


def _duplicates(raw: _RawTable) -> np.ndarray:
    n = len(raw.lines)
    seen: set[tuple[str | None, ...]] = set()
    dup = np.zeros(n, dtype=bool)
    stripped = [
        [c.strip() if c is not None else None for c in raw.text(j)] for j in range(len(raw.names))
    ]
    for i in range(n):
        key = tuple(col[i] for col in stripped)
        if key in seen:
            dup[i] = True
        seen.add(key)
    return dup


@dataclass(frozen=True)
class _Cleaned:
    """The rows a file keeps (`keep`) and each schema column's parsed values over all rows."""

    keep: np.ndarray
    target: np.ndarray
    features: dict[str, np.ndarray]  # NaN = missing (to impute)
    report: CleaningReport


def load_table(path: Path, schema: DataSchema) -> CleanTable:
    """Load one hospital's file (CSV or Parquet), apply the schema, return the clean table.

    CSV (``.csv``, ``.data``, ``.txt``, comma separated) uses the schema's ``header`` and
    ``columns``; Parquet (``.parquet``) always takes the column names from the file.
    """
    cleaned = _clean(Path(path), schema)
    keep = cleaned.keep
    blocks: list[np.ndarray] = []
    for feat in schema.features:
        values = cleaned.features[feat.name][keep]
        if feat.kind == "categorical":
            levels = np.asarray(feat.levels, dtype=np.float64)
            onehot = (values[:, None] == levels[None, :]).astype(np.float64)
            onehot[np.isnan(values)] = np.nan
            blocks.append(onehot)
        else:
            blocks.append(values[:, None])
    features = np.ascontiguousarray(np.hstack(blocks), dtype=np.float64)
    target = (cleaned.target[keep] > schema.target.positive_above).astype(np.int64)
    return CleanTable(features, target, schema.feature_columns(), cleaned.report)


def load_frame(path: Path, schema: DataSchema) -> pd.DataFrame:
    """The same clean rows as `load_table`, as the records they are, for federated analytics:
    the target column's own values, ``outcome`` (its 0/1 label), each feature in its units
    (NaN where missing) and each categorical feature as a pandas Categorical of the schema's
    levels, so every site's design matrix has the same columns whatever levels it holds."""
    import pandas as pd  # only analytics needs it: not on a training node's start-up path

    if OUTCOME in (schema.target.column, *(f.name for f in schema.features)):
        raise SchemaError(f"a column named {OUTCOME!r} clashes with the label column of analytics")
    cleaned = _clean(Path(path), schema)
    keep = cleaned.keep
    frame = pd.DataFrame({schema.target.column: cleaned.target[keep]})
    frame[OUTCOME] = (cleaned.target[keep] > schema.target.positive_above).astype(np.int64)
    for feat in schema.features:
        values = cleaned.features[feat.name][keep]
        if feat.kind == "categorical":
            frame[feat.name] = pd.Categorical(values, categories=feat.levels)
        else:
            frame[feat.name] = values
    return frame


def _clean(path: Path, schema: DataSchema) -> _Cleaned:
    raw = _read(path, schema)
    tokens = frozenset(t.strip() for t in schema.missing_tokens)
    n = len(raw.lines)
    if n == 0:
        raise DataError(f"{path}: no data rows")

    target_cells = _column(raw, path, schema.target.column, "target.column")
    parsed = {
        f.name: _parse(_column(raw, path, f.name, f"features[{i}].name"), tokens)
        for i, f in enumerate(schema.features)
    }
    filter_cells = [
        _column(raw, path, flt.column, f"filters[{i}].column")
        for i, flt in enumerate(schema.filters)
    ]

    cleaner = _Cleaner(raw.lines)
    if schema.drop_duplicates:
        cleaner.drop("duplicate", _duplicates(raw))

    y_values, y_missing, y_bad = _parse(target_cells, tokens)
    cleaner.drop("target_missing", y_missing, schema.target.column)
    cleaner.drop("target_unparsable", y_bad, schema.target.column)

    missing: dict[str, np.ndarray] = {}
    for feat in schema.features:
        values, miss, _ = parsed[feat.name]
        missing[feat.name] = miss | np.isin(values, feat.missing_values)
    for feat in schema.features:
        cleaner.drop("unparsable", parsed[feat.name][2], feat.name)
    for feat in schema.features:
        values = parsed[feat.name][0]
        present = ~missing[feat.name] & ~parsed[feat.name][2]
        low = values < feat.min if feat.min is not None else np.zeros(n, dtype=bool)
        high = values > feat.max if feat.max is not None else np.zeros(n, dtype=bool)
        cleaner.drop("out_of_range", present & (low | high), feat.name)
    for feat in schema.features:
        if feat.kind == "categorical":
            values = parsed[feat.name][0]
            present = ~missing[feat.name] & ~parsed[feat.name][2]
            cleaner.drop("unknown_level", present & ~np.isin(values, feat.levels or []), feat.name)
    for feat in schema.features:
        if feat.missing == "drop":
            cleaner.drop(f"missing_{feat.name}", missing[feat.name])
    for flt, cells in zip(schema.filters, filter_cells, strict=True):
        values, miss, bad = _parse(cells, tokens)
        sentinels = next((f.missing_values for f in schema.features if f.name == flt.column), [])
        fails = miss | bad | np.isin(values, sentinels)
        with np.errstate(invalid="ignore"):
            if flt.min is not None:
                fails |= values < flt.min
            if flt.max is not None:
                fails |= values > flt.max
        cleaner.drop(f"filter_{flt.column}", fails)

    keep = cleaner.alive
    rows_out = int(keep.sum())
    report = CleaningReport(
        file=str(path),
        rows_in=n,
        dropped=cleaner.dropped,
        examples=cleaner.examples,
        rows_out=rows_out,
        by_column=cleaner.by_column,
        imputed={
            f.name: int(missing[f.name][keep].sum())
            for f in schema.features
            if missing[f.name][keep].any()
        },
    )
    if rows_out == 0:
        raise DataError(f"{path}: all {n} rows dropped: {report.summary()}")
    features = {
        f.name: np.where(missing[f.name], np.nan, parsed[f.name][0]) for f in schema.features
    }
    return _Cleaned(keep, y_values, features, report)


def load_test_set(path: Path, schema: DataSchema) -> CleanTable:
    """A common test set: `load_table`, but a value that is not a number where the schema wants
    one is an error naming the file and the column, not a row quietly dropped. A test set is
    meant to be scored whole; such a value says the file is not in the schema's format (a
    column swapped, text in a numeric column). Rows the schema's own rules drop (out of range,
    missing, duplicates, filters) are dropped as at every node, and counted in its report."""
    table = load_table(path, schema)
    if problem := not_numbers(table):
        raise DataError(f"{path}: {problem}; a common test set must match the schema")
    return table


def not_numbers(table: CleanTable) -> str | None:
    """What `load_test_set` refuses in a cleaned table: which columns held values that are not
    numbers, in how many rows, on which lines (None: there were none)."""
    rules = ("target_unparsable", "unparsable")
    bad = {c: n for rule in rules for c, n in table.report.by_column.get(rule, {}).items()}
    if not bad:
        return None
    columns = ", ".join(f"{c!r} ({n} row{'s' * (n > 1)})" for c, n in bad.items())
    where = sorted(n for rule in rules for n in table.report.examples.get(rule, []))
    unit = "row" if Path(table.report.file).suffix.lower() in PARQUET_SUFFIXES else "line"
    return (
        f"not in the data schema's format: values that are not numbers in "
        f"column{'s' * (len(bad) > 1)} {columns}, e.g. {unit} "
        f"{', '.join(map(str, where[:MAX_EXAMPLES]))}"
    )


# --------------------------------------------------------------------------- split


@dataclass(frozen=True)
class Split:
    """A table cut into a training and a validation part."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray


def split_validation(table: CleanTable, fraction: float, seed: int) -> Split:
    """Hold out about ``fraction`` of the rows for validation, reproducibly from ``seed``.

    Stratified when every class present has at least 2 rows: each class puts
    ``round(fraction * its size)`` rows in validation, at least 1 and at most all but one.
    Otherwise a plain seeded shuffle holds out ``round(fraction * n)`` rows, at least 1 and at
    most ``n - 1``. Rows keep their file order inside each part. A ``fraction`` of 0 holds out
    nothing: every row trains, and evaluation is on a common test set instead.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    y = table.target
    if fraction == 0.0:
        x = table.features
        return Split(train_x=x, train_y=y, val_x=x[:0], val_y=y[:0])
    n = len(y)
    if n < 2:
        raise DataError(f"{table.report.file}: {n} row(s) after cleaning; need 2 to split")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() >= 2:
        parts = []
        for cls, count in zip(classes, counts, strict=True):
            idx = np.flatnonzero(y == cls)
            k = min(max(round(fraction * count), 1), count - 1)
            parts.append(rng.permutation(idx)[:k])
        val_idx = np.concatenate(parts)
    else:
        k = min(max(round(fraction * n), 1), n - 1)
        val_idx = rng.permutation(n)[:k]
    val_mask = np.zeros(n, dtype=bool)
    val_mask[val_idx] = True
    x = table.features
    return Split(train_x=x[~val_mask], train_y=y[~val_mask], val_x=x[val_mask], val_y=y[val_mask])
