"""Anvil goes down (state persisted) while the outbox holds writes; after the restart every
queued write lands exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ledger.accounts import dev_account, dev_accounts
from ledger.audit import run_audit
from ledger.backends.anvil import AnvilProcess
from ledger.backends.base import Chain
from ledger.backends.rpc import http_web3
from ledger.contract import DeployConfig, Ledger
from ledger.outbox import Outbox
from ledger.testing import dev_consortium, digest_of, peer_id

pytestmark = pytest.mark.integration


@pytest.fixture
def anvil(tmp_path: Path):  # type: ignore[no-untyped-def]
    proc = AnvilProcess(state_path=tmp_path / "anvil-state.json")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_outbox_survives_an_anvil_outage(anvil: AnvilProcess, tmp_path: Path) -> None:
    chain = Chain(name="anvil", w3=http_web3(anvil.url, timeout=3.0), dev_accounts=dev_accounts())
    config = DeployConfig(max_members=4, rounds_per_epoch=4, min_reports=1, grace_rounds=0)
    admin, members = dev_consortium(chain, 3, config)
    boxes = [Outbox(tmp_path / f"outbox-{i}.db", m) for i, m in enumerate(members)]

    for i, box in enumerate(boxes):  # rounds 0-1 land before the outage
        for r in (0, 1):
            box.enqueue_commit(r, digest_of(f"{i}:{r}"), 50)
        assert box.flush().sent == 2

    anvil.stop()  # SIGTERM: Anvil writes its state file
    for i, box in enumerate(boxes):  # the node keeps training and queueing
        for r in (2, 3, 4):
            box.enqueue_commit(r, digest_of(f"{i}:{r}"), 50)
        box.enqueue_report(0, {peer_id(j + 1): float(j + 1) for j in range(3) if j != i})
        result = box.flush()
        assert result.chain_down and result.sent == 0 and result.pending == 4

    anvil.restart()  # same port, state loaded
    for box in boxes:
        result = box.flush()
        assert not result.chain_down and result.pending == 0, result
        assert result.sent + result.duplicates == 4
    for box in boxes:  # a second flush has nothing to send: nothing lands twice
        assert box.flush().sent == 0

    for m in members:
        info = m.member(m.sender_address)
        assert info is not None and (info.next_round, info.next_epoch) == (5, 1)
        assert m.committed_word(m.sender_address, 0) == 0b11111
    per_key = Counter((member, c.round) for member, c, _ in admin.commitments())
    assert len(per_key) == 15 and set(per_key.values()) == {1}
    assert len(admin.reports(0)) == 3
    admin.finalize(0)
    assert run_audit(admin).ok


def test_anvil_process_is_stopped_and_restarted_cleanly(tmp_path: Path) -> None:
    proc = AnvilProcess(state_path=tmp_path / "s.json")
    proc.start()
    port = proc.port
    chain = Chain(name="anvil", w3=http_web3(proc.url), dev_accounts=[])
    ledger = Ledger.deploy(chain, dev_account(0))
    proc.restart()
    assert proc.port == port and proc.running
    assert ledger.state().member_count == 0  # the contract survived the restart
    proc.stop()
    assert not proc.running
    assert (tmp_path / "s.json").stat().st_size > 0
