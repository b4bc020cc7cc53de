"""Crash-safe checkpoints: one safetensors file a round (no pickle) holding the parameters, with
the round, their sha256 and the node's JSON state in its metadata. Each appears whole (written
aside, then renamed) and the previous one is removed only after, so a crash at any point leaves
a complete checkpoint.
"""

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from node.errors import CheckpointError

CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)\.safetensors")


@dataclass(frozen=True)
class Checkpoint:
    round: int
    params: dict[str, np.ndarray]
    state: dict[str, Any]


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Replace `path` with `data` in one step: a crash leaves the old file or the new one.
    Without `fsync` that holds for a killed process but not for a power loss."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def params_bytes(params: dict[str, np.ndarray]) -> bytes:
    """The safetensors file content for `params`: deterministic, so peers and auditors can
    recompute its sha256."""
    return save({k: np.ascontiguousarray(v) for k, v in params.items()})


def save_params(path: Path, params: dict[str, np.ndarray], fsync: bool = True) -> str:
    """Write parameters as safetensors; return the file's sha256 (what the ledger commits)."""
    data = params_bytes(params)
    write_atomic(path, data, fsync)
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(
    folder: Path,
    round_: int,
    params: dict[str, np.ndarray],
    state: dict[str, Any],
    fsync: bool = True,
) -> None:
    """Each round a file of its own, renamed into place, then the older ones go. Not renamed
    over the previous file: on ext4 that forces the new file's data to disk at once
    (auto_da_alloc), the largest cost of a small model's round with twenty nodes on one disk."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"round": str(round_), "sha256": _digest(params), "state": json.dumps(state)}
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    path = folder / f"checkpoint-{round_}.safetensors"
    write_atomic(path, save(tensors, metadata=meta), fsync)
    for _, old in _checkpoints(folder):
        if old != path:
            old.unlink()


def load_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest checkpoint in `folder`, None if there is none."""
    found = _checkpoints(folder)
    return _read_checkpoint(max(found)[1]) if found else None


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    return [
        (int(m.group(1)), Path(entry.path))
        for entry in os.scandir(folder)
        if (m := CHECKPOINT_NAME.fullmatch(entry.name))
    ]


def _read_checkpoint(path: Path) -> Checkpoint:
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            params = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        round_, digest, state = int(meta["round"]), meta["sha256"], json.loads(meta["state"])
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint: {exc!r}") from exc
    if (actual := _digest(params)) != digest:
        raise CheckpointError(f"{path}: parameters' sha256 {actual} != {digest} recorded")
    return Checkpoint(round_, params, state)


def _digest(params: dict[str, np.ndarray]) -> str:
    """sha256 over each tensor's name, dtype, shape and bytes: catches a corrupted file."""
    h = hashlib.sha256()
    for name in sorted(params):
        value = np.ascontiguousarray(params[name])
        h.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        h.update(value.data)
    return h.hexdigest()
