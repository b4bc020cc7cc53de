"""The outbox on the embedded chain: batching, duplicates as done, writer crashes, a chain
that is down, permanent rejections, and the worker thread."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from ledger.backends.rpc import connect_rpc
from ledger.contract import Ledger
from ledger.errors import OutboxError
from ledger.outbox import SCHEMA, Outbox
from ledger.privacy import NO_PRIVACY, PrivacyError
from ledger.scores import encode_entries
from ledger.testing import digest_of, peer_id
from tests.unit.ledger.support import Ctx


def _commit_events(ledger: Ledger) -> list[tuple[str, int]]:
    return [(member, c.round) for member, c, _ in ledger.commitments()]


def test_commits_and_report_go_out_as_one_transaction(ctx: Ctx, tmp_path: Path) -> None:
    member = ctx.members[0]
    box = Outbox(tmp_path / "outbox.db", member)
    for r in range(3):
        box.enqueue_commit(r, digest_of(f"m{r}"), 10)
    box.enqueue_report(0, {peer_id(2): 1.5, ctx.addresses[2]: -0.5})
    result = box.flush()
    assert (result.sent, result.pending, result.chain_down) == (4, 0, False)
    assert len(result.tx_hashes) == 1  # commitAndReport
    assert all(member.committed(member.sender_address, r) for r in range(3))
    info = member.member(member.sender_address)
    assert info is not None and info.next_epoch == 1
    assert {i.status for i in box.items()} == {"done"}
    assert box.flush().sent == 0  # nothing left


def _spends(ledger: Ledger) -> list[tuple[int, int, int]]:
    return [(p.epoch, p.epsilon, p.delta) for p in ledger.privacy_spent(ledger.sender_address)]


def test_reports_carry_the_privacy_spend(ctx: Ctx, tmp_path: Path) -> None:
    """Alone (report) and after commitments (commitAndReport), and with no scores at all."""
    member = ctx.members[0]
    box = Outbox(tmp_path / "outbox.db", member)
    box.enqueue_report(0, {peer_id(2): 1.0}, epsilon=1.5, delta=1e-5)
    box.enqueue_commit(0, digest_of("c0"), 10)
    box.enqueue_report(1, {}, epsilon=2.75, delta=1e-5)  # no neighbour arrived
    box.enqueue_report(2, {peer_id(3): 0.5})  # no DP
    stored = [(i.args["epsilon"], i.args["delta"]) for i in box.items() if i.kind == "report"]
    assert stored == [(1_500_000, 10**13), (2_750_000, 10**13), (NO_PRIVACY, 0)]
    result = box.flush()
    assert (result.sent, result.failed, len(result.tx_hashes)) == (4, 0, 3)
    assert _spends(member) == [(0, 1_500_000, 10**13), (1, 2_750_000, 10**13), (2, NO_PRIVACY, 0)]
    assert [r.entries for r in member.reports(1)] == [b""]


def test_a_report_queued_before_privacy_still_sends(ctx: Ctx, tmp_path: Path) -> None:
    """A row from an older outbox file (no epsilon, no delta) goes out as a no-DP report, and
    once only."""
    member = ctx.members[1]
    db = tmp_path / "outbox.db"
    with sqlite3.connect(db) as old:
        old.executescript(SCHEMA)
        old.execute(
            "INSERT INTO writes (kind, args, dedup_key, created_at, updated_at)"
            " VALUES ('report', ?, 'report:0', 0, 0)",
            (json.dumps({"epoch": 0, "scores": {peer_id(1): 2_000_000}}),),
        )
    box = Outbox(db, member)
    assert box.flush().sent == 1
    assert _spends(member) == [(0, NO_PRIVACY, 0)]
    assert member.reports(0)[0].entries == encode_entries({0: 2_000_000})
    box.retry_failed()
    assert box.flush().sent == 0 and box.items()[0].outcome == "sent"


def test_an_evaluation_digest_goes_out_once(ctx: Ctx, tmp_path: Path) -> None:
    """Alone, after the last commitments; again (a restart) it is no new write, and one the
    chain already has (sent before a crash) is recorded as a duplicate."""
    member = ctx.members[0]
    box = Outbox(tmp_path / "outbox.db", member)
    box.enqueue_commit(0, digest_of("c0"), 10)
    first = box.enqueue_evaluation(digest_of("row"))
    assert box.enqueue_evaluation(digest_of("row")) == first
    result = box.flush()
    assert (result.sent, len(result.tx_hashes)) == (2, 2)  # a commit, then the evaluation
    assert member.evaluation_of(member.sender_address) == digest_of("row")
    member.commit_evaluation(digest_of("sent before a crash"))
    box.enqueue_evaluation(digest_of("sent before a crash"))
    result = box.flush()
    assert (result.sent, result.duplicates, result.failed) == (0, 1, 0)
    assert [e.digest for e in member.evaluations()] == [
        digest_of("row"),
        digest_of("sent before a crash"),
    ]
    with pytest.raises(OutboxError, match="32 bytes"):
        box.enqueue_evaluation(b"short")


def test_an_outbox_file_from_before_evaluations_is_upgraded_with_its_rows(
    ctx: Ctx, tmp_path: Path
) -> None:
    member = ctx.members[1]
    db = tmp_path / "outbox.db"
    before = SCHEMA.replace(", 'evaluation'", "")
    assert before != SCHEMA
    with sqlite3.connect(db) as old:
        old.executescript(before)
        old.execute(
            "INSERT INTO writes (kind, args, dedup_key, created_at, updated_at)"
            " VALUES ('commit', ?, 'commit:0', 0, 0)",
            (json.dumps({"round": 0, "digest": digest_of("m0").hex(), "samples": 3}),),
        )
        with pytest.raises(sqlite3.IntegrityError):  # what the upgrade is for
            old.execute(
                "INSERT INTO writes (kind, args, created_at, updated_at)"
                " VALUES ('evaluation', '{}', 0, 0)"
            )
    box = Outbox(db, member)
    box.enqueue_evaluation(digest_of("row"))
    assert [(i.id, i.kind) for i in box.items()] == [(1, "commit"), (2, "evaluation")]
    assert box.flush().sent == 2
    assert member.committed(member.sender_address, 0)
    assert member.evaluation_of(member.sender_address) == digest_of("row")
    done = box.items()
    box.close()
    again = Outbox(db, member)  # the upgraded file opens as it is
    assert again.items() == done
    again.close()


def test_enqueue_rejects_a_spend_the_chain_cannot_take(ctx: Ctx, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", ctx.members[0])
    with pytest.raises(PrivacyError, match="negative"):
        box.enqueue_report(0, {peer_id(2): 1.0}, epsilon=-1.0)
    with pytest.raises(PrivacyError, match="above 1"):
        box.enqueue_report(0, {peer_id(2): 1.0}, epsilon=1.0, delta=2.0)
    assert box.pending_count() == 0


def test_enqueue_is_idempotent_per_round_and_epoch(ctx: Ctx, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", ctx.members[0])
    first = box.enqueue_commit(5, digest_of("a"), 1)
    assert box.enqueue_commit(5, digest_of("a"), 1) == first
    assert box.enqueue_report(0, {peer_id(2): 1.0}) == box.enqueue_report(0, {peer_id(2): 1.0})
    assert box.pending_count() == 2


class _Crash(Exception):
    pass


def test_writer_crash_after_send_lands_exactly_once(
    ctx: Ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = ctx.members[1]
    db = tmp_path / "outbox.db"
    box = Outbox(db, member)
    for r in (0, 1):
        box.enqueue_commit(r, digest_of(f"x{r}"), 10)
    box.enqueue_report(0, {peer_id(1): 2.0})

    def crash(*args: object) -> None:
        raise _Crash("killed between the send and the bookkeeping")

    monkeypatch.setattr(Outbox, "_mark", crash)
    with pytest.raises(_Crash):
        box.flush()  # the transaction landed, the outbox did not record it
    monkeypatch.undo()
    box.close()

    restarted = Outbox(db, member.as_account(ctx.chain.dev_accounts[2]))
    result = restarted.flush()
    assert result.duplicates == 3 and result.sent == 0 and result.pending == 0
    assert {i.outcome for i in restarted.items()} == {"duplicate"}
    mine = [e for e in _commit_events(member) if e[0] == member.sender_address]
    assert sorted(mine) == [(member.sender_address, 0), (member.sender_address, 1)]


def test_partial_duplicates_in_a_batch(ctx: Ctx, tmp_path: Path) -> None:
    member = ctx.members[2]
    member.commit(1, digest_of("already"), 5)  # sent outside the outbox
    box = Outbox(tmp_path / "outbox.db", member.as_account(ctx.chain.dev_accounts[3]))
    for r in (0, 1, 2):
        box.enqueue_commit(r, digest_of(f"r{r}"), 5)
    result = box.flush()
    assert (result.sent, result.duplicates, result.pending) == (2, 1, 0)
    assert sorted(r for a, r in _commit_events(member) if a == member.sender_address) == [0, 1, 2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_chain_down_keeps_items_and_does_not_block(ctx: Ctx, tmp_path: Path) -> None:
    dead = connect_rpc(f"http://127.0.0.1:{_closed_port()}", timeout=2.0)
    ledger = Ledger(dead, ctx.admin.address, ctx.chain.dev_accounts[1])
    box = Outbox(tmp_path / "outbox.db", ledger)
    box.enqueue_commit(0, digest_of("a"), 1)
    box.enqueue_commit(1, digest_of("b"), 1)
    result = box.flush()
    assert result.chain_down and result.pending == 2 and result.sent == 0
    assert result.error is not None
    items = box.items("pending")
    assert [i.attempts for i in items] == [1, 1] and items[0].last_error
    box.ledger = ctx.members[0]  # the chain is back
    assert box.flush().sent == 2


def test_rejected_writes_fail_without_blocking_the_queue(ctx: Ctx, tmp_path: Path) -> None:
    member = ctx.members[0]
    box = Outbox(tmp_path / "outbox.db", member)
    box.enqueue_report(0, {peer_id(1): 1.0})  # index 0 is the member itself: SelfScore
    box.enqueue_finalize(0)  # not closed yet: stays pending
    box.enqueue_withdraw()  # nothing owed: done
    result = box.flush()
    assert result.failed == 1
    failed = box.items("failed")
    assert len(failed) == 1 and "SelfScore" in (failed[0].last_error or "")
    pending = box.items("pending")
    assert [i.kind for i in pending] == ["finalize"]
    assert "EpochNotClosed" in (pending[0].last_error or "")
    done = box.items("done")
    assert [(i.kind, i.outcome) for i in done] == [("withdraw", "nothing")]
    assert box.retry_failed() == 1 and box.pending_count() == 2


def test_worker_thread_flushes_in_the_background(ctx: Ctx, tmp_path: Path) -> None:
    member = ctx.members[3]
    box = Outbox(tmp_path / "outbox.db", member)
    thread, stop = box.start_worker(interval=0.05)
    try:
        for r in range(4):
            box.enqueue_commit(r, digest_of(f"w{r}"), 3)
        deadline = time.monotonic() + 60
        while box.pending_count() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert box.pending_count() == 0
    assert all(member.committed(member.sender_address, r) for r in range(4))


def test_concurrent_flush_returns_at_once(ctx: Ctx, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", ctx.members[0])
    box.enqueue_commit(9, digest_of("z"), 1)
    acquired = box._flush_lock.acquire()
    try:
        assert acquired
        result = box.flush()  # another flush "is running": no wait, nothing sent
        assert result.sent == 0 and result.pending == 1
    finally:
        box._flush_lock.release()
    assert threading.active_count() >= 1
