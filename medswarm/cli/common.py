"""What the command groups share: the console on stderr, the error exit, JSON output."""

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(stderr=True)
JsonOut = Annotated[Path, typer.Option("--json", help="Write the results as JSON here.")]


def fail(message: str) -> typer.Exit:
    """Print `message` as an error; the caller raises the returned exit (status 2)."""
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(2)


def write_json(path: Path, results: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    console.print(f"wrote {path}")
