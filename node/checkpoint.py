"""Crash-safe checkpoints: parameters as safetensors (no pickle) plus a JSON state file.

The parameters go to a round-numbered file first; state.json, written last by atomic rename,
names that file and its sha256. A crash at any point leaves the previous checkpoint intact.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save

from node.errors import CheckpointError

STATE_FILE = "state.json"


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
) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"params-{round_:06d}.safetensors"
    digest = save_params(folder / name, params, fsync)
    record = {"round": round_, "params_file": name, "params_sha256": digest, **state}
    write_atomic(folder / STATE_FILE, json.dumps(record, indent=1).encode(), fsync)
    for old in folder.glob("params-*.safetensors"):
        if old.name != name:
            old.unlink()
    return digest


def load_checkpoint(folder: Path) -> Checkpoint | None:
    state_path = folder / STATE_FILE
    if not state_path.exists():
        return None
    try:
        state = json.loads(state_path.read_text())
        params_path = folder / state["params_file"]
        digest = hashlib.sha256(params_path.read_bytes()).hexdigest()
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{state_path}: unreadable checkpoint: {exc}") from exc
    if digest != state["params_sha256"]:
        raise CheckpointError(f"{params_path}: sha256 {digest} != {state['params_sha256']}")
    return Checkpoint(int(state["round"]), load_file(str(params_path)), state)
