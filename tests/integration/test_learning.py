"""(b) The heart-disease swarm (four node processes, natural split) learns what pooled data
would teach, and beats what each hospital's records teach alone."""

import json
from pathlib import Path

import numpy as np
import pytest

from node.baselines import Recipe, local_only_cross_site
from node.config import load_config
from node.dataset import load_schema, load_table, split_validation
from node.scaling import Scaler, local_stats
from sim.swarm import RUN_FOLDER, init_swarm_scenario, run_swarm_folder
from tests.integration.swarm_support import QUIET, metrics, out_dir

pytestmark = pytest.mark.integration

ROUNDS = 20


def pooled_scaler(swarm, names) -> Scaler:
    train = []
    for name in names:
        cfg = load_config(swarm / "nodes" / name / "node.toml")
        table = load_table(cfg.data.path, load_schema(cfg.data.schema_file))
        split = split_validation(table, cfg.data.validation_fraction, cfg.data.split_seed)
        train.append(split.train_x)
    return Scaler.from_stats(local_stats(np.concatenate(train)))


def cross_site_accuracy(swarm: Path, names: list[str]) -> float:
    """Mean accuracy of each hospital's local-only model on every hospital's validation split
    (FLamby's protocol for local models), on the nodes' own splits and settings."""
    configs = {n: load_config(swarm / "nodes" / n / "node.toml") for n in names}
    schema = load_schema(configs[names[0]].data.schema_file)
    tables = {n: load_table(c.data.path, schema) for n, c in configs.items()}
    cfg = configs[names[0]]
    recipe = Recipe(
        model=cfg.model.name,
        hidden=cfg.model.hidden,
        settings=cfg.training.settings(),
        rounds=cfg.swarm.rounds,
        val_fraction=cfg.data.validation_fraction,
        split_seed=cfg.data.split_seed,
        model_seed=cfg.model.init_seed,
    )
    return float(np.mean([r.accuracy for r in local_only_cross_site(tables, recipe).values()]))


def test_swarm_matches_pooled_and_beats_local_only(tmp_path):
    init_swarm_scenario(tmp_path, rounds=ROUNDS)  # what `medswarm swarm init` writes: a ring
    [summary] = run_swarm_folder(tmp_path, QUIET)
    swarm, names = tmp_path / RUN_FOLDER, list(summary["nodes"])
    baselines = summary["baselines"]
    cross_site = cross_site_accuracy(swarm, names)
    print(summary["mean"], {k: (b["mean_accuracy"], b["mean_auc"]) for k, b in baselines.items()})

    for name in names:
        records = metrics(swarm, name)
        assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
        assert sum(bool(r["neighbours_reached"]) for r in records) >= ROUNDS - 1
    # Every hospital scaled with the swarm-wide statistics (gossip-averaged sums and counts),
    # exactly as if the records had been pooled.
    expected = pooled_scaler(swarm, names)
    for name in names:
        node_summary = json.loads((out_dir(swarm, name) / "summary.json").read_text())
        scaler = Scaler.from_dict(node_summary["scaler"])
        np.testing.assert_allclose(scaler.mean, expected.mean, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(scaler.std, expected.std, rtol=1e-6)
    # Within 3 points of one model trained on the pooled records.
    assert summary["mean"]["accuracy"] >= baselines["centralized"]["mean_accuracy"] - 0.03
    # Clearly better than a model trained on one hospital's records, scored on the consortium's
    # patients (FLamby's protocol for local models).
    assert summary["mean"]["accuracy"] >= cross_site + 0.05
    # And on each hospital's own patients it ranks them clearly better (AUC). Own-site accuracy
    # is not asserted: Switzerland is ~93% positive, so its local model wins by answering
    # "positive"; see the README.
    assert summary["mean"]["auc"] >= baselines["local_only"]["mean_auc"] + 0.05
