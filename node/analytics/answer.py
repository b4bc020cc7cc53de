"""One query answered by every member together: the rows asked for, the disclosure gate, then
the statistics and each model, all from sums over the members (`Total`).

Every member runs this with its own records and takes the same steps in the same order: each
decision (refuse, withhold, stop a model) is taken on summed figures only, which all members
hold alike, so no member waits on a sum the others have given up.
"""

import logging
from typing import Any

import numpy as np
import pandas as pd

from node.analytics import Total
from node.analytics.disclosure import ReleaseLog
from node.analytics.query import Query
from node.analytics.stats import describe
from node.dataset import OUTCOME, DataSchema
from node.errors import AnalyticsError

log = logging.getLogger(__name__)


def rows_asked(frame: pd.DataFrame, query: Query) -> np.ndarray:
    """This site's rows that meet every `where` filter (a missing value does not)."""
    keep = np.ones(len(frame), dtype=bool)
    for i, flt in enumerate(query.where):
        if flt.column not in frame.columns:
            known = ", ".join(frame.columns)
            raise AnalyticsError(
                f"where[{i}].column: unknown column {flt.column!r}; the columns are {known}"
            )
        values = frame[flt.column].to_numpy(np.float64)
        with np.errstate(invalid="ignore"):
            inside = ~np.isnan(values)
            if flt.min is not None:
                inside &= values >= flt.min
            if flt.max is not None:
                inside &= values <= flt.max
        keep &= inside
    return keep


async def gate(rows: np.ndarray, query: Query, release_log: ReleaseLog, total: Total) -> dict:
    """The disclosure gate, before anything about these rows is summed: how many hospitals
    refuse them (each checks its own differencing), how many contribute, how many rows. The
    row set is then recorded, so the next query is checked against it."""
    rule = query.disclosure
    refusal = release_log.refusal(rows, rule.min_cell)
    if refusal is not None:
        log.warning("this hospital refuses the query: %s", refusal)
    sites, refused, n = await total(np.array([rows.any(), refusal is not None, rows.sum()], float))
    if refused:
        raise AnalyticsError(
            f"refused by {int(refused)} hospital(s) under the disclosure rule: the rows asked "
            f"for differ by fewer than {rule.min_cell} from rows an earlier answer covered "
            "(each refusing hospital's log says which answer)"
        )
    if sites < rule.min_sites:
        raise AnalyticsError(
            f"refused: rows from {int(sites)} hospital(s), fewer than the minimum of "
            f"{rule.min_sites} contributing sites"
        )
    if n < rule.min_cell:
        raise AnalyticsError(
            f"refused: {int(n)} row(s) in all, fewer than the minimum cell count {rule.min_cell}"
        )
    release_log.record(rows)
    return {"rows": int(n), "sites": int(sites)}


async def answer(
    frame: pd.DataFrame, schema: DataSchema, query: Query, release_log: ReleaseLog, total: Total
) -> dict[str, Any]:
    """The released answer to `query`, as JSON. A model that cannot be fitted (a singular
    design, separation) gets its reason in place of its table; the rest is still answered."""
    rows = rows_asked(frame, query)
    covered = await gate(rows, query, release_log, total)
    subset = frame[rows]
    out: dict[str, Any] = {
        "where": [f.model_dump(exclude_none=True) for f in query.where],
        "disclosure": query.disclosure.model_dump(),
        **covered,
        "outcome": f"{OUTCOME} = 1 when {schema.target.column} > {schema.target.positive_above:g}",
    }
    if query.stats is not None:
        out["stats"] = await describe(subset, schema, query.stats, query.disclosure.min_cell, total)
    if query.glm:
        from node.analytics.design import design
        from node.analytics.glm import fit_glm

        out["glm"] = []
        for model in query.glm:
            entry: dict[str, Any] = {"formula": model.formula, "family": model.family}
            try:
                fitted = await fit_glm(design(subset, model.formula), model.family, total,
                                       max_iter=model.max_iter)  # fmt: skip
                rule = query.disclosure.min_cell
                if fitted.df_resid < rule:  # nearly saturated: it would echo single records
                    raise AnalyticsError(
                        f"withheld: {fitted.df_resid} residual degrees of freedom ({fitted.n} "
                        f"rows, {len(fitted.names)} coefficients), fewer than the minimum cell "
                        f"count {rule}"
                    )
                entry |= fitted.to_dict()
            except AnalyticsError as exc:
                entry["error"] = str(exc)
            out["glm"].append(entry)
    return out
