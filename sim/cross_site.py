"""The cross-site matrix of a run (summary.json "cross_site"): each node's row from its
out/cross_site.json, peer IDs turned into node names, and each row's digest checked against
the row itself and, with a chain, against the one the node committed there.

Rows are evaluating hospitals; columns are every node's final model, then the consensus of
the final models that reached that hospital. A model that never reached it (its node was
down) is None in its row and named under the row's `missing`.
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from node.cross_site import FILE, row_digest

CONSENSUS = "consensus"


def cross_site_matrix(
    folder: Path, names: Sequence[str], settled: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The matrices of accuracy and AUC, and per evaluating node its digest and checks:
    `digest_matches_row` (the file's digest is its row's), `on_chain` (it is the latest the node
    committed; None without a chain)."""
    outs = {n: folder / "nodes" / n / "out" for n in names}
    peers = {json.loads((out / "peer.json").read_text())["peer_id"]: n for n, out in outs.items()}
    members = (settled or {}).get("members", {})
    columns = [*names, CONSENSUS]
    accuracy: dict[str, dict[str, float | None]] = {}
    auc: dict[str, dict[str, float | None]] = {}
    nodes: dict[str, dict[str, Any]] = {}
    for n, out in outs.items():
        path = out / FILE
        if not path.exists():
            nodes[n] = {"skipped": f"no {FILE}: the node did not finish", "digest": None}
            continue
        doc = json.loads(path.read_text())
        row = doc["row"]
        if row is None:
            nodes[n] = {"skipped": doc["skipped"], "digest": None}
            continue
        scored = {peers.get(p, p): s for p, s in row["models"].items()}
        scored[CONSENSUS] = row["consensus"]
        accuracy[n] = {c: scored[c]["accuracy"] if c in scored else None for c in columns}
        auc[n] = {c: scored[c]["auc"] if c in scored else None for c in columns}
        committed = (members.get(n) or {}).get("evaluation")
        nodes[n] = {
            "rows": row["rows"],
            "missing": [peers.get(p, p) for p in row["missing"]],
            "digest": doc["digest"],
            "digest_matches_row": doc["digest"] == row_digest(row),
            "on_chain": None if settled is None else committed == "0x" + doc["digest"],
        }
    return {"columns": columns, "accuracy": accuracy, "auc": auc, "nodes": nodes}
