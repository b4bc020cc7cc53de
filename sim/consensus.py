"""Consensus distance: how far apart the nodes' published models are, round by round (from the
`models/round-<r>.safetensors` files each node keeps in a simulated run)."""

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def models_folder(folder: Path, name: str) -> Path:
    return folder / "nodes" / name / "out" / "models"


def consensus_at(folder: Path, names: list[str], round_: int) -> float | None:
    """The mean distance of the nodes' round-`round_` models to their average, over the nodes
    that published one; None with fewer than two."""
    flats = []
    for n in names:
        path = models_folder(folder, n) / f"round-{round_}.safetensors"
        if path.exists():
            params = load_file(str(path))
            flats.append(np.concatenate([params[k].ravel() for k in sorted(params)]))
    if len(flats) < 2:
        return None
    stacked = np.stack(flats).astype(np.float64)
    centre = stacked.mean(axis=0)
    return float(np.linalg.norm(stacked - centre, axis=1).mean())


def consensus_distance(folder: Path, names: list[str]) -> list[dict[str, float]]:
    """Per round: the mean distance of the nodes' published models to their average."""
    rounds = sorted(
        {
            int(p.stem.split("-")[1])
            for n in names
            for p in models_folder(folder, n).glob("round-*.safetensors")
        }
    )
    out = []
    for r in rounds:
        distance = consensus_at(folder, names, r)
        if distance is not None:
            out.append({"round": r, "distance": distance})
    return out
