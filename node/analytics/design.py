"""A model formula's design matrix at one site: formulaic's coding of the site's complete cases.

Every site must build the same columns in the same order, whatever values its own rows hold,
or the sums of a fit would add unlike things. Categorical features are pandas Categoricals of
the schema's levels (`dataset.load_frame`), so treatment coding gives every site a column per
non-reference level, even one it never saw (a column of zeros there). What would depend on a
site's own rows is refused here: formulaic's stateful transforms (center, scale, splines...),
whose state is computed from the rows at hand. Categorical coding of a numeric column, `C(x)`,
takes its levels from the rows too; the fit checks that the sites' columns agree.

Every check here depends on the formula and the columns only, never on the rows, so every site
takes the same decision without a sum.
"""

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from formulaic import Formula, SimpleFormula, model_matrix
from formulaic.errors import FormulaicError

from node.errors import AnalyticsError


@dataclass(frozen=True, eq=False)
class Design:
    """One site's complete cases of a formula: `y` (rows,), `x` (rows, len(names))."""

    formula: str
    outcome: str  # the left-hand side, as formulaic names it (`outcome`, `np.log(num + 1)`)
    names: list[str]  # the columns of `x`: the model's coefficients, in order
    y: np.ndarray
    x: np.ndarray
    rows_used: int
    rows_dropped_missing: int  # rows with a missing value in any of the formula's variables


def design(frame: pd.DataFrame, formula: str) -> Design:
    """The design of `formula` (``"outcome ~ age + sex + cp"``) on `frame`'s complete cases,
    as statsmodels' ``missing='drop'`` would take them. `AnalyticsError` names what is wrong:
    a malformed formula (with formulaic's words), a name that is not a column (with the
    columns there are), an outcome that is not one numeric column, a stateful transform."""
    parsed = _parse(formula)
    unknown = sorted(parsed.required_variables - set(frame.columns))
    if unknown:
        raise AnalyticsError(_unknown(formula, unknown, frame))
    try:
        matrices = model_matrix(parsed, frame, na_action="drop")
    except FormulaicError as e:
        # A name inside a transform (`center(agee)`) escapes `required_variables`.
        name = getattr(e.__cause__, "name", None)
        if isinstance(e.__cause__, NameError) and name:
            raise AnalyticsError(_unknown(formula, [name], frame)) from None
        raise AnalyticsError(
            f"formula {formula!r} cannot be evaluated on the records: {_plain(e)}"
        ) from None
    lhs, rhs = matrices.lhs, matrices.rhs
    states = [*lhs.model_spec.transform_state, *rhs.model_spec.transform_state]
    stateful = list(dict.fromkeys(states))
    if stateful:
        raise AnalyticsError(
            f"formula {formula!r}: {', '.join(stateful)} would be computed from each site's own "
            "rows, so the sites' columns would differ; write the constants in, e.g. "
            "I(age - 50) or I(age / 10)"
        )
    if lhs.shape[1] != 1:
        raise AnalyticsError(
            f"formula {formula!r}: the outcome must be one numeric column, but its left-hand "
            f"side gives {lhs.shape[1]} columns ({', '.join(map(str, lhs.columns))})"
        )
    return Design(
        formula=formula,
        outcome=str(lhs.columns[0]),
        names=[str(c) for c in rhs.columns],
        y=np.asarray(lhs, dtype=np.float64)[:, 0],
        x=np.asarray(rhs, dtype=np.float64),
        rows_used=len(rhs),
        rows_dropped_missing=len(frame) - len(rhs),
    )


def _parse(formula: str) -> Formula:
    try:
        parsed = Formula(formula)
    except FormulaicError as e:
        raise AnalyticsError(f"malformed formula {formula!r}: {_plain(e)}") from None
    lhs, rhs = getattr(parsed, "lhs", None), getattr(parsed, "rhs", None)
    if not isinstance(lhs, SimpleFormula) or not isinstance(rhs, SimpleFormula):
        raise AnalyticsError(
            f"formula {formula!r} must be one outcome and its covariates, "
            "e.g. 'outcome ~ age + sex + cp'"
        )
    return parsed


def _unknown(formula: str, names: list[str], frame: pd.DataFrame) -> str:
    return (
        f"formula {formula!r} names {', '.join(map(repr, names))}: neither a column of the "
        f"records nor a function formulaic knows; the columns are {', '.join(frame.columns)}"
    )


def _plain(error: Exception) -> str:
    """formulaic's message on one line, without its terminal colours; ⧛ ⧚ mark the place."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
