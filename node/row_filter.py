"""A range filter on one column: the schema's inclusion criteria and an analytics query's rows.
A module of its own, free of numpy, since reading a node config (a container's health check
every 30 s) parses the query that uses it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator


class RowFilter(BaseModel):
    """Keep only rows whose ``column`` lies in ``[min, max]`` (an inclusion criterion)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    column: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> RowFilter:
        if self.min is None and self.max is None:
            raise ValueError("a filter needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self
