"""A live one-line progress display for a node: round, accuracies, neighbours, bytes."""

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RoundProgress:
    def __init__(self, name: str, rounds: int, console: Console, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.fields[name]}[/bold] round"),
            MofNCompleteColumn(),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self._task = self._progress.add_task("", total=rounds, name=name, status="starting")

    def __enter__(self) -> "RoundProgress":
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, record: dict[str, Any]) -> None:
        moved = (record["bytes_sent"] + record["bytes_received"]) / 1e6
        local = f"local acc {record['local']['accuracy']:.3f}  " if record["local"] else ""
        status = (
            f"{local}merged acc {record['merged']['accuracy']:.3f}  neighbours "
            f"{len(record['neighbours_reached'])}/{record['neighbours_total']}  {moved:.2f} MB"
        )
        if budget := record.get("privacy"):
            status += f"  ε {budget['epsilon']:.2f} (δ {budget['delta']:.0e})"
            status += "  budget spent: no new models" if budget.get("retired_at") else ""
        self._progress.update(self._task, completed=record["round"], status=status)
