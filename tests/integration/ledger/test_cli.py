"""The auditor's walkthrough on a managed Anvil whose state persists between commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.accounts import dev_account, write_key_file
from ledger.testing import digest_of
from medswarm.cli.ledger import app

pytestmark = pytest.mark.integration
runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_deploy_register_fund_status_audit_withdraw(tmp_path: Path) -> None:
    state = str(tmp_path / "chain.json")
    common = ["--chain", "anvil", "--state", state]
    address = _run(
        "deploy",
        *common,
        "--dev-account",
        "0",
        "--rounds-per-epoch",
        "1",
        "--min-reports",
        "1",
        "--grace-rounds",
        "0",
        "--reward-per-epoch",
        "1ether",
    )
    address = address.strip().splitlines()[-1]
    assert address.startswith("0x") and len(address) == 42
    c = [*common, "--contract", address]
    for i in (1, 2):
        _run("register", *c, "--dev-account", "0", "--member", dev_account(i).address,
             "--peer-id", f"12D3KooWcli{i}", "--name", f"Hospital {i}")  # fmt: skip
    _run("fund", *c, "--dev-account", "3", "--amount", "2ether")

    # the members write through the library (as nodes do), then anyone finalizes
    from ledger.backends import connect
    from ledger.contract import Ledger
    from ledger.views import Commitment

    models = tmp_path / "models"
    with connect("anvil", state_path=Path(state)) as chain:
        m1 = Ledger(chain, address, dev_account(1))
        m2 = Ledger(chain, address, dev_account(2))
        m1.commit_and_report([Commitment(0, digest_of("w1"), 5)], 0, {1: 3_000_000})
        m2.commit_and_report([Commitment(0, digest_of("w2"), 5)], 0, {0: 1_000_000})
        m1.commit(1, digest_of("w1b"), 5)
        m2.commit(1, digest_of("w2b"), 5)
        m1.commit_evaluation(digest_of("m1's cross-site row"))
    _run("finalize", *c, "--dev-account", "4", "--epoch", "0")

    status = json.loads(_run("status", *c, "--json"))
    assert status["state"]["member_count"] == 2
    assert [m["owed"] for m in status["members"]] == [25 * 10**16, 75 * 10**16]
    row = "0x" + digest_of("m1's cross-site row").hex()
    assert [[e["digest"] for e in m["evaluations"]] for m in status["members"]] == [[row], []]
    table = runner.invoke(app, ["status", *c], env={"COLUMNS": "250"}).stdout
    assert row[2:10] + "..." in table  # the evaluation column shows its first bytes

    key = tmp_path / "member2.key"
    write_key_file(key, dev_account(2))
    _run("withdraw", *c, "--key-file", str(key))

    out_dir = tmp_path / "audit"
    (models / dev_account(1).address).mkdir(parents=True)
    (models / dev_account(1).address / "round-0.safetensors").write_bytes(b"not w1")
    result = runner.invoke(app, ["audit", *c, "--out", str(out_dir)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    audited = json.loads((out_dir / "audit.json").read_text())
    assert audited["ok"] is True
    assert [m["evaluation"] for m in audited["members"]] == [row, None]
    assert row[2:10] + "..." in result.stdout
    assert "OK" in result.stdout

    bad = runner.invoke(app, ["audit", *c, "--out", str(out_dir), "--models", str(models)])
    assert bad.exit_code == 1
    assert "models.digest" in bad.stdout

    outsider = dev_account(6).address
    rejected = runner.invoke(
        app,
        [
            "register",
            *c,
            "--dev-account",
            "5",
            "--member",
            outsider,
            "--peer-id",
            "p",
            "--name",
            "n",
        ],
    )
    assert rejected.exit_code == 2
    assert "NotAdmin" in rejected.output


def test_close_epoch_by_admin_shows_in_the_audit(tmp_path: Path) -> None:
    state = str(tmp_path / "chain.json")
    common = ["--chain", "anvil", "--state", state]
    deployed = _run("deploy", *common, "--dev-account", "0", "--close-timeout", "0")
    c = [*common, "--contract", deployed.strip().splitlines()[-1]]
    _run("register", *c, "--dev-account", "0", "--member", dev_account(1).address,
         "--peer-id", "12D3KooWcli1", "--name", "Hospital 1")  # fmt: skip
    refused = runner.invoke(app, ["close-epoch", *c, "--dev-account", "1", "--epoch", "0"])
    assert refused.exit_code != 0 and "NotAdmin" in refused.output
    _run("close-epoch", *c, "--dev-account", "0", "--epoch", "0")
    out_dir = tmp_path / "audit"
    result = runner.invoke(app, ["audit", *c, "--out", str(out_dir)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "epochs closed by admin" in result.stdout
    audited = json.loads((out_dir / "audit.json").read_text())
    assert [(e["epoch"], e["by"]) for e in audited["epochs_closed_by_admin"]] == [
        (0, dev_account(0).address)
    ]
    assert json.loads(_run("status", *c, "--json"))["state"]["next_epoch"] == 1


def test_finalize_waits_for_reports_unless_an_admin_says_no_wait(tmp_path: Path) -> None:
    from ledger.backends import connect
    from ledger.contract import Ledger
    from ledger.views import Commitment

    state = str(tmp_path / "chain.json")
    common = ["--chain", "anvil", "--state", state]
    deployed = _run("deploy", *common, "--dev-account", "0", "--rounds-per-epoch", "2",
                    "--grace-rounds", "0", "--min-reports", "1")  # fmt: skip
    address = deployed.strip().splitlines()[-1]
    c = [*common, "--contract", address]
    for i in (1, 2):
        _run("register", *c, "--dev-account", "0", "--member", dev_account(i).address,
             "--peer-id", f"12D3KooWcli{i}", "--name", f"Hospital {i}")  # fmt: skip
    with connect("anvil", state_path=Path(state)) as chain:
        m1 = Ledger(chain, address, dev_account(1))
        m2 = Ledger(chain, address, dev_account(2))
        for m in (m1, m2):  # both past epoch 0's close round (2), neither at the window's end
            m.commit_batch(
                [Commitment(r, digest_of(f"{m.sender_address}{r}"), 5) for r in (0, 1, 2)]
            )
        m1.report_fixed(0, {1: 1_000_000})
    waiting = runner.invoke(app, ["finalize", *c, "--dev-account", "3", "--epoch", "0"])
    assert waiting.exit_code != 0 and "ReportsMissing" in waiting.output
    _run("finalize", *c, "--dev-account", "0", "--epoch", "0", "--no-wait")
    with connect("anvil", state_path=Path(state)) as chain:
        Ledger(chain, address, dev_account(2)).report_fixed(0, {0: 2_000_000})  # late
    out_dir = tmp_path / "audit"
    result = runner.invoke(app, ["audit", *c, "--out", str(out_dir)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "Hospital 2 epoch 0" in result.stdout
    audited = json.loads((out_dir / "audit.json").read_text())
    assert [(r["epoch"], r["member"]) for r in audited["late_reports"]] == [
        (0, dev_account(2).address)
    ]
