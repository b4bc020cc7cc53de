"""Own-site and all-site scores of a run's per-site models (summary.json "heterogeneity").

Under label shift a model can serve its own hospital well and the others badly, or the other
way round, so each site's final model is scored twice: on its own validation split ("own") and
on every site's, the mean of the per-site metrics ("all", FLamby's protocol). The swarm's
models come from the nodes' last checkpoints (a personalized node's local part is there and
nowhere else: the simulator, which holds every site's rows, scores it without any node sending
it), local only's from `node.baselines.local_only_matrix`.
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from node.baselines import EvalResult, Recipe, Scaler, models_at_every_site
from node.dataset import load_schema, load_table
from sim.common_test import final_params

# Every score per site and mean, in the report's column order.
KEYS = ("own_accuracy", "own_auc", "all_accuracy", "all_auc")
# summary.json "heterogeneity": the methods compared, in the report's order.
METHODS = {"swarm": "swarm", "personalized_swarm": "personalized swarm", "local_only": "local only"}


def swarm_matrix(
    folder: Path,
    names: Sequence[str],
    files: Mapping[str, Path],
    schema: Path,
    recipe: Recipe,
) -> dict[str, dict[str, EvalResult]]:
    """Each node's final model (its last checkpoint, with the scaling it trained with) scored
    on every node's validation split (the recipe's fraction and seed: the nodes' own splits):
    model node -> validation node -> scores. A node without a checkpoint has no row."""
    models = {}
    for n in names:
        params = final_params(folder, n)
        if params is not None:
            scaling = (folder / "nodes" / n / "out" / "scaler.json").read_text()
            models[n] = (params, Scaler.from_dict(json.loads(scaling)))
    data_schema = load_schema(schema)
    tables = {n: load_table(files[n], data_schema) for n in names}
    return models_at_every_site(models, tables, recipe)


def site_scores(matrix: Mapping[str, Mapping[str, EvalResult]]) -> dict[str, Any]:
    """Per model site its own-site and all-site accuracy and AUC (a site whose validation
    split has one class has no AUC and is left out of the AUC means), and their means over
    the sites."""
    per_site = {}
    for site, row in matrix.items():
        per_site[site] = {
            "own_accuracy": row[site].accuracy,
            "own_auc": row[site].auc,
            "all_accuracy": float(np.mean([e.accuracy for e in row.values()])),
            "all_auc": _mean([e.auc for e in row.values()]),
        }
    mean = {k: _mean([s[k] for s in per_site.values()]) for k in KEYS}
    return {"per_site": per_site, "mean": mean}


def over_seeds(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The seeds' "heterogeneity" sections averaged: per method, per site and mean, each
    score's mean over the seeds that have it."""
    out: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        scored = [r[method] for r in runs if r.get(method)]
        if not scored:
            continue
        sites = list(scored[0]["per_site"])
        out[method] = {
            "per_site": {
                site: {k: _mean([s["per_site"][site][k] for s in scored]) for k in KEYS}
                for site in sites
            },
            "mean": {k: _mean([s["mean"][k] for s in scored]) for k in KEYS},
            "seeds": len(scored),
        }
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
