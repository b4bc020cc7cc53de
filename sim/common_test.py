"""The common test set in a run's summary: every node's final model, the swarm's consensus model
and the baselines, scored on the same held-out rows, as researchers compare frameworks.

The nodes score their merged model on it every round themselves (metrics records: "test"), the
baselines theirs as they train (`node.baselines`: a curve, one score per round). Here: the
consensus model, the average of the honest nodes' final models weighted by their training
rows, scored on the test set scaled by the swarm's agreed scaler, and the summary's shapes.
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from node.baselines import Curve, Recipe, consensus_on_test
from node.dataset import CleanTable


def swarm_on_test(
    folder: Path,
    test_file: Path,
    test: CleanTable,
    per_node: Mapping[str, list[dict[str, Any]]],
    rows: Mapping[str, int],
    honest: Sequence[str],
    recipe: Recipe,
    baselines: Mapping[str, Any],
) -> dict[str, Any]:
    """summary.json's "test": which rows; each node's final model on them and the honest
    nodes' mean; the consensus model's; per round the honest nodes' mean, min and max, and
    FedAvg's global model when it ran (each baseline's own scores are under its "test")."""
    finals = {n: r[-1]["test"] for n, r in per_node.items() if r and r[-1].get("test")}
    scored = [n for n in honest if n in finals]
    return {
        "file": str(test_file),
        "rows": len(test.target),
        "dropped": dict(test.report.dropped),  # by the schema's cleaning, as at every node
        "nodes": finals,
        "mean": {
            "accuracy": _mean([finals[n]["accuracy"] for n in scored]),
            "auc": _mean([finals[n]["auc"] for n in scored]),
        },
        "consensus": consensus(folder, test, rows, scored, recipe),
        **per_round(per_node, honest, baselines),
    }


def consensus(
    folder: Path, test: CleanTable, rows: Mapping[str, int], names: Sequence[str], recipe: Recipe
) -> dict[str, Any] | None:
    """The row-weighted average of these nodes' final models (their last checkpoints) on the
    test set, scaled by the swarm's agreed scaler (None: no node left a checkpoint)."""
    finals = {n: params for n in names if (params := final_params(folder, n))}
    if not finals:
        return None
    out = folder / "nodes" / next(iter(finals)) / "out"
    scaler = json.loads((out / "scaler.json").read_text())  # agreed: every node holds the same
    result = consensus_on_test([(rows[n], p) for n, p in finals.items()], scaler, recipe, test)
    return {
        "accuracy": result.accuracy,
        "auc": result.auc,
        "loss": result.loss,
        "nodes": len(finals),
    }


def final_params(folder: Path, name: str) -> dict[str, np.ndarray] | None:
    """A node's final model: its newest checkpoint (`checkpoint/checkpoint-<r>.safetensors`)."""
    found = (folder / "nodes" / name / "out" / "checkpoint").glob("checkpoint-*.safetensors")
    by_round = {int(p.stem.split("-")[1]): p for p in found}
    return load_file(str(by_round[max(by_round)])) if by_round else None


def per_round(
    per_node: Mapping[str, list[dict[str, Any]]],
    honest: Sequence[str],
    baselines: Mapping[str, Any],
) -> dict[str, Any]:
    """Per round, the honest nodes' accuracy on the common test set (mean, min, max over the
    nodes that recorded the round), and FedAvg's when it ran."""
    by_round: dict[int, list[float]] = {}
    for n in honest:
        for r in per_node[n]:
            if r.get("test") is not None:
                by_round.setdefault(int(r["round"]), []).append(r["test"]["accuracy"])
    fedavg = (baselines.get("fedavg") or {}).get("test") or {}
    return {
        "per_round": [
            {
                "round": r,
                "mean": float(np.mean(accs)),
                "min": float(np.min(accs)),
                "max": float(np.max(accs)),
                "nodes": len(accs),
            }
            for r, accs in sorted(by_round.items())
        ],
        "fedavg_per_round": [
            {"round": h["round"], "accuracy": h["accuracy"]} for h in fedavg.get("per_round", [])
        ],
    }


# -- each baseline's "test" ------------------------------------------------------------------


def one_model(curve: Curve) -> dict[str, Any]:
    """A baseline of one model (centralized) on the test set: its final scores and each
    round's."""
    rounds = [
        {"round": r, "accuracy": e.accuracy, "auc": e.auc, "loss": e.loss}
        for r, e in enumerate(curve, 1)
    ]
    return {**{k: v for k, v in rounds[-1].items() if k != "round"}, "per_round": rounds}


def per_site(curves: Mapping[str, Curve]) -> dict[str, Any]:
    """Local only on the test set: each site's model, and per round (and final) the mean over
    the sites' models."""
    sites = list(curves.values())
    rounds = [
        {
            "round": r + 1,
            "accuracy": float(np.mean([c[r].accuracy for c in sites])),
            "auc": _mean([c[r].auc for c in sites]),
        }
        for r in range(len(sites[0]))
    ]
    return {
        "accuracy": rounds[-1]["accuracy"],
        "auc": rounds[-1]["auc"],
        "per_node": {site: c[-1].to_dict() for site, c in curves.items()},
        "per_round": rounds,
    }


def from_history(history: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """FedAvg on the test set, from its history (a NaN AUC, one class, becomes None)."""
    rounds = [
        {
            "round": h["round"],
            "accuracy": h["test_accuracy"],
            "auc": None if np.isnan(h["test_auc"]) else h["test_auc"],
            "loss": h["test_loss"],
        }
        for h in history
    ]
    return {**{k: v for k, v in rounds[-1].items() if k != "round"}, "per_round": rounds}


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
