"""The finished runs of a long bench, one JSON line each, written as each run ends: a bench
stopped part way (a crash, Ctrl-C, a reboot) picks up where it stopped when started again.

A run is found again by its key: a hash of what decides its result (the scenario it ran) and of
the code that ran it (every Python source of the packages that run a scenario), so a changed
setting or a changed line of code runs it anew. A line cut short by a crash is skipped."""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("node", "gossip", "sim", "ledger", "medswarm")


def code_fingerprint(root: Path = REPO_ROOT, packages: tuple[str, ...] = CODE_PACKAGES) -> str:
    """A hash of every .py file of `packages` under `root` (path and content)."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


class RunJournal:
    """Results by key, loaded from `path` and appended to it (flushed to disk per run)."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        self.code = code_fingerprint()
        self.results: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0
        if fresh:
            path.unlink(missing_ok=True)
        elif path.exists():
            text = path.read_text()
            if text and not text.endswith("\n"):  # cut short: the next line starts afresh
                with path.open("a") as out:
                    out.write("\n")
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                    self.results[entry["key"]] = entry["result"]
                except (ValueError, KeyError, TypeError):
                    self.skipped_lines += 1

    def _key(self, scenario: str) -> str:
        return hashlib.sha256(f"{self.code}\0{scenario}".encode()).hexdigest()

    def get(self, scenario: str) -> dict[str, Any] | None:
        """The result of `scenario` run by this code, if a run of it finished before."""
        return self.results.get(self._key(scenario))

    def add(self, scenario: str, result: dict[str, Any]) -> None:
        key = self._key(scenario)
        self.results[key] = result
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            out.write(json.dumps({"key": key, "result": result}) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def remove(self) -> None:
        """Once the bench's own output is written, the journal has done its job."""
        self.path.unlink(missing_ok=True)
