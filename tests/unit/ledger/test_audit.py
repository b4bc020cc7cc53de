"""The audit rebuilds everything from events and names every disagreement."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from ledger.audit import TABLE_FIELDS, check_models, epoch_members, run_audit, write_audit
from ledger.contract import Ledger
from ledger.errors import AuditError
from ledger.events import Event, EventDecoder, read_events
from ledger.privacy import delta_to_fixed, epsilon_to_fixed
from ledger.testing import digest_of, peer_id
from ledger.views import Commitment
from tests.unit.ledger.support import SCORE, Ctx, close_epoch, wide_window


def _history(ctx: Ctx) -> None:
    """Two finalized epochs with funding, a deactivation, a reactivation and a withdrawal."""
    ctx.admin.fund(2 * 10**18)
    ctx.members[0].report_fixed(0, {1: 2 * SCORE, 2: SCORE})
    ctx.members[3].report_fixed(0, {1: 4 * SCORE, 2: -SCORE, 4: SCORE})
    ctx.members[4].report_fixed(0, {2: 3 * SCORE})
    close_epoch(ctx, 0)
    ctx.admin.finalize(0, wait_for_reports=False)
    ctx.admin.deactivate(ctx.addresses[4])
    ctx.admin.set_reward_per_epoch(5 * 10**17)
    ctx.members[1].withdraw()
    ctx.members[0].report_fixed(1, {1: SCORE, 3: SCORE})
    ctx.members[2].report_fixed(1, {1: 3 * SCORE, 3: 2 * SCORE})
    close_epoch(ctx, 1, who=[0, 1, 2])
    ctx.admin.finalize(1, wait_for_reports=False)
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


def test_every_figure_names_the_event_that_set_it(ctx: Ctx, tmp_path: Path) -> None:
    """Registration, deactivation, scores and rewards, withdrawals, funding and epochs each
    carry their event's block and transaction; the tables hold the same."""
    funded = ctx.admin.fund(2 * 10**18)
    ctx.members[0].commit_and_report([Commitment(0, digest_of("a0"), 3)], 0, {1: 2 * SCORE})
    ctx.members[2].report_fixed(0, {1: 4 * SCORE, 0: SCORE})
    ctx.members[3].report_fixed(0, {0: 3 * SCORE})
    close_epoch(ctx, 0)
    final = ctx.admin.finalize(0, wait_for_reports=False)
    paid = ctx.members[1].withdraw()
    gone = ctx.admin.deactivate(ctx.addresses[4])
    report = run_audit(ctx.admin)
    assert report.ok, report.findings
    events = read_events(ctx.chain.w3, ctx.admin.events, ctx.admin.address, 0)
    registered = {
        e.args["member"]: (e.block_number, e.tx_hash)
        for e in events
        if e.name == "MemberRegistered"
    }
    for m in report.members:
        assert (m.registered_block, m.registered_tx) == registered[m.address]
        assert m.registered_block > 0 and m.registered_tx.startswith("0x")
    last = report.members[4]
    assert (last.active, last.deactivated_block, last.deactivated_tx) == (
        False, gone.block_number, gone.tx_hash,
    )  # fmt: skip
    assert report.members[0].deactivated_tx == ""
    assert report.scores and {(s.block, s.tx_hash) for s in report.scores} == {
        (final.block_number, final.tx_hash)
    }
    assert [(e.epoch, e.status, e.tx_hash) for e in report.epochs] == [
        (0, "finalized", final.tx_hash)
    ]
    assert report.epochs[0].allocated == sum(s.reward for s in report.scores) > 0
    owed_to_1 = next(s.reward for s in report.scores if s.member == ctx.addresses[1])
    assert [(w.member, w.amount, w.tx_hash) for w in report.withdrawals] == [
        (ctx.addresses[1], owed_to_1, paid.tx_hash)
    ]
    assert [(f.source, f.amount, f.tx_hash) for f in report.fundings] == [
        (ctx.admin.sender_address, 2 * 10**18, funded.tx_hash)
    ]
    # close_epoch had everyone commit rounds 0-2: two rounds of epoch 0, one of the open epoch 1
    rows = {(r["epoch"], r["member"]): r for r in epoch_members(report)}
    assert sorted(rows) == sorted((e, m) for e in (0, 1) for m in ctx.addresses)
    assert {(r["epoch"], r["commitments"], r["status"], r["tx_hash"]) for r in rows.values()} == {
        (0, 2, "finalized", final.tx_hash), (1, 1, "open", ""),
    }  # fmt: skip
    scored = {(s.member, s.score, s.reward) for s in report.scores}
    assert {(m, r["score"], r["reward"]) for (e, m), r in rows.items() if e == 0} == scored | {
        (a, None, 0) for a in ctx.addresses if a not in {s.member for s in report.scores}
    }

    write_audit(report, tmp_path)
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert doc["withdrawals"][0]["tx_hash"] == paid.tx_hash
    assert doc["members"][1]["owed"] == 0 and doc["members"][1]["paid"] == owed_to_1
    for name in TABLE_FIELDS:
        with (tmp_path / f"{name}.csv").open() as f:
            assert list(csv.DictReader(f).fieldnames or []) == TABLE_FIELDS[name], name
    with (tmp_path / "scores.csv").open() as f:
        assert {r["tx_hash"] for r in csv.DictReader(f)} == {final.tx_hash}


def test_the_audit_refuses_an_address_without_a_contract(ctx: Ctx) -> None:
    with pytest.raises(AuditError, match="no contract at"):
        run_audit(Ledger(ctx.chain, ctx.addresses[0]))


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
    ctx = wide_window(ctx)
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
    ctx = wide_window(ctx)
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
    ctx = wide_window(ctx)
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


# ----- privacy: keys, the maximum epsilon and each member's budget history -----------------


def _spend(ledger: Ledger, epoch: int, subject: int, epsilon: float | None) -> None:
    ledger.report_fixed(epoch, {subject: SCORE}, epsilon_to_fixed(epsilon), delta_to_fixed(1e-5))


def test_a_clean_privacy_history_passes_and_is_written(ctx: Ctx, tmp_path: Path) -> None:
    a, b = ctx.members[0], ctx.members[1]
    ctx.admin.set_max_epsilon(8)
    a.set_x25519_key(bytes(range(32)))
    for epoch, eps in enumerate((1.5, 3.0, 3.0, 8.0)):  # equal is not a decrease; 8 <= 8
        _spend(a, epoch, 1, eps)
    _spend(b, 0, 0, 2.25)
    report = run_audit(ctx.admin)
    assert report.ok, report.findings
    assert report.max_epsilon == 8_000_000 and report.members_over_max == []
    assert [h.max_epsilon for h in report.max_epsilon_history] == [8_000_000]
    history = report.privacy_by_member()
    assert [(p.epoch, p.epsilon) for p in history[a.sender_address]] == [
        (0, 1_500_000), (1, 3_000_000), (2, 3_000_000), (3, 8_000_000),
    ]  # fmt: skip
    assert history[ctx.addresses[2]] == []
    keys = {m.address: m.x25519_key for m in report.members}
    assert keys[a.sender_address] == "0x" + bytes(range(32)).hex()
    assert keys[b.sender_address] is None

    write_audit(report, tmp_path)
    with (tmp_path / "privacy.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["member", "name", "epoch", "epsilon", "delta", "block", "tx_hash"]
    first = rows[0]
    assert (first["member"], first["name"], first["epoch"]) == (a.sender_address, "hospital 1", "0")
    assert (first["epsilon"], first["delta"]) == ("1.5", "0.00001")
    assert first["tx_hash"] == report.privacy[0].tx_hash and int(first["block"]) > 0
    assert [(r["name"], r["epsilon"]) for r in rows[-2:]] == [
        ("hospital 1", "8"),
        ("hospital 2", "2.25"),
    ]
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert doc["max_epsilon_history"][0]["max_epsilon"] == 8_000_000
    assert [(p["epoch"], p["epsilon"]) for p in doc["privacy"]][:2] == [
        (0, 1_500_000),
        (1, 3_000_000),
    ]
    with (tmp_path / "members.csv").open() as f:
        assert next(csv.DictReader(f))["x25519_key"] == "0x" + bytes(range(32)).hex()


def test_reports_past_the_maximum_in_force_are_flagged(ctx: Ctx, tmp_path: Path) -> None:
    over, no_dp, early = ctx.members[0], ctx.members[1], ctx.members[2]
    _spend(early, 0, 0, 50.0)  # before any maximum: fine
    ctx.admin.set_max_epsilon(8)
    _spend(over, 0, 1, 7.5)
    _spend(over, 1, 1, 9.25)
    _spend(no_dp, 0, 0, None)  # no DP while a maximum is set
    ctx.admin.set_max_epsilon(10)  # raising it later does not excuse epoch 1
    _spend(over, 2, 1, 9.5)
    ctx.admin.set_max_epsilon(None)
    _spend(no_dp, 1, 0, None)  # no maximum any more
    report = run_audit(ctx.admin)
    flagged = [(f.check, f.subject, f.expected, f.actual) for f in report.findings]
    assert flagged == [
        ("privacy.max_epsilon", f"{over.sender_address} epoch 1", "epsilon <= 8", "9.25"),
        ("privacy.max_epsilon", f"{no_dp.sender_address} epoch 0", "epsilon <= 8", "no DP"),
    ]
    assert report.members_over_max == [over.sender_address, no_dp.sender_address]
    assert [h.max_epsilon for h in report.max_epsilon_history] == [8_000_000, 10_000_000, 0]
    assert report.max_epsilon == 0 and not report.ok
    write_audit(report, tmp_path)
    with (tmp_path / "findings.csv").open() as f:
        assert [r["check"] for r in csv.DictReader(f)] == ["privacy.max_epsilon"] * 2
    with (tmp_path / "privacy.csv").open() as f:
        assert [r["epsilon"] for r in csv.DictReader(f) if r["member"] == no_dp.sender_address] == [
            "inf", "inf"
        ]  # fmt: skip


def test_a_decreasing_epsilon_is_flagged(ctx: Ctx) -> None:
    m, other = ctx.members[3], ctx.members[4]
    _spend(m, 0, 0, 2.0)
    _spend(other, 0, 0, 5.0)  # another member's larger spend is no reference for m
    _spend(m, 1, 0, 4.0)
    _spend(m, 2, 0, 3.5)
    _spend(m, 3, 0, None)  # no DP: infinite, not a decrease
    _spend(m, 4, 0, 6.0)  # after no DP, any finite epsilon is a decrease
    report = run_audit(ctx.admin)
    assert [(f.check, f.subject, f.expected, f.actual) for f in report.findings] == [
        (
            "privacy.epsilon_decreased",
            f"{m.sender_address} epoch 2",
            "epsilon >= 4 (epoch 1)",
            "3.5",
        ),
        (
            "privacy.epsilon_decreased",
            f"{m.sender_address} epoch 4",
            "epsilon >= no DP (epoch 3)",
            "6",
        ),
    ]


def test_keys_and_maximum_are_checked_against_the_views(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = ctx.members[1]
    m.set_x25519_key(b"\x01" * 32)
    m.set_x25519_key(b"\x02" * 32)  # the events' last key is the one that counts
    ctx.admin.set_max_epsilon(4)
    assert run_audit(ctx.admin).ok
    real_member, real_state = Ledger.member, Ledger.state

    def other_key(self: Ledger, address: str):  # type: ignore[no-untyped-def]
        info = real_member(self, address)
        if info is not None and info.address == m.sender_address:
            return dataclasses.replace(info, x25519_key=b"\x01" * 32)
        return info

    def other_max(self: Ledger):  # type: ignore[no-untyped-def]
        return dataclasses.replace(real_state(self), max_epsilon=5.0)

    monkeypatch.setattr(Ledger, "member", other_key)
    monkeypatch.setattr(Ledger, "state", other_max)
    report = run_audit(ctx.admin)
    assert sorted((f.check, f.subject, f.expected, f.actual) for f in report.findings) == [
        ("member.x25519_key", m.sender_address, "0x" + "02" * 32, "0x" + "01" * 32),
        ("state.max_epsilon", "contract", "4.0", "5.0"),
    ]


def test_a_key_cleared_by_registering_a_new_peer_id_is_replayed(ctx: Ctx) -> None:
    m = ctx.members[4]
    m.set_x25519_key(b"\x07" * 32)
    ctx.admin.deactivate(m.sender_address)
    ctx.admin.register(m.sender_address, "12D3KooWanothermachine", "hospital 5 moved")
    report = run_audit(ctx.admin)
    assert report.ok, report.findings
    assert {r.address: r.x25519_key for r in report.members}[m.sender_address] is None


def test_evaluation_digests_are_replayed_checked_and_written(
    ctx: Ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = ctx.members[0], ctx.members[3]
    first.commit_evaluation(digest_of("run 1"))
    first.commit_evaluation(digest_of("run 2"))  # the latest is the one the view keeps
    second.commit_evaluation(digest_of("run 2"))
    report = run_audit(ctx.admin)
    assert report.ok, report.findings
    latest = {r.address: (r.evaluation, r.evaluations) for r in report.members}
    assert latest[first.sender_address] == ("0x" + digest_of("run 2").hex(), 2)
    assert latest[second.sender_address] == ("0x" + digest_of("run 2").hex(), 1)
    assert latest[ctx.addresses[1]] == (None, 0)
    write_audit(report, tmp_path)
    with (tmp_path / "evaluations.csv").open() as f:
        rows = [(r["name"], r["digest"]) for r in csv.DictReader(f)]
    assert rows == [
        ("hospital 1", "0x" + digest_of("run 1").hex()),
        ("hospital 1", "0x" + digest_of("run 2").hex()),
        ("hospital 4", "0x" + digest_of("run 2").hex()),
    ]
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert [e["digest"] for e in doc["evaluations"]] == [digest for _, digest in rows]

    real = Ledger.evaluation_of
    monkeypatch.setattr(
        Ledger,
        "evaluation_of",
        lambda self, member: (
            digest_of("run 1") if member == second.sender_address else real(self, member)
        ),
    )
    (finding,) = run_audit(ctx.admin).findings
    assert (finding.check, finding.subject) == ("member.evaluation", second.sender_address)
    assert (finding.expected, finding.actual) == (
        "0x" + digest_of("run 2").hex(),
        "0x" + digest_of("run 1").hex(),
    )
