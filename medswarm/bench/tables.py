"""The benchmarks' tables: one look (a simple head, numbers right-aligned)."""

from collections.abc import Collection, Sequence

from rich import box
from rich.table import Table


def bench_table(
    title: str, columns: Sequence[str], caption: str | None = None, left: Collection[str] = ()
) -> Table:
    """An empty table with these columns, right-aligned except those named in `left`."""
    table = Table(title=title, box=box.SIMPLE_HEAD, caption=caption)
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    return table
