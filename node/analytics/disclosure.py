"""The disclosure rule, as hospitals' output checks apply it: small cells are suppressed (and
one more beside a lone suppressed cell, so a released total cannot give it back), and each
hospital refuses a row set that differs by a few rows from one it answered on before.

The differencing check runs at each hospital on its own rows (as DataSHIELD's servers check
their own subsets): if every hospital's difference between two row sets is 0 or at least
`min_cell` rows, so is the pooled one, so no pair of overlapping filters isolates fewer.
"""

import base64
import hashlib
import json
from pathlib import Path

import numpy as np

from node.checkpoint import write_atomic


def small(counts: np.ndarray, min_cell: int) -> np.ndarray:
    """Cells to suppress: 0 < count < min_cell (an empty cell is released)."""
    counts = np.asarray(counts)
    return (counts > 0) & (counts < min_cell)


def suppressed_cells(counts: np.ndarray, min_cell: int) -> np.ndarray:
    """Primary suppression, then secondary: along every line (the whole vector; each row and
    column of a table) with exactly one suppressed cell, the smallest other cell too, until
    no line has a lone one. Totals of a line with a suppressed cell are then not enough to
    recover it."""
    counts = np.asarray(counts, dtype=np.float64)
    hidden = small(counts, min_cell)
    table = counts if counts.ndim == 2 else counts[None, :]
    mask = hidden if hidden.ndim == 2 else hidden[None, :]
    changed = bool(mask.any())
    while changed:
        changed = False
        for axis in (0, 1) if counts.ndim == 2 else (1,):
            for line in range(mask.shape[1 - axis]):
                cells = (slice(None), line) if axis == 0 else (line, slice(None))
                line_mask, line_counts = mask[cells], table[cells]
                if line_mask.sum() == 1 and line_mask.size > 1:
                    candidates = np.where(line_mask, np.inf, line_counts)
                    line_mask[int(np.argmin(candidates))] = True
                    changed = True
    return mask if counts.ndim == 2 else mask[0]


def released(counts: np.ndarray, hidden: np.ndarray) -> list:
    """Counts as JSON: integers, None where suppressed (nested for a table)."""
    out = np.where(hidden, np.nan, np.asarray(counts, dtype=np.float64))
    return [_cell(v) for v in out] if out.ndim == 1 else [[_cell(v) for v in r] for r in out]


def _cell(value: float) -> int | None:
    return None if np.isnan(value) else int(round(value))


class ReleaseLog:
    """The row sets this hospital has answered on, kept on disk (a crash must not let the
    next query pass as the first). Kept per data file: the digest of its bytes, since a
    changed file has different rows under the same positions."""

    def __init__(self, path: Path, data_file: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256(data_file.read_bytes()).hexdigest()
        self.files: dict[str, list[dict[str, object]]] = {}
        if path.exists():
            self.files = json.loads(path.read_text())["files"]

    def refusal(self, rows: np.ndarray, min_cell: int) -> str | None:
        """Why this hospital will not answer on `rows` (a mask over its clean records), or
        None when the difference from every earlier row set is 0 or >= min_cell rows."""
        rows = np.asarray(rows, dtype=bool)
        for i, entry in enumerate(self.files.get(self.digest, []), start=1):
            before = _unpack(entry)
            if len(before) != len(rows):
                continue  # the same file cleaned under another schema: other rows
            for gained in (int((rows & ~before).sum()), int((before & ~rows).sum())):
                if 0 < gained < min_cell:
                    return (
                        f"the rows asked for differ from those of answer {i} released before by "
                        f"{gained} row(s), fewer than the minimum cell count {min_cell}"
                    )
        return None

    def record(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=bool)
        entry = {"rows": len(rows), "bits": base64.b64encode(np.packbits(rows).tobytes()).decode()}
        known = self.files.setdefault(self.digest, [])
        if entry not in known:
            known.append(entry)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"files": self.files}).encode())


def _unpack(entry: dict[str, object]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(str(entry["bits"])), np.uint8))
    return bits[: int(str(entry["rows"]))].astype(bool)
