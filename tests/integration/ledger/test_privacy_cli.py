"""The privacy side of the ledger on a real Anvil, through the auditor's CLI: a maximum
epsilon, members' X25519 keys, cumulative epsilons over epochs, one member past the maximum."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gossip.identity import create_x25519_key_file
from ledger.accounts import dev_account, write_key_file
from ledger.backends import connect
from ledger.contract import Ledger
from ledger.testing import digest_of
from medswarm.cli.ledger import app

pytestmark = pytest.mark.integration
runner = CliRunner()
WIDE = {"COLUMNS": "250"}  # rich wraps table cells to the terminal's width


def _run(*args: str, code: int = 0) -> str:
    """The command's stdout (and stderr, when it is expected to fail)."""
    result = runner.invoke(app, list(args), env=WIDE)
    assert result.exit_code == code, result.output
    return result.stdout if code == 0 else result.output


def test_budget_history_keys_and_a_member_past_the_maximum(tmp_path: Path) -> None:
    state = tmp_path / "chain.json"
    common = ["--chain", "anvil", "--state", str(state)]
    deploy = ["--dev-account", "0", "--rounds-per-epoch", "1", "--min-reports", "1"]
    address = _run("deploy", *common, *deploy).strip().splitlines()[-1]
    c = [*common, "--contract", address]
    names = {1: "St Mary", 2: "Riverside", 3: "Hilltop"}
    for i, name in names.items():
        _run("register", *c, "--dev-account", "0", "--member", dev_account(i).address,
             "--peer-id", f"12D3KooWpriv{i}", "--name", name)  # fmt: skip
    assert "NotAdmin" in _run("set-max-epsilon", *c, "--dev-account", "1", "--epsilon", "8", code=2)
    _run("set-max-epsilon", *c, "--dev-account", "0", "--epsilon", "8")

    # Members 1 and 2 register their X25519 keys themselves (2 from a key file, as a node does).
    public = {i: create_x25519_key_file(tmp_path / f"x25519-{i}.key") for i in (1, 2)}
    key_files = {i: str(tmp_path / f"x25519-{i}.key") for i in (1, 2)}
    _run("set-x25519-key", *c, "--dev-account", "1", "--x25519-key-file", key_files[1])
    eth_key = tmp_path / "member2.key"
    write_key_file(eth_key, dev_account(2))
    _run("set-x25519-key", *c, "--key-file", str(eth_key), "--x25519-key-file", key_files[2])

    # Three epochs of reports, as nodes send them; Hilltop passes the maximum in epoch 2.
    spends = {1: (1.0, 2.5, 4.0), 2: (0.5, 0.75, 1.0), 3: (3.0, 6.0, 9.5)}
    with connect("anvil", state_path=state) as chain:
        members = {i: Ledger(chain, address, dev_account(i)) for i in names}
        for epoch in range(3):
            for i, m in members.items():
                other = f"12D3KooWpriv{i % 3 + 1}"
                m.commit(epoch, digest_of(f"{i}:{epoch}"), 10)
                m.report(epoch, {other: 1.0}, epsilon=spends[i][epoch], delta=1e-5)
        for i in (1, 2):
            info = members[i].member(dev_account(i).address)
            assert info is not None and info.x25519_key == public[i]
        assert members[3].member(dev_account(3).address).x25519_key is None  # type: ignore[union-attr]
        assert members[1].state().max_epsilon == 8.0

    status = _run("status", *c)
    assert "max epsilon 8" in status
    rows = {
        line.split("│")[1].strip(): line for line in status.splitlines() if "12D3KooWpriv" in line
    }
    assert public[1].hex()[:8] in rows["0"] and public[2].hex()[:8] in rows["1"]
    assert "0:1 1:2.5 2:4" in rows["0"] and "OVER MAX" not in rows["0"]
    assert "0:3 1:6 2:9.5" in rows["2"] and "9.5 (delta 0.00001) OVER MAX" in rows["2"]
    doc = json.loads(_run("status", *c, "--json"))
    assert doc["state"]["max_epsilon"] == 8.0
    by_index = {m["index"]: m for m in doc["members"]}
    assert by_index[1]["x25519_key"] == "0x" + public[2].hex() and by_index[2]["x25519_key"] is None
    assert [p["epsilon"] for p in by_index[2]["privacy"]] == [3_000_000, 6_000_000, 9_500_000]

    out_dir = tmp_path / "audit"
    audit = _run("audit", *c, "--out", str(out_dir), code=1)
    hilltop = dev_account(3).address
    assert f"Hilltop ({hilltop})" in audit  # the members-over-maximum line
    assert "privacy.max_epsilon" in audit and f"{hilltop} epoch 2" in audit
    with (out_dir / "findings.csv").open() as f:
        findings = list(csv.DictReader(f))
    assert [(r["check"], r["subject"], r["actual"]) for r in findings] == [
        ("privacy.max_epsilon", f"{hilltop} epoch 2", "9.5")
    ]
    with (out_dir / "privacy.csv").open() as f:
        history = [(r["name"], r["epoch"], r["epsilon"]) for r in csv.DictReader(f)]
    assert [h for h in history if h[0] == "Hilltop"] == [
        ("Hilltop", "0", "3"), ("Hilltop", "1", "6"), ("Hilltop", "2", "9.5"),
    ]  # fmt: skip
    assert len(history) == 9

    _run("set-max-epsilon", *c, "--dev-account", "0", "--epsilon", "none")
    assert "max epsilon no maximum" in _run("status", *c)
    # The epoch-2 report stays past the maximum in force when it was made.
    assert "privacy.max_epsilon" in _run("audit", *c, "--out", str(out_dir), code=1)
