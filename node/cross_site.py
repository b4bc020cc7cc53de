"""Cross-site evaluation of the swarm's final models: each hospital's row of the matrix.

After the last round every member floods its final model to every other (the runner does, over
`gossip.secure_sum.flood_available`); each member then scores every model that arrived, and
their consensus (the average weighted by training rows), on its own validation split. Its row,
written to out/cross_site.json, goes on the ledger as the sha256 of the row's canonical JSON,
so that anyone holding the file can check it against the chain.

A flooded model crossed a trust boundary: it is raw little-endian numbers, checked (length,
finite values, a positive row count) before it is used, never unpickled.
"""

import hashlib
import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from node.merge import weighted_sum
from node.params import Params, flatten, load_params, size_of, unflatten
from node.training import evaluate

FILE = "cross_site.json"
_ROWS = struct.Struct("<Q")  # a model's training row count, before its values


def encode_model(params: Params, samples: int) -> bytes:
    """A final model as a flood row: its training rows (uint64), then every tensor's values
    in the model's order as float32 (what the model holds: nothing is rounded)."""
    return _ROWS.pack(samples) + flatten(params).astype("<f4").tobytes()


def decode_model(row: bytes, like: Params) -> tuple[int, Params]:
    """(training rows, parameters shaped as `like`) of a flood row; ValueError saying why a row
    is unusable."""
    width = _ROWS.size + 4 * size_of(like)
    if len(row) != width:
        raise ValueError(f"{len(row)} bytes, expected {width} for this model")
    (samples,) = _ROWS.unpack_from(row)
    values = np.frombuffer(row, "<f4", offset=_ROWS.size)
    if samples == 0:
        raise ValueError("a model trained on 0 rows")
    if not np.isfinite(values).all():
        raise ValueError("non-finite parameters")
    return samples, unflatten(values, like)


def consensus(models: Sequence[tuple[int, Params]]) -> Params:
    """The models' average weighted by their training rows (in the given order: float sums
    depend on it)."""
    total = sum(samples for samples, _ in models)
    return weighted_sum([(samples / total, params) for samples, params in models])


def evaluate_row(
    net: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    evaluator: str,
    members: Sequence[str],
    models: Mapping[str, tuple[int, Params]],
) -> dict[str, Any]:
    """This hospital's row: every member's model that arrived (`models`: peer ID -> (training
    rows, parameters)) and their consensus, each loaded into `net` and scored on (x, y), this
    hospital's validation split; the members whose model is not there are `missing`."""

    def scores(params: Params) -> dict[str, float | None]:
        load_params(net, params)
        result = evaluate(net, x, y)
        return {"accuracy": _finite(result.accuracy), "auc": _finite(result.auc)}

    arrived = [m for m in members if m in models]
    return {
        "evaluator": evaluator,
        "evaluated_on": "validation",
        "rows": len(y),
        "models": {m: scores(models[m][1]) for m in arrived},
        "consensus": scores(consensus([models[m] for m in arrived])),
        "missing": [m for m in members if m not in models],
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def canonical_json(value: Any) -> bytes:
    """The one byte string of `value`: keys sorted, no spaces, ASCII, floats as Python writes
    them (the shortest text that reads back as the same number), no NaN."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.encode("ascii")


def row_digest(row: Mapping[str, Any]) -> str:
    """The sha256 (hex) of the row's canonical JSON: what the ledger holds for it."""
    return hashlib.sha256(canonical_json(row)).hexdigest()


def document(
    node: str, peer_id: str, row: dict[str, Any] | None, skipped: str = ""
) -> dict[str, Any]:
    """out/cross_site.json: the row and its digest, or (no row) why this node scored nothing."""
    if row is None:
        return {"node": node, "peer_id": peer_id, "row": None, "digest": None, "skipped": skipped}
    return {"node": node, "peer_id": peer_id, "row": row, "digest": row_digest(row)}
