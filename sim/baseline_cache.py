"""The baselines' results kept per scenario, seed and data, so a rerun of the same comparison
(another backend, a changed fault, a benchmark repeated) does not train them again.

The key is a hash of everything they depend on: the data, model, training and baseline
settings, the rounds, the seed, the bytes of each honest node's partition, of the schema and of
the common test set (the caller's `settings`), and the source of the code that trains and
scores them. The results live
as JSON in $MEDSWARM_CACHE (default: $XDG_CACHE_HOME/medswarm, else ~/.cache/medswarm) under
baselines/; delete the folder to drop them.
"""

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    if explicit := os.environ.get("MEDSWARM_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medswarm"


# The code the baselines run: a change to any of it is a new key.
CODE = [
    Path(__file__).resolve().parents[1] / "node" / f"{module}.py"
    for module in ("baselines", "training", "models", "dataset", "scaling", "params")
] + [Path(__file__).resolve().parent / "common_test.py"]  # their scores on the common test set


def baseline_key(
    settings: Mapping[str, Any], files: Mapping[str, Path], honest: Sequence[str], schema: Path
) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for source in [*CODE, schema]:
        digest.update(hashlib.sha256(source.read_bytes()).digest())
    for name in sorted(honest):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name].read_bytes()).digest())
    return digest.hexdigest()


def cached(key: str, compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], Path | None]:
    """The results stored under `key` and the file they came from, else computed, stored
    (written whole, then renamed: a crash never leaves half a file to be read later) and None."""
    path = cache_dir() / "baselines" / f"{key}.json"
    try:
        return dict(json.loads(path.read_text())), path
    except (OSError, ValueError):
        pass
    results = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(results))
    partial.replace(path)
    return results, None
