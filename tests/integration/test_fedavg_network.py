"""FedAvg as a server process and one client process per site over libp2p: the same model as the
in-process baseline, and a failing client stops the run with its name instead of hanging it."""

import pytest
import torch

from node.baselines import Recipe, fedavg
from node.dataset import load_schema, load_table
from node.training import TrainSettings
from sim.fedavg_network import run_fedavg_network
from sim.local_swarm import HEART_DISEASE, HEART_SITES

pytestmark = pytest.mark.integration

ROUNDS = 4
RECIPE = Recipe(
    model="mlp",
    hidden=(16,),
    settings=TrainSettings(epochs=1, batch_size=32, lr=0.05, optimizer="sgd"),
    rounds=ROUNDS,
    val_fraction=0.25,
    split_seed=0,
    model_seed=0,
)
SCHEMA = HEART_DISEASE / "schema.toml"
SITES = {name: HEART_DISEASE / file for name, file in HEART_SITES.items()}


def test_networked_fedavg_matches_the_in_process_baseline(tmp_path):
    result = run_fedavg_network(SITES, SCHEMA, RECIPE, tmp_path / "run", timeout=120)

    schema = load_schema(SCHEMA)
    tables = {site: load_table(path, schema) for site, path in SITES.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the clients train; also many times faster for this tiny model
    try:
        expected, _ = fedavg(tables, RECIPE)
    finally:
        torch.set_num_threads(threads)
    assert set(result["per_node"]) == set(SITES)
    for site, want in expected.items():
        got = result["per_node"][site]
        assert got["n"] == want.n
        assert got["accuracy"] == pytest.approx(want.accuracy, abs=1e-6)
        assert got["auc"] == pytest.approx(want.auc, abs=1e-6)
        assert got["loss"] == pytest.approx(want.loss, abs=1e-6)
    assert result["wall_seconds"] > 0
    assert len(result["round_seconds"]) == ROUNDS
    assert [h["round"] for h in result["history"]] == list(range(1, ROUNDS + 1))
    assert sum(result["round_seconds"]) == pytest.approx(result["wall_seconds"])
    # The key files stay private: mode 0600, like every node's.
    for key in (tmp_path / "run").rglob("identity.key"):
        assert key.stat().st_mode & 0o777 == 0o600


def test_a_client_without_its_data_fails_the_run_naming_the_site(tmp_path):
    sites = {"cleveland": SITES["cleveland"], "nowhere": tmp_path / "missing.data"}
    with pytest.raises(RuntimeError, match=r"client nowhere failed") as failure:
        run_fedavg_network(sites, SCHEMA, RECIPE, tmp_path / "run", timeout=120)
    assert "missing.data: data file not found" in str(failure.value)
