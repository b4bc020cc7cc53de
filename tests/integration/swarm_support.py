"""Helpers for loopback swarm tests: synthetic sites, reading a node's outputs."""

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from safetensors.numpy import load_file

from node.checkpoint import load_checkpoint
from node.metrics import read_records

SYNTHETIC_SCHEMA = """\
header = true
[target]
column = "y"
positive_above = 0
[[features]]
name = "a"
[[features]]
name = "b"
"""

QUIET = Console(quiet=True)


def synthetic_sites(folder: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, Path]:
    """One CSV per site: two features, a label that depends on them, distinct row counts."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sites = {}
    for name, rows in sizes.items():
        x = rng.normal(size=(rows, 2))
        y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
        lines = ["a,b,y"] + [f"{a:.6f},{b:.6f},{t}" for (a, b), t in zip(x, y, strict=True)]
        path = folder / f"{name}.csv"
        path.write_text("\n".join(lines) + "\n")
        sites[name] = path
    (folder / "schema.toml").write_text(SYNTHETIC_SCHEMA)
    return sites


def out_dir(swarm: Path, name: str) -> Path:
    return swarm / "nodes" / name / "out"


def metrics(swarm: Path, name: str) -> list[dict[str, Any]]:
    return read_records(out_dir(swarm, name) / "metrics.jsonl")


def final_params(swarm: Path, name: str) -> dict[str, np.ndarray]:
    checkpoint = load_checkpoint(out_dir(swarm, name) / "checkpoint")
    assert checkpoint is not None, f"{name} wrote no checkpoint"
    return checkpoint.params


def initial_params(swarm: Path, name: str) -> dict[str, np.ndarray]:
    return load_file(str(out_dir(swarm, name) / "initial.safetensors"))


def flat(params: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([params[k].astype(np.float64).ravel() for k in sorted(params)])
