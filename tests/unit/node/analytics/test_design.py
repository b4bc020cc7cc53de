"""A formula's design matrix at one site: the complete cases, the same columns at every site
(also one that lacks a level, or has no rows), and errors that name the cause."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from node.analytics.design import design
from node.dataset import load_frame, load_schema
from node.errors import AnalyticsError

ROOT = Path(__file__).resolve().parents[4]
SCHEMA = load_schema(ROOT / "data/heart-disease/schema.toml")
SITES = ["cleveland", "hungarian", "switzerland", "va"]
FORMULA = "thalach ~ age + sex + cp"
NAMES = ["Intercept", "age", "sex", "cp[T.2.0]", "cp[T.3.0]", "cp[T.4.0]"]


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    return [load_frame(ROOT / f"data/heart-disease/processed.{s}.data", SCHEMA) for s in SITES]


def test_complete_cases_coded_as_by_hand(frames):
    va = frames[3]  # V.A. Long Beach leaves thalach empty in 53 rows
    d = design(va, FORMULA)
    kept = va.dropna(subset=["thalach", "age", "sex", "cp"])
    assert d.names == NAMES and d.outcome == "thalach"
    assert d.rows_used == len(kept) and d.rows_dropped_missing == len(va) - len(kept) > 0
    dummies = [(kept["cp"] == level).to_numpy(float) for level in (2.0, 3.0, 4.0)]
    expected = np.column_stack([np.ones(len(kept)), kept["age"], kept["sex"], *dummies])
    np.testing.assert_array_equal(d.x, expected)
    np.testing.assert_array_equal(d.y, kept["thalach"].to_numpy())
    assert d.x.dtype == d.y.dtype == np.float64


def test_every_site_gets_the_same_columns_whatever_levels_it_holds(frames):
    without_typical_angina = frames[0][frames[0]["cp"] != 1.0]
    without_two_levels = frames[1][frames[1]["cp"].isin([4.0])]
    empty = frames[2].iloc[:0]
    sites = [*frames, without_typical_angina, without_two_levels, empty]
    designs = [design(f, "outcome ~ age + cp + restecg") for f in sites]
    assert all(d.names == designs[0].names for d in designs)
    assert designs[0].names == [
        "Intercept", "age", "cp[T.2.0]", "cp[T.3.0]", "cp[T.4.0]", "restecg[T.1.0]",
        "restecg[T.2.0]",
    ]  # fmt: skip
    lacking = designs[len(frames) + 1]
    assert (lacking.x[:, 2:4] == 0).all() and (lacking.x[:, 4] == 1).all()
    assert designs[-1].x.shape == (0, 7) and designs[-1].y.shape == (0,)


def test_a_missing_categorical_value_drops_the_row(frames):
    hungarian = frames[1]  # restecg is empty in one row
    d = design(hungarian, "outcome ~ restecg")
    assert d.rows_dropped_missing == hungarian["restecg"].isna().sum() == 1


def test_an_unknown_column_is_named_with_the_columns_there_are(frames):
    for formula, name in [("outcome ~ age + sexx", "sexx"), ("outcome ~ np.log(agee)", "agee")]:
        with pytest.raises(AnalyticsError) as caught:
            design(frames[0], formula)
        message = str(caught.value)
        assert f"'{name}'" in message and "age, sex, cp, trestbps" in message, message


def test_a_malformed_formula_says_what_formulaic_said(frames):
    said = r"malformed formula 'outcome ~ age \+': Operator `\+` has"
    with pytest.raises(AnalyticsError, match=said):
        design(frames[0], "outcome ~ age +")
    with pytest.raises(AnalyticsError) as caught:
        design(frames[0], "outcome ~ (age")
    assert "\x1b" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("formula", "cause"),
    [
        ("age + sex", "one outcome and its covariates"),
        ("outcome ~ age | sex", "one outcome and its covariates"),
        ("cp ~ age", "gives 4 columns"),
        ("outcome ~ center(age)", "center(age) would be computed from each site's own rows"),
    ],
)
def test_formulas_a_federated_fit_cannot_take(frames, formula, cause):
    with pytest.raises(AnalyticsError, match=re.escape(cause)):
        design(frames[0], formula)
