"""Following a JSON-lines file as it grows: each read returns only the whole records appended
since the last one (the bytes already read are never read again)."""

import json
import os
from pathlib import Path
from typing import Any


class JsonlTail:
    """The new whole records of `path` on each `read()`. A last line without its newline is
    being written: it is kept back until it is complete. A line that is not JSON (torn by a
    crash) is skipped. If the file shrinks or is replaced, `restarted` is set and reading
    starts over from its beginning."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.identity: tuple[int, int] | None = None  # (device, inode) of the file being read
        self.restarted = False

    def read(self) -> list[dict[str, Any]]:
        self.restarted = False
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                stat = (st.st_dev, st.st_ino, st.st_size)
                if self.identity is not None and (
                    stat[:2] != self.identity or stat[2] < self.offset
                ):
                    self.offset, self.partial, self.restarted = 0, b"", True
                self.identity = stat[:2]
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()  # b"" after a final newline; else a line being written
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records
