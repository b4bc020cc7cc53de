"""What a researcher asks the swarm: the rows (`where`), the statistics, the models, and the
disclosure rule every answer must pass. One query, given to every member alike, in a node
config's [analytics] table, a scenario's, or a file of its own (`medswarm stats QUERY`)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from node.row_filter import RowFilter

FAMILIES = ("gaussian", "binomial", "poisson")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatsQuery(_Section):
    # Default: every numeric feature and the target column.
    columns: list[str] | None = None
    bins: int = Field(10, ge=2, le=100)  # histogram bins over the schema's range (or mean +- 3 sd)
    quantiles: list[float] = [0.25, 0.5, 0.75]
    # Pairs of columns to cross-tabulate (categorical features, `outcome`, or any column with
    # few distinct values, e.g. sex), each with a chi-square test of independence.
    crosstabs: list[tuple[str, str]] = []

    @model_validator(mode="after")
    def _check(self) -> "StatsQuery":
        if any(not 0.0 < q < 1.0 for q in self.quantiles):
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {self.quantiles}")
        return self


class GlmQuery(_Section):
    formula: str  # e.g. "outcome ~ age + sex + cp" (formulaic's syntax, as in R)
    family: Literal["gaussian", "binomial", "poisson"]
    max_iter: int = Field(100, ge=1)


class Disclosure(_Section):
    """Applied before anything is released. A cell (histogram bin, table cell, the rows behind
    a statistic) under `min_cell` is suppressed; an answer from fewer than `min_sites`
    hospitals is refused; a hospital refuses a row set that differs from one it released
    before by fewer than `min_cell` rows (the differencing of two overlapping filters)."""

    min_cell: int = Field(5, ge=1)
    min_sites: int = Field(2, ge=1)


class Query(_Section):
    where: list[RowFilter] = []  # rows kept: every filter holds (ranges, as the schema's)
    stats: StatsQuery | None = None
    glm: list[GlmQuery] = []
    disclosure: Disclosure = Disclosure()

    @model_validator(mode="after")
    def _asks_something(self) -> "Query":
        if self.stats is None and not self.glm:
            raise ValueError("nothing asked: give a [stats] table, [[glm]] models, or both")
        return self
