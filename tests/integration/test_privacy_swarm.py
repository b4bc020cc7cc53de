"""Privacy end to end through the simulator, on real libp2p hosts:

- in-process: the four heart-disease hospitals with secure aggregation, DP-SGD on two of them,
  one node killed and restarted mid-run; the scaler every node agreed on equals pandas on the
  pooled training rows; budgets, the audit and the sums in every record;
- node processes on a real Anvil: the consortium's maximum epsilon, every member's spend on
  chain equal to what its accountant said, and a clean audit.
"""

import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from node.config import load_config
from node.dataset import load_schema, load_table, split_validation
from node.metrics import read_records
from sim.local_swarm import HEART_DISEASE
from sim.run import run_scenario
from tests.integration.test_sim import SITES

pytestmark = pytest.mark.integration

PRIVATE = ["cleveland", "va"]
SECURE_INPROC = f"""
name = "private-inproc"
backend = "inproc"
rounds = 8
{SITES}
[topology]
kind = "full"
[timeouts]
fetch_seconds = 8
[baselines]
local_only = false
centralized = false
fedavg = false
[privacy]
target_epsilon = 3.0
nodes = {json.dumps(PRIVATE)}
audit = true
[[faults]]
kind = "kill"
node = "hungarian"
at = 3
restart = 5
"""
ON_CHAIN = f"""
name = "private-chain"
backend = "process"
rounds = 6
{SITES}
[topology]
kind = "full"
[chain]
backend = "anvil"
rounds_per_epoch = 2
max_epsilon = 4.0
[baselines]
local_only = false
centralized = false
fedavg = false
[privacy]
target_epsilon = 6.0
secure_aggregation = true
audit = false
"""


def records(folder, name):
    return read_records(folder / "nodes" / name / "out" / "metrics.jsonl")


@pytest.fixture(scope="module")
def inproc(tmp_path_factory):
    folder = tmp_path_factory.mktemp("private")
    path = folder / "scenario.toml"
    text = SECURE_INPROC.format(data=HEART_DISEASE)
    path.write_text(text.replace("[privacy]", "[privacy]\nsecure_aggregation = true"))
    [summary] = run_scenario(path, folder / "run", Console(quiet=True))
    return folder / "run", summary


def test_every_node_scales_with_the_pooled_statistics_to_float64_rounding(inproc):
    folder, summary = inproc
    schema = load_schema(HEART_DISEASE / "schema.toml")
    train = []
    for name in summary["nodes"]:
        cfg = load_config(folder / "nodes" / name / "node.toml")
        table = load_table(cfg.data.path, schema)
        train.append(
            split_validation(table, cfg.data.validation_fraction, cfg.data.split_seed).train_x
        )
    pooled = pd.DataFrame(np.concatenate(train))
    for name in summary["nodes"]:
        scaler = json.loads((folder / "nodes" / name / "out" / "scaler.json").read_text())
        np.testing.assert_allclose(scaler["mean"], pooled.mean(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(scaler["std"], pooled.std(ddof=0), rtol=1e-12, atol=1e-12)


def test_budgets_are_spent_where_dp_is_on_and_nowhere_else(inproc):
    folder, summary = inproc
    for name, node in summary["nodes"].items():
        spent = [r["privacy"] for r in records(folder, name)]
        if name in PRIVATE:
            epsilons = [p["epsilon"] for p in spent]
            assert epsilons == sorted(epsilons) and 0 < epsilons[-1] <= 3.0 + 1e-9
            assert node["epsilon"] == epsilons[-1] and spent[-1]["delta"] > 0
        else:
            assert spent == [None] * len(spent) and node["epsilon"] is None
    privacy = summary["privacy"]
    assert privacy["secure_aggregation"] is True
    for row in privacy["nodes"].values():
        assert 0.0 <= row["mia_auc"] <= 1.0 and 0.0 <= row["mia_auc_calibrated"] <= 1.0
        assert row["mia_members"] > row["mia_non_members"] > 0


def test_secure_rounds_merge_every_neighbour_and_survive_a_kill(inproc):
    folder, summary = inproc
    for name in summary["nodes"]:
        rs = records(folder, name)
        assert [r["round"] for r in rs] == list(range(1, 9))
        # Everyone up: each node merged the sum of all three neighbours' models.
        calm = [r for r in rs if r["round"] in (1, 2, 7, 8)]
        assert all(len(r["neighbours_reached"]) == 3 for r in calm), name
    hungarian = records(folder, "hungarian")
    assert any(r.get("resumed_from") for r in hungarian)  # it came back from its checkpoint
    others = [records(folder, n) for n in ("cleveland", "switzerland", "va")]
    # While it was down the others went on with two neighbours: dropped, not stuck.
    assert any(len(r["neighbours_reached"]) == 2 for rs in others for r in rs)


@pytest.fixture(scope="module")
def on_chain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chain")
    path = folder / "scenario.toml"
    path.write_text(ON_CHAIN.format(data=HEART_DISEASE))
    [summary] = run_scenario(path, folder / "run", Console(quiet=True))
    return folder / "run", summary


def test_the_spend_on_chain_is_what_each_accountant_said_and_the_audit_is_clean(on_chain):
    folder, summary = on_chain
    ledger = summary["ledger"]
    assert ledger["audit_ok"], ledger["findings"]
    assert ledger["max_epsilon"] == 4.0
    for name, member in ledger["members"].items():
        rs = {r["round"]: r["privacy"] for r in records(folder, name)}
        # The consortium's maximum (4) caps the target (6), and every epoch report carries it.
        assert rs[6]["budget"] == 4.0 and rs[6]["epsilon"] <= 4.0 + 1e-9
        on_chain_spend = {p["epoch"]: p["epsilon"] for p in member["privacy"]}
        for epoch, epsilon in on_chain_spend.items():
            last_round = min(2 * epoch + 1, 6)
            assert epsilon == pytest.approx(rs[last_round]["epsilon"], abs=1e-6), (name, epoch)
        assert sorted(on_chain_spend) == [0, 1, 2, 3]
