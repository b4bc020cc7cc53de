"""The audit rebuilds everything from events and names every disagreement."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from ledger.audit import check_models, run_audit, write_audit
from ledger.contract import Ledger
from ledger.events import Event, EventDecoder
from ledger.testing import digest_of, peer_id
from ledger.views import Commitment
from tests.unit.ledger.support import SCORE, Ctx, close_epoch


def _history(ctx: Ctx) -> None:
    """Two finalized epochs with funding, a deactivation, a reactivation and a withdrawal."""
    ctx.admin.fund(2 * 10**18)
    ctx.members[0].report_fixed(0, {1: 2 * SCORE, 2: SCORE})
    ctx.members[3].report_fixed(0, {1: 4 * SCORE, 2: -SCORE, 4: SCORE})
    ctx.members[4].report_fixed(0, {2: 3 * SCORE})
    close_epoch(ctx, 0)
    ctx.admin.finalize(0)
    ctx.admin.deactivate(ctx.addresses[4])
    ctx.admin.set_reward_per_epoch(5 * 10**17)
    ctx.members[1].withdraw()
    ctx.members[0].report_fixed(1, {1: SCORE, 3: SCORE})
    ctx.members[2].report_fixed(1, {1: 3 * SCORE, 3: 2 * SCORE})
    close_epoch(ctx, 1, who=[0, 1, 2])
    ctx.admin.finalize(1)
    ctx.admin.register(ctx.addresses[4], "back", "hospital 5 again")


def test_audit_of_a_consistent_history_is_clean(ctx: Ctx, tmp_path: Path) -> None:
    _history(ctx)
    report = run_audit(ctx.admin)
    assert report.ok, report.findings
    assert report.epochs_finalized == 2
    assert report.funded == 2 * 10**18
    assert report.funded == report.owed + report.paid + report.pool
    by_member = {m.address: m for m in report.members}
    assert by_member[ctx.addresses[4]].name == "hospital 5 again"
    assert by_member[ctx.addresses[1]].paid > 0
    scored = {(s.epoch, s.member) for s in report.scores}
    assert (0, ctx.addresses[2]) in scored and (0, ctx.addresses[4]) not in scored  # 1 report
    write_audit(report, tmp_path)
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert doc["ok"] is True and doc["commitments"] == len(report.commitments)
    with (tmp_path / "members.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["address"] for r in rows] == ctx.addresses
    assert (tmp_path / "scores.csv").exists() and (tmp_path / "commitments.csv").exists()


def test_audit_names_views_that_disagree_with_events(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    _history(ctx)
    real_member = Ledger.member
    real_word = Ledger.committed_word
    victim = ctx.addresses[2]

    def lying_member(self: Ledger, address: str):  # type: ignore[no-untyped-def]
        info = real_member(self, address)
        if info is not None and info.address == victim:
            return dataclasses.replace(info, owed=info.owed + 1)
        return info

    def lying_word(self: Ledger, member: str, word: int) -> int:
        return real_word(self, member, word) ^ (1 << 7 if member == victim and word == 0 else 0)

    monkeypatch.setattr(Ledger, "member", lying_member)
    monkeypatch.setattr(Ledger, "committed_word", lying_word)
    report = run_audit(ctx.admin)
    checks = {(f.check, f.subject.split(" ")[0]) for f in report.findings}
    assert ("member.owed", victim) in checks
    assert ("commitments.bitmap", victim) in checks
    assert not report.ok


def test_models_are_checked_against_committed_digests(ctx: Ctx, tmp_path: Path) -> None:
    m = ctx.members[0]
    good, bad = b"weights of round 0", b"weights of round 1"
    import hashlib

    m.commit_batch(
        [
            Commitment(0, hashlib.sha256(good).digest(), 1),
            Commitment(1, hashlib.sha256(b"what was really committed").digest(), 1),
        ]
    )
    by_address = tmp_path / m.sender_address.lower()
    by_address.mkdir()
    (by_address / "round-0.safetensors").write_bytes(good)
    (by_address / "round-1.safetensors").write_bytes(bad)
    (by_address / "round-7.safetensors").write_bytes(b"never committed")
    by_peer = tmp_path / peer_id(2)  # a member's folder named by its peer ID
    by_peer.mkdir()
    (by_peer / "model.bin").write_bytes(b"badly named")
    (tmp_path / "12D3KooWstranger").mkdir()
    report = run_audit(ctx.admin)
    findings = check_models(report, tmp_path)
    named = {(f.check, Path(f.subject).name) for f in findings}
    assert named == {
        ("models.digest", "round-1.safetensors"),
        ("models.uncommitted", "round-7.safetensors"),
        ("models.name", "model.bin"),
        ("models.member", "12D3KooWstranger"),
    }
    assert report.models_checked == 3 and not report.ok


def test_audit_rebuilds_every_commitment_exactly(ctx: Ctx) -> None:
    """Single commits, batches across bitmap words and commitAndReport, out of order."""
    import hashlib

    def d(label: str) -> bytes:
        return hashlib.sha256(label.encode()).digest()

    expected: dict[tuple[str, int], tuple[str, int, str]] = {}

    def note(member: Ledger, items: list[Commitment], tx_hash: str) -> None:
        for c in items:
            expected[(member.sender_address, c.round)] = ("0x" + c.digest.hex(), c.samples, tx_hash)

    a, b = ctx.members[0], ctx.members[1]
    note(a, [Commitment(5, d("a5"), 7)], a.commit(5, d("a5"), 7).tx_hash)
    batch = [Commitment(r, d(f"a{r}"), 1000 + r) for r in (0, 255, 256, 1000, 1)]
    note(a, batch, a.commit_batch(batch).tx_hash)
    both = [Commitment(r, d(f"b{r}"), r) for r in range(3)]
    note(b, both, b.commit_and_report(both, 0, {0: SCORE, 2: -SCORE}).tx_hash)
    report = run_audit(ctx.admin)
    assert report.ok, report.findings
    got = {(c.member, c.round): (c.digest, c.samples, c.tx_hash) for c in report.commitments}
    assert got == expected
    by_member = {m.address: m for m in report.members}
    assert (by_member[a.sender_address].commitments, by_member[a.sender_address].next_round) == (
        6,
        1001,
    )


def test_audit_reads_only_the_bitmap_words_events_mention(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Huge rounds cost the audit one view call per word they touch, not one per word up to
    them (every word below 2**40 would be ~4e9 calls)."""
    a, b = ctx.members[0], ctx.members[1]
    a.commit(2**33, digest_of("far"), 1)
    a.commit_batch([Commitment(r, digest_of(f"a{r}"), 1) for r in (3, 2**40, 2**40 + 1)])
    b.commit_and_report([Commitment(2**64 - 2, digest_of("last"), 1)], 0, {0: SCORE})
    real_word = Ledger.committed_word
    calls: list[tuple[str, int]] = []

    def counted_word(self: Ledger, member: str, word: int) -> int:
        calls.append((member, word))
        return real_word(self, member, word)

    monkeypatch.setattr(Ledger, "committed_word", counted_word)
    report = run_audit(ctx.admin)
    assert report.ok, report.findings
    assert sorted(calls) == sorted(
        [(a.sender_address, w) for w in (0, 2**33 >> 8, 2**40 >> 8)]
        + [(b.sender_address, (2**64 - 2) >> 8)]
    )
    by_member = {m.address: m for m in report.members}
    assert by_member[a.sender_address].next_round == 2**40 + 2
    assert by_member[b.sender_address].next_round == 2**64 - 1


def test_audit_reads_the_word_of_the_contracts_highest_round(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A contract that claims a round no event logged: the word of its nextRound - 1 is read
    (and disagrees), though no event mentions that word."""
    a = ctx.members[0]
    a.commit(3, digest_of("three"), 1)
    real_member, real_word = Ledger.member, Ledger.committed_word
    far = 2**40 + 5

    def ahead(self: Ledger, address: str):  # type: ignore[no-untyped-def]
        info = real_member(self, address)
        if info is not None and info.address == a.sender_address:
            return dataclasses.replace(info, next_round=far + 1)
        return info

    def extra_bit(self: Ledger, member: str, word: int) -> int:
        return real_word(self, member, word) | (1 << 5 if word == far >> 8 else 0)

    monkeypatch.setattr(Ledger, "member", ahead)
    monkeypatch.setattr(Ledger, "committed_word", extra_bit)
    report = run_audit(ctx.admin)
    assert sorted((f.check, f.subject) for f in report.findings) == [
        ("commitments.bitmap", f"{a.sender_address} rounds {2**40}-{2**40 + 255}"),
        ("member.next_round", a.sender_address),
    ]


def test_audit_checks_a_batch_round_range_against_its_records(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = ctx.members[0]
    a.commit_batch([Commitment(r, digest_of(f"a{r}"), 1) for r in (7, 3, 9)])
    real_decode = EventDecoder.decode

    def shifted(self: EventDecoder, log: Any) -> Event | None:
        event = real_decode(self, log)
        if event is not None and event.name == "ModelsCommitted":
            event.args["firstRound"] += 1
        return event

    monkeypatch.setattr(EventDecoder, "decode", shifted)
    report = run_audit(ctx.admin)
    assert [(f.check, f.expected, f.actual) for f in report.findings] == [
        ("event.round_range", "(3, 9)", "(4, 9)")
    ]
