"""The cross-site evaluation end to end on the inproc backend (real libp2p hosts): four
heart-disease hospitals score every hospital's final model and the consensus on their own
validation splits; each row's digest is on an Anvil chain and in the audit. With a hospital
killed for good, its model is missing from every other row and the rest is complete."""

import csv
import json

import pytest
from rich.console import Console

from node.cross_site import row_digest
from sim.run import run_scenario
from tests.integration.test_sim import SITES

pytestmark = pytest.mark.integration

NAMES = ["cleveland", "hungarian", "switzerland", "va"]
SCENARIO = (
    """
name = "cross-site"
backend = "inproc"
rounds = 3
"""
    + SITES
    + """
[topology]
kind = "full"

[evaluation]
cross_site = true
"""
)


def run(tmp_path, extra: str):
    from sim.local_swarm import HEART_DISEASE

    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO.replace("{data}", str(HEART_DISEASE)) + extra)
    [summary] = run_scenario(scenario, tmp_path / "out", Console(quiet=True))
    return tmp_path / "out", summary


def test_every_hospital_scores_every_model_and_commits_its_row(tmp_path):
    out, summary = run(tmp_path, '\n[chain]\nbackend = "anvil"\nrounds_per_epoch = 2\n')
    matrix = summary["cross_site"]
    assert matrix["columns"] == [*NAMES, "consensus"]
    for key in ("accuracy", "auc"):
        assert list(matrix[key]) == NAMES  # 4 rows of 4 models and the consensus
        assert all(list(row) == matrix["columns"] for row in matrix[key].values())
        assert all(v is not None for row in matrix[key].values() for v in row.values())
    for name in NAMES:
        # The diagonal: the hospital's own final model on its own split, as its last round.
        own = summary["nodes"][name]
        assert matrix["accuracy"][name][name] == own["accuracy"]
        assert matrix["auc"][name][name] == own["auc"]
        node = matrix["nodes"][name]
        assert node["missing"] == [] and node["digest_matches_row"] and node["on_chain"], node
        doc = json.loads((out / "nodes" / name / "out" / "cross_site.json").read_text())
        assert row_digest(doc["row"]) == doc["digest"] == node["digest"]
    ledger = summary["ledger"]
    assert ledger["audit_ok"], ledger["findings"]
    with (out / "audit" / "evaluations.csv").open() as f:
        committed = {r["name"]: r["digest"] for r in csv.DictReader(f)}
    assert committed == {n: "0x" + matrix["nodes"][n]["digest"] for n in NAMES}
    report = (out / "report.md").read_text()
    assert "## Cross-site evaluation" in report and "4 equal the digest" in report


def test_a_hospital_killed_for_good_is_missing_from_every_other_row(tmp_path):
    kill = '\n[[faults]]\nkind = "kill"\nnode = "va"\nat = 2\n'
    # The others linger for va's fetch of their last round, which never comes: not for long.
    _, summary = run(tmp_path, kill + "\n[timeouts]\nlinger_seconds = 4\n")
    assert not summary["nodes"]["va"]["finished"]
    matrix = summary["cross_site"]
    assert list(matrix["accuracy"]) == NAMES[:3]  # va wrote no row
    assert "did not finish" in matrix["nodes"]["va"]["skipped"]
    for name in NAMES[:3]:
        node = matrix["nodes"][name]
        assert node["missing"] == ["va"] and node["digest_matches_row"]
        assert node["on_chain"] is None  # no chain
        assert matrix["accuracy"][name]["va"] is None and matrix["auc"][name]["va"] is None
        scored = {k: v for k, v in matrix["accuracy"][name].items() if k != "va"}
        assert len(scored) == 4 and all(v is not None for v in scored.values())
        assert matrix["accuracy"][name][name] == summary["nodes"][name]["accuracy"]
