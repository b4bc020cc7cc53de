"""What the command groups share: the console on stderr, the error exit, JSON output."""

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
JsonOut = Annotated[Path, typer.Option("--json", help="Write the results as JSON here.")]


def fail(message: str) -> typer.Exit:
    """Print `message` (plain text, not markup: `medswarm[mlflow]` stays as written) as an
    error; the caller raises the returned exit (status 2)."""
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(2)


def write_json(path: Path, results: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    console.print(f"wrote {path}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (`kill`, a service manager or CI stopping the job) does what
    Ctrl-C does, so the same clean-up runs: nodes, containers, networks and chains stopped and
    removed. It is turned into a SIGINT, which trio delivers to its main task at a safe point
    during `trio.run` (raising KeyboardInterrupt from the handler could land inside trio's own
    machinery), and which raises KeyboardInterrupt elsewhere."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread (e.g. a command run by a test's thread)
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    # A command started in the background by a non-interactive shell inherits SIGINT ignored,
    # which would make the SIGINT above a no-op (and trio installs its handler only over
    # Python's default one).
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
