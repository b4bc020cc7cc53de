"""The run's cross-site matrix from the nodes' files: names for peer IDs, a None where a model
never arrived, and every row's digest checked against the row and the chain."""

import json
from pathlib import Path

from node.cross_site import FILE, document
from sim.cross_site import cross_site_matrix

PEERS = {"a": "12D3KooWa", "b": "12D3KooWb", "c": "12D3KooWc"}


def _node(folder: Path, name: str, doc: dict | None) -> None:  # type: ignore[type-arg]
    out = folder / "nodes" / name / "out"
    out.mkdir(parents=True)
    (out / "peer.json").write_text(json.dumps({"name": name, "peer_id": PEERS[name]}))
    if doc is not None:
        (out / FILE).write_text(json.dumps(doc, indent=1))


def _row(evaluator: str, accuracy: float) -> dict:  # type: ignore[type-arg]
    """A row without c's model (c was killed before the end)."""
    scores = {"accuracy": accuracy, "auc": 0.75}
    return {
        "evaluator": PEERS[evaluator],
        "evaluated_on": "validation",
        "rows": 10,
        "models": {PEERS["a"]: scores, PEERS["b"]: {"accuracy": 0.5, "auc": None}},
        "consensus": {"accuracy": 0.625, "auc": 0.8},
        "missing": [PEERS["c"]],
    }


def test_rows_are_named_columns_hold_every_node_and_the_consensus(tmp_path):
    _node(tmp_path, "a", document("a", PEERS["a"], _row("a", 0.875)))
    _node(tmp_path, "b", document("b", PEERS["b"], _row("b", 0.25)))
    _node(tmp_path, "c", None)
    matrix = cross_site_matrix(tmp_path, ["a", "b", "c"], None)
    assert matrix["columns"] == ["a", "b", "c", "consensus"]
    assert matrix["accuracy"] == {
        "a": {"a": 0.875, "b": 0.5, "c": None, "consensus": 0.625},
        "b": {"a": 0.25, "b": 0.5, "c": None, "consensus": 0.625},
    }
    assert matrix["auc"]["b"] == {"a": 0.75, "b": None, "c": None, "consensus": 0.8}
    a, c = matrix["nodes"]["a"], matrix["nodes"]["c"]
    assert (a["rows"], a["missing"], a["digest_matches_row"]) == (10, ["c"], True)
    assert a["on_chain"] is None  # no chain
    assert c == {"skipped": f"no {FILE}: the node did not finish", "digest": None}


def test_a_row_that_is_not_its_digest_or_not_on_chain_is_flagged(tmp_path):
    honest = document("a", PEERS["a"], _row("a", 0.875))
    edited = document("b", PEERS["b"], _row("b", 0.25))
    edited["row"]["models"][PEERS["a"]]["accuracy"] = 0.9  # changed after its digest
    _node(tmp_path, "a", honest)
    _node(tmp_path, "b", edited)
    _node(tmp_path, "c", document("c", PEERS["c"], None, "no validation split"))
    settled = {"members": {
        "a": {"evaluation": "0x" + honest["digest"]},
        "b": {"evaluation": "0x" + edited["digest"]},
        "c": {"evaluation": None},
    }}  # fmt: skip
    nodes = cross_site_matrix(tmp_path, ["a", "b", "c"], settled)["nodes"]
    assert (nodes["a"]["digest_matches_row"], nodes["a"]["on_chain"]) == (True, True)
    assert (nodes["b"]["digest_matches_row"], nodes["b"]["on_chain"]) == (False, True)
    assert nodes["c"] == {"skipped": "no validation split", "digest": None}
    settled["members"]["a"]["evaluation"] = "0x" + "00" * 32
    assert cross_site_matrix(tmp_path, ["a", "b", "c"], settled)["nodes"]["a"]["on_chain"] is False
