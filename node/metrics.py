"""A node's metrics.jsonl: one JSON record per round, appended; read by the node on restart and
by the simulator and tests while the node runs."""

import json
from pathlib import Path
from typing import Any

# A node answering a query records each of its secure sums here (as metrics.jsonl each round).
ANALYTICS_PROGRESS = "analytics-progress.jsonl"


def append_record(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every whole record; stops at a line being written now or torn by a crash."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def last_record(path: Path, tail_bytes: int = 65536) -> dict[str, Any] | None:
    """The newest whole record, reading only the end of the file (the simulator asks for it
    for every node several times a second)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - tail_bytes))
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return None
    if size > tail_bytes:
        lines = lines[1:]  # the first may be the end of a longer line
    for line in reversed(lines):
        try:
            return dict(json.loads(line))
        except ValueError:
            continue  # being written now, or torn by a crash
    if size <= tail_bytes:
        return None
    records = read_records(path)  # one record longer than the tail: read it all
    return records[-1] if records else None
