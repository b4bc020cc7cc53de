"""The run's privacy figures: each hospital's spent (epsilon, delta), and the privacy audit, a
curious neighbour's membership-inference attacks on the last model the hospital published
(node/privacy_audit.py), beside its accuracy.

The attacker is the hospital's first honest neighbour: it holds what a real one would, the
published model and its own model of that round (the calibrated attack's reference). Under
secure aggregation a neighbour never sees the published model, only a sum: the audit is then
what the hospital would leak without it (an upper bound).
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from node.config import NodeConfig, load_config


def spent(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The (epsilon, delta) a node's last record says it spent (None: no DP-SGD)."""
    for record in reversed(records):
        if record.get("privacy"):
            return dict(record["privacy"])
    return None


def _first_honest_neighbour(
    cfg: NodeConfig, names_by_peer: dict[str, str], honest: set[str]
) -> str | None:
    peers = sorted(addr.rsplit("/p2p/", 1)[1] for addr in cfg.node.neighbours)
    return next((names_by_peer[p] for p in peers if names_by_peer.get(p) in honest), None)


def audit(folder: Path, honest: list[str]) -> dict[str, dict[str, Any]]:
    """Per honest node, the attacks on its last published model by its first honest neighbour."""
    from node.privacy_audit import audit_node  # torch: only when there is an audit to run

    configs = {n: load_config(folder / "nodes" / n / "node.toml") for n in honest}
    names_by_peer = {}
    for name, cfg in configs.items():
        peer = json.loads((cfg.node.output_dir / "peer.json").read_text())["peer_id"]
        names_by_peer[peer] = name
    results = {}
    for name, cfg in configs.items():
        attacker = _first_honest_neighbour(cfg, names_by_peer, set(honest))
        found = audit_node(cfg, configs[attacker] if attacker else None)
        if found is not None:
            results[name] = {**found, "attacker": attacker}
    return results


def privacy_summary(
    folder: Path,
    honest: list[str],
    per_node: dict[str, list[dict[str, Any]]],
    nodes: dict[str, dict[str, Any]],
    run_audit: bool,
    secure_aggregation: bool,
) -> dict[str, Any]:
    """summary.json's "privacy": per node its budget and the audit, and their means."""
    attacks = audit(folder, honest) if run_audit else {}
    rows = {}
    for name in nodes:
        budget = spent(per_node[name]) or {}
        attack = attacks.get(name, {})
        rows[name] = {
            "epsilon": budget.get("epsilon"),
            "delta": budget.get("delta"),
            "budget": budget.get("budget"),
            "retired_at": budget.get("retired_at"),
            "accuracy": nodes[name]["accuracy"],
            "mia_auc": attack.get("auc"),
            "mia_auc_calibrated": attack.get("calibrated_auc"),
            "mia_members": attack.get("members"),
            "mia_non_members": attack.get("non_members"),
            "mia_round": attack.get("round"),
            "mia_attacker": attack.get("attacker"),
            "mia_skipped": attack.get("skipped"),  # why there is no attack on it
        }
    return {
        "secure_aggregation": secure_aggregation,
        "nodes": rows,
        "mean_mia_auc": _mean([rows[n]["mia_auc"] for n in honest]),
        "mean_mia_auc_calibrated": _mean([rows[n]["mia_auc_calibrated"] for n in honest]),
        "max_epsilon": max(
            (r["epsilon"] for r in rows.values() if r["epsilon"] is not None), default=None
        ),  # fmt: skip
    }


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
