"""The ledger explorer shows the audit's figures: its JSON and CSV downloads equal what
`medswarm ledger audit` writes for the same chain, each figure leads to its event, it audits
again when the chain moves, it never signs, and it says clearly when it cannot audit."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ledger.accounts import dev_account
from ledger.audit import TABLE_FIELDS
from ledger.backends import Chain
from ledger.testing import dev_consortium
from medswarm.cli.ledger import app
from medswarm.web.explorer import AuditSource, create_app
from tests.explorer_support import (
    HOSPITALS,
    build_history,
    explorer,
    free_port,
    get,
    get_json,
)

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A saved chain, model files (one matches its commitment, one does not) and the CLI
    audit's files for both."""
    folder = tmp_path_factory.mktemp("explorer")
    state = folder / "anvil-state.json"
    contract = build_history(state)
    models = folder / "models"
    (models / dev_account(1).address).mkdir(parents=True)
    (models / dev_account(1).address / "round-0.safetensors").write_bytes(b"0:0")  # its digest
    (models / "12D3KooWexplorer02").mkdir()
    (models / "12D3KooWexplorer02" / "round-1.safetensors").write_bytes(b"not 1:1")
    out = folder / "audit"
    args = ["--chain", "anvil", "--state", str(state), "--contract", contract]
    result = runner.invoke(app, ["audit", *args, "--out", str(out), "--models", str(models)])
    assert result.exit_code == 1, result.output  # the mismatching model file
    return {"state": state, "contract": contract, "models": models, "out": out}


def test_the_explorer_serves_the_audits_figures(history: dict[str, Any]) -> None:
    out: Path = history["out"]
    audited = json.loads((out / "audit.json").read_text())
    # the history is what the comparison needs to mean something
    assert [m["name"] for m in audited["members"]] == HOSPITALS
    assert len(audited["scores"]) == 8 and len(audited["withdrawals"]) == 1
    assert [f["check"] for f in audited["findings"]] == ["models.digest"]
    args = ["--state", str(history["state"]), "--contract", history["contract"]]
    # a key in the environment is never read: the explorer takes no key, and this one is bad
    env = {"MEDSWARM_ETH_KEY": "not a key"}
    with explorer(*args, "--models", str(history["models"]), port=free_port(), env=env) as url:
        assert get_json(url + "api/audit.json") == audited
        whole = get_json(url + "api/explorer.json")
        assert whole["audit"] == audited and whole["block"] == audited["to_block"]
        for name in TABLE_FIELDS:
            rows = get_json(f"{url}api/{name}.json")
            text = get(f"{url}api/{name}.csv")
            assert text == (out / f"{name}.csv").read_bytes(), name
            parsed = list(csv.DictReader(io.StringIO(text.decode(), newline="")))
            if name in audited and isinstance(audited[name], list):
                assert rows == audited[name], name
            if name != "privacy":  # audit.json's privacy is fixed point, the CSV decimal
                assert parsed == [{k: _cell(v) for k, v in row.items()} for row in rows], name
            assert rows, f"{name} is empty: the test history should fill every table"
        commitments = get_json(url + "api/commitments.json")
        assert len(commitments) == audited["commitments"] == 20
        # every figure leads to its event
        score = audited["scores"][1]
        events = get_json(f"{url}api/tx/{score['tx_hash']}")
        assert events["block"] == score["block"]
        found = {(e["name"], e["args"].get("member")): e["args"] for e in events["events"]}
        assert found[("ScoreCombined", score["member"])]["score"] == score["score"]
        assert found[("RewardAccrued", score["member"])]["amount"] == score["reward"]
        member = audited["members"][3]
        registered = get_json(f"{url}api/tx/{member['registered_tx']}")["events"]
        assert [(e["name"], e["args"]["name"]) for e in registered] == [
            ("MemberRegistered", "V.A. Long Beach")
        ]
        gone = get_json(f"{url}api/tx/{member['deactivated_tx']}")["events"]
        assert [e["name"] for e in gone] == ["MemberDeactivated"] and not member["active"]
        assert _status(f"{url}api/tx/0x{'ab' * 32}") == 404
        assert _status(f"{url}api/nonsense.csv") == 404
        # read-only: nothing but GET and HEAD anywhere
        for path in ("", "api/head", "api/audit.json", "api/members.csv", f"api/tx/0x{'0' * 64}"):
            assert _status(url + path, method="POST") == 405, path


def _cell(value: Any) -> str:
    """A JSON value as csv.DictWriter writes it."""
    return "" if value is None else str(value)


def _status(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30):
            return 200
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_explorer_has_no_write_route_and_takes_no_key() -> None:
    source = AuditSource(SimpleNamespace(account=None))  # type: ignore[arg-type]
    methods = {m for route in create_app(source).routes for m in getattr(route, "methods", [])}
    assert methods == {"GET", "HEAD"}
    command = typer.main.get_command(app).commands["explorer"]  # type: ignore[attr-defined]
    assert {p.name for p in command.params} == {"contract", "chain", "state", "models", "port"}
    with pytest.raises(Exception, match="reads only"):
        AuditSource(SimpleNamespace(account=dev_account(0)))  # type: ignore[arg-type]


def test_the_explorer_audits_again_when_the_chain_moves(chain: Chain) -> None:
    admin, members = dev_consortium(chain, 2)
    assert chain.url is not None
    with explorer("--chain", chain.url, "--contract", admin.address, port=free_port()) as url:
        before = get_json(url + "api/audit.json")
        assert before["funded"] == 0 and before["to_block"] == get_json(url + "api/head")["block"]
        funded = admin.fund(5 * 10**17)
        assert get_json(url + "api/head")["block"] == funded.block_number
        after = get_json(url + "api/audit.json")
        assert after["to_block"] == funded.block_number > before["to_block"]
        assert after["funded"] == 5 * 10**17
        assert [f["tx_hash"] for f in get_json(url + "api/fundings.json")] == [funded.tx_hash]


def test_clear_errors_when_the_explorer_cannot_audit(chain: Chain) -> None:
    assert chain.url is not None
    nobody = dev_account(7).address  # an account: no code there
    result = runner.invoke(app, ["explorer", "--chain", chain.url, "--contract", nobody])
    assert result.exit_code == 2
    assert f"no contract at {nobody}" in result.output
    down = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["explorer", "--chain", down, "--contract", nobody])
    assert result.exit_code == 2
    assert "error:" in result.output and "rpc" in result.output, result.output
    result = runner.invoke(app, ["explorer", "--state", "/nonexistent.json", "--contract", nobody])
    assert result.exit_code == 2 and "no Anvil state file" in result.output
