"""A released answer (`answer`'s JSON) as rows for people: the terminal, CSV and the report."""

from typing import Any

STATS_HEADER = ["column", "n", "missing", "mean", "sd", "quantiles"]
GLM_HEADER = ["formula", "family", "covariate", "coef", "se", "z", "p", "ci_low", "ci_high"]


def stats_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per numeric column: n, missing, mean, sd and the quantiles asked for."""
    rows = []
    for name, entry in result.get("stats", {}).get("columns", {}).items():
        if "levels" in entry:
            continue
        quantiles = ", ".join(f"{q}: {v:.4g}" for q, v in entry.get("quantiles", {}).items())
        rows.append([
            name, str(entry["count"]), str(entry["missing"]), _num(entry.get("mean")),
            _num(entry.get("sd")), entry.get("withheld") or quantiles,
        ])  # fmt: skip
    return rows


def level_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per categorical column: each level's count ('<min' where suppressed)."""
    rows = []
    for name, entry in result.get("stats", {}).get("columns", {}).items():
        if "levels" in entry:
            cells = zip(entry["levels"], entry["counts"], strict=True)
            text = ", ".join(f"{level}: {_count(c, result)}" for level, c in cells)
            rows.append([name, text, str(entry["missing"])])
    return rows


def crosstab_text(table: dict[str, Any], result: dict[str, Any]) -> list[list[str]]:
    """A cross-table as rows (a header row first), suppressed cells shown as '<min'."""
    rows = [[f"{table['rows']} \\ {table['columns']}", *table["column_levels"]]]
    for level, counts in zip(table["row_levels"], table["counts"], strict=True):
        rows.append([level, *(_count(c, result) for c in counts)])
    return rows


def crosstab_test(table: dict[str, Any]) -> str:
    if "chi2" in table:
        return f"chi-square {table['chi2']:.4g}, dof {table['dof']}, p = {table['p']:.4g}"
    return f"chi-square withheld: {table['chi2_withheld']}"


def coefficient_rows(model: dict[str, Any]) -> list[list[Any]]:
    """A fitted model's coefficients, one row per covariate (GLM_HEADER without the model)."""
    return [[c[k] for k in GLM_HEADER[2:]] for c in model["coefficients"]]


def glm_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Every fitted model's coefficients, one row per covariate (GLM_HEADER)."""
    rows = []
    for model in result.get("glm", []):
        if "error" not in model:
            rows += [[model["formula"], model["family"], *r] for r in coefficient_rows(model)]
    return rows


def number(value: Any, digits: int = 6) -> str:
    """A coefficient-table cell: '-' where the fit gave no finite value."""
    return "-" if value is None else f"{value:.{digits}g}"


def _count(value: int | None, result: dict[str, Any]) -> str:
    return f"<{result['disclosure']['min_cell']}" if value is None else str(value)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
