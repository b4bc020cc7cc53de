"""The simulator's consortium on the embedded chain: the maximum epsilon set at deploy, each
node's X25519 key registered from its own account, and the privacy history `settle` returns."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.accounts import load_key_file
from ledger.backends import connect
from ledger.contract import Ledger
from sim.consortium import KEY_FILE, ConsortiumPlan, create_consortium, settle
from sim.errors import SimError

PEERS = {"a": "12D3KooWsimA", "b": "12D3KooWsimB", "c": "12D3KooWsimC"}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A swarm folder as init_swarm leaves it before the consortium: one folder per node."""
    for name in PEERS:
        (tmp_path / "nodes" / name).mkdir(parents=True)
    return tmp_path


def test_keys_maximum_and_privacy_history(folder: Path) -> None:
    keys = {"a": b"\x0a" * 32, "b": b"\x0b" * 32}  # c has none
    plan = ConsortiumPlan(rounds_per_epoch=1, min_reports=1, max_epsilon=6.5)
    with connect("embedded") as chain:
        manifest = create_consortium(chain, folder, PEERS, plan, x25519_keys=keys)
        contract = manifest["contract"]
        assert manifest["plan"]["max_epsilon"] == 6.5
        reader = Ledger(chain, contract)
        assert reader.state().max_epsilon == 6.5
        registered = {m.peer_id: m.x25519_key for m in reader.members()}
        assert registered == {PEERS["a"]: keys["a"], PEERS["b"]: keys["b"], PEERS["c"]: None}
        nodes = {
            name: Ledger(chain, contract, load_key_file(folder / "nodes" / name / KEY_FILE))
            for name in PEERS
        }
        nodes["a"].report(0, {PEERS["b"]: 1.0}, epsilon=2.0, delta=1e-5)
        nodes["a"].report(1, {}, epsilon=4.5, delta=1e-5)
        nodes["c"].report(0, {PEERS["a"]: 1.0})  # no DP
        settled = settle(folder, chain, {"ledger": manifest})
    assert settled["max_epsilon"] == 6.5
    members = settled["members"]
    assert members["a"]["privacy"] == [
        {"epoch": 0, "epsilon": 2.0, "delta": 1e-5},
        {"epoch": 1, "epsilon": 4.5, "delta": 1e-5},
    ]
    assert members["b"]["privacy"] == []
    assert members["c"]["privacy"] == [{"epoch": 0, "epsilon": None, "delta": 0.0}]
    assert not settled["audit_ok"]  # c trained without DP under a maximum
    assert [f["check"] for f in settled["findings"]] == ["privacy.max_epsilon"]


def test_no_maximum_by_default_and_keys_only_for_members(folder: Path) -> None:
    with connect("embedded") as chain:
        manifest = create_consortium(chain, folder, PEERS, ConsortiumPlan())
        assert Ledger(chain, manifest["contract"]).state().max_epsilon is None
        with pytest.raises(SimError, match="not members: z"):
            create_consortium(chain, folder / "2", PEERS, ConsortiumPlan(), {"z": b"\x01" * 32})
