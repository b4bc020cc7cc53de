"""The Consortium contract through the Ledger API: every function, every custom error.

Runs on the embedded chain here; tests/integration/ledger/test_contract_anvil.py runs the
same tests on a real Anvil (the `chain` fixture differs)."""

from __future__ import annotations

import pytest
from eth_utils import function_signature_to_4byte_selector

from ledger.artifacts import load_artifact
from ledger.commitments import decode_commitments, encode_commitments, round_range, round_topic
from ledger.contract import DeployConfig, Ledger
from ledger.errors import LedgerError, LedgerRevert
from ledger.events import Event, iter_logs
from ledger.privacy import NO_PRIVACY, delta_to_fixed, epsilon_to_fixed
from ledger.revert import ErrorDecoder
from ledger.scores import encode_entries
from ledger.testing import digest_of, peer_id
from ledger.tx import Sender
from ledger.views import Commitment
from tests.unit.ledger.support import (
    CONFIG,
    SCORE,
    Ctx,
    close_epoch,
    commit_through,
    raises_revert,
    wide_window,
)

# ----- deployment and administration ------------------------------------------------------


def test_deploy_records_configuration(ctx: Ctx) -> None:
    st = ctx.admin.state()
    assert (st.member_count, st.max_members, st.admin_count, st.next_epoch) == (5, 6, 1, 0)
    assert (st.rounds_per_epoch, st.min_reports, st.grace_rounds) == (2, 2, 0)
    assert st.reward_per_epoch == 10**18 and st.pool == 0 and st.total_owed == 0
    assert ctx.admin.is_admin(ctx.admin.sender_address)
    assert not ctx.admin.is_admin(ctx.addresses[0])


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (DeployConfig(max_members=0), "maxMembers"),
        (DeployConfig(max_members=101), "maxMembers"),
        (DeployConfig(rounds_per_epoch=0), "roundsPerEpoch"),
        (DeployConfig(min_reports=0), "minReports"),
    ],
)
def test_deploy_rejects_bad_configuration(ctx: Ctx, config: DeployConfig, field: str) -> None:
    with raises_revert("InvalidConfig", field=field):
        Ledger.deploy(ctx.chain, ctx.chain.dev_accounts[9], config)


def test_admin_functions_are_admin_only(ctx: Ctx) -> None:
    member = ctx.members[0]
    caller = member.sender_address
    with raises_revert("NotAdmin", caller=caller):
        member.register(ctx.outsider.sender_address, "peer-x", "x")
    with raises_revert("NotAdmin", caller=caller):
        member.deactivate(ctx.addresses[1])
    with raises_revert("NotAdmin", caller=caller):
        member.set_reward_per_epoch(1)
    with raises_revert("NotAdmin", caller=caller):
        member.set_max_members(10)
    with raises_revert("NotAdmin", caller=caller):
        member.set_admin(caller, True)


def test_set_admin_adds_and_removes_but_never_the_last(ctx: Ctx) -> None:
    new = ctx.outsider.sender_address
    ctx.admin.set_admin(new, True)
    assert ctx.admin.is_admin(new) and ctx.admin.state().admin_count == 2
    ctx.outsider.register(ctx.chain.dev_accounts[9].address, "peer-9", "by second admin")
    ctx.outsider.set_admin(ctx.admin.sender_address, False)
    assert ctx.admin.state().admin_count == 1
    with raises_revert("LastAdmin", admin=new):
        ctx.outsider.set_admin(new, False)


def test_set_reward_and_max_members(ctx: Ctx) -> None:
    ctx.admin.set_reward_per_epoch(123)
    ctx.admin.set_max_members(7)
    st = ctx.admin.state()
    assert (st.reward_per_epoch, st.max_members) == (123, 7)
    with raises_revert("InvalidConfig", field="maxMembers", value=4):
        ctx.admin.set_max_members(4)  # below the 5 registered


# ----- membership ---------------------------------------------------------------------------


def test_members_are_listed_with_peer_ids(ctx: Ctx) -> None:
    members = ctx.admin.members()
    assert [m.address for m in members] == ctx.addresses
    assert [m.peer_id for m in members] == [peer_id(i) for i in range(1, 6)]
    assert all(m.active for m in members)
    assert ctx.admin.is_active_member(peer_id(1))
    assert ctx.admin.is_active_member(ctx.addresses[0])
    assert not ctx.admin.is_active_member(ctx.outsider.sender_address)
    assert not ctx.admin.is_active_member("12D3KooWnobody")
    found = ctx.admin.member_by_peer_id(peer_id(3))
    assert found is not None and found.address == ctx.addresses[2] and found.index == 2


def test_register_errors(ctx: Ctx) -> None:
    outsider = ctx.outsider.sender_address
    with raises_revert("AlreadyMember", member=ctx.addresses[0]):
        ctx.admin.register(ctx.addresses[0], "other-peer", "again")
    with raises_revert("PeerIdTaken", peerId=peer_id(1), holder=ctx.addresses[0]):
        ctx.admin.register(outsider, peer_id(1), "thief")
    with raises_revert("BadPeerId", peerId=""):
        ctx.admin.register(outsider, "", "empty")
    ctx.admin.register(outsider, "peer-6", "sixth")  # the cap is 6
    with raises_revert("MemberCapReached", maxMembers=6):
        ctx.admin.register(ctx.chain.dev_accounts[9].address, "peer-7", "seventh")


def test_deactivate_and_reactivate(ctx: Ctx) -> None:
    gone = ctx.addresses[1]
    ctx.admin.deactivate(gone)
    assert not ctx.admin.is_active_member(gone)
    assert not ctx.admin.is_active_member(peer_id(2))
    with raises_revert("MemberInactive", member=gone):
        ctx.admin.deactivate(gone)
    with raises_revert("MemberInactive", member=gone):
        ctx.members[1].commit(0, digest_of("x"), 1)
    with raises_revert("MemberInactive", member=gone):
        ctx.members[1].report_fixed(0, {0: SCORE})
    ctx.admin.register(gone, "new-peer-id", "back again")  # same slot, new peer ID
    info = ctx.admin.member(gone)
    assert info is not None and info.active and info.index == 1 and info.peer_id == "new-peer-id"
    assert ctx.admin.member_by_peer_id(peer_id(2)) is None
    assert ctx.admin.state().member_count == 5


def test_non_member_cannot_write(ctx: Ctx) -> None:
    who = ctx.outsider.sender_address
    with raises_revert("NotMember", account=who):
        ctx.outsider.commit(0, digest_of("x"), 1)
    with raises_revert("NotMember", account=who):
        ctx.outsider.commit_batch([Commitment(0, digest_of("x"), 1)])
    with raises_revert("NotMember", account=who):
        ctx.outsider.report_fixed(0, {0: SCORE})
    with raises_revert("NotMember", account=who):
        ctx.outsider.withdraw()


# ----- commitments --------------------------------------------------------------------------


def test_commit_once_per_round(ctx: Ctx) -> None:
    m = ctx.members[0]
    m.commit(3, digest_of("a"), 10)
    assert m.committed(m.sender_address, 3) and not m.committed(m.sender_address, 2)
    with raises_revert("AlreadyCommitted", member=m.sender_address, round=3):
        m.commit(3, digest_of("b"), 10)
    m.commit(1, digest_of("c"), 10)  # out of order is fine, once
    info = m.member(m.sender_address)
    assert info is not None and info.next_round == 4
    assert m.committed_word(m.sender_address, 0) == (1 << 3) | (1 << 1)


def test_commit_batch_across_bitmap_words(ctx: Ctx) -> None:
    ctx = wide_window(ctx)
    m = ctx.members[0]
    rounds = [254, 255, 256, 300, 1000]
    m.commit_batch([Commitment(r, digest_of(str(r)), 1) for r in rounds])
    assert all(m.committed(m.sender_address, r) for r in rounds)
    assert not m.committed(m.sender_address, 257)
    with raises_revert("AlreadyCommitted", round=300):
        m.commit_batch([Commitment(301, digest_of("n"), 1), Commitment(300, digest_of("d"), 1)])
    with raises_revert("AlreadyCommitted", round=7):  # a duplicate within one batch
        m.commit_batch([Commitment(7, digest_of("x"), 1), Commitment(7, digest_of("y"), 1)])
    with raises_revert("EmptyBatch"):
        m.commit_batch([])
    assert not m.committed(m.sender_address, 301)  # the rejected batch left nothing behind


def test_commitment_event_carries_digest_and_samples(ctx: Ctx) -> None:
    m = ctx.members[2]
    result = m.commit(3, digest_of("model"), 1234)
    logs = m.chain.w3.eth.get_transaction_receipt(result.tx_hash)["logs"]  # type: ignore[arg-type]
    event = m.events.decode(logs[0])
    assert event is not None and event.name == "ModelCommitted"
    assert event.args == {
        "round": 3,
        "member": m.sender_address,
        "digest": digest_of("model"),
        "samples": 1234,
    }


def test_batch_is_logged_as_one_event_with_every_record(ctx: Ctx) -> None:
    ctx = wide_window(ctx)
    m = ctx.members[1]
    items = [Commitment(r, digest_of(f"b{r}"), 100 + r) for r in (3, 4, 2**40, 9)]
    result = m.commit_batch(items)
    logs = m.chain.w3.eth.get_transaction_receipt(result.tx_hash)["logs"]  # type: ignore[arg-type]
    assert len(logs) == 1
    event = m.events.decode(logs[0])
    assert event is not None and event.name == "ModelsCommitted"
    assert event.args["member"] == m.sender_address
    assert decode_commitments(event.args["commitments"]) == items
    ctx.members[2].commit_batch([Commitment(3, digest_of("other"), 1)])  # someone else's
    m.commit(5, digest_of("single"), 7)
    assert [(who, c) for who, c, _ in m.commitments(m.sender_address)] == [
        (m.sender_address, c) for c in [*items, Commitment(5, digest_of("single"), 7)]
    ]
    assert len(m.commitments()) == len(items) + 2
    info = m.member(m.sender_address)
    assert info is not None and info.next_round == 2**40 + 1


def test_batch_event_is_indexed_by_its_round_range(ctx: Ctx) -> None:
    ctx = wide_window(ctx)
    m, other = ctx.members[1], ctx.members[2]
    items = [Commitment(r, digest_of(f"r{r}"), 1) for r in (12, 10, 300, 11)]  # any order
    result = m.commit_batch(items)
    other.commit_batch([Commitment(r, digest_of(f"o{r}"), 1) for r in (10, 20)])
    m.commit_and_report([Commitment(r, digest_of(f"c{r}"), 1) for r in (0, 1)], 0, {0: SCORE})
    topic = m.events.topic("ModelsCommitted")
    w3, start = m.chain.w3, m.deployed_at

    def batches(*topics: bytes | None) -> list[Event]:
        logs = iter_logs(w3, m.address, start, w3.eth.block_number, [topic, *topics])
        return [e for e in map(m.events.decode, logs) if e is not None]

    by_first = batches(None, round_topic(10))  # every member's batches starting at round 10
    assert [(e.args["member"], e.args["lastRound"]) for e in by_first] == [
        (m.sender_address, 300),
        (other.sender_address, 20),
    ]
    (found,) = batches(None, None, round_topic(300))
    assert found.tx_hash == result.tx_hash and found.args["firstRound"] == 10
    assert decode_commitments(found.args["commitments"]) == items
    # A round range [10, 20] as topic OR-lists: batches that start or end inside it.
    inside = [round_topic(r) for r in range(10, 21)]
    assert {e.tx_hash for e in batches(None, inside)} | {
        e.tx_hash for e in batches(None, None, inside)
    } == {result.tx_hash, by_first[1].tx_hash}
    (combined,) = batches(None, round_topic(0), round_topic(1))  # commitAndReport too
    assert combined.args["member"] == m.sender_address
    assert round_range(items) == (10, 300)


def test_batch_encoding_errors(ctx: Ctx) -> None:
    m = ctx.members[1]
    one = encode_commitments([Commitment(0, digest_of("x"), 1)])
    for bad in (one[:-1], one + b"\x00"):
        with raises_revert("BadCommitmentEncoding", length=len(bad)):
            m._transact("commitBatch", bad)
        with raises_revert("BadCommitmentEncoding", length=len(bad)):
            m._transact("commitAndReport", bad, 0, encode_entries({0: SCORE}), NO_PRIVACY, 0)
    with raises_revert("EmptyBatch"):
        m._transact("commitAndReport", b"", 0, encode_entries({0: SCORE}), NO_PRIVACY, 0)
    info = m.member(m.sender_address)
    assert info is not None and (info.next_round, info.next_epoch) == (0, 0)
    assert not m.committed(m.sender_address, 0)


# ----- reports ------------------------------------------------------------------------------


def test_report_errors(ctx: Ctx) -> None:
    m = ctx.members[0]  # index 0
    me = m.sender_address
    with raises_revert("SelfScore", member=me, epoch=0):
        m.report_fixed(0, {0: SCORE, 1: SCORE})
    with raises_revert("UnknownSubject", subject=5, memberCount=5):
        m.report_fixed(0, {5: SCORE})
    for length in (9, 11, 1):
        with raises_revert("BadReportEncoding", length=length):
            m._transact("report", 0, b"\x00" * length, NO_PRIVACY, 0)
    unsorted = encode_entries({2: SCORE}) + encode_entries({1: SCORE})
    with raises_revert("SubjectsNotAscending", previous=2, subject=1):
        m._transact("report", 0, unsorted, NO_PRIVACY, 0)
    twice = encode_entries({2: SCORE}) * 2
    with raises_revert("SubjectsNotAscending", previous=2, subject=2):
        m._transact("report", 0, twice, NO_PRIVACY, 0)
    m.report_fixed(1, {1: SCORE})
    with raises_revert("AlreadyReported", member=me, epoch=1):
        m.report_fixed(1, {2: SCORE})
    with raises_revert("ReportOutOfOrder", member=me, epoch=0, lastReported=1):
        m.report_fixed(0, {2: SCORE})


def test_report_by_peer_id_and_float_scores(ctx: Ctx) -> None:
    m = ctx.members[0]
    m.report(0, {peer_id(2): 0.5, ctx.addresses[2]: -1.25})
    (rep,) = m.reports(0)
    assert rep.reporter == m.sender_address
    assert rep.entries == encode_entries({1: 500_000, 2: -1_250_000})


def test_commit_and_report_in_one_transaction(ctx: Ctx) -> None:
    m = ctx.members[3]
    m.commit_and_report([Commitment(r, digest_of(str(r)), 9) for r in (0, 1)], 0, {0: SCORE})
    info = m.member(m.sender_address)
    assert info is not None and (info.next_round, info.next_epoch) == (2, 1)
    with raises_revert("AlreadyReported", epoch=0):
        m.commit_and_report([Commitment(2, digest_of("2"), 9)], 0, {0: SCORE})
    assert not m.committed(m.sender_address, 2)


# ----- privacy: X25519 keys, the maximum epsilon, the spend with each report -----------------

KEY_A, KEY_B = bytes(range(32)), bytes(range(100, 132))


def _privacy_events(ledger: Ledger, tx_hash: str) -> list[Event]:
    logs = ledger.chain.w3.eth.get_transaction_receipt(tx_hash)["logs"]  # type: ignore[arg-type]
    return [
        e for e in map(ledger.events.decode, logs) if e is not None and e.name == "PrivacySpent"
    ]


def test_members_set_and_rotate_their_own_x25519_key(ctx: Ctx) -> None:
    m = ctx.members[1]
    assert m.member(m.sender_address).x25519_key is None  # type: ignore[union-attr]
    result = m.set_x25519_key(KEY_A)
    logs = m.chain.w3.eth.get_transaction_receipt(result.tx_hash)["logs"]  # type: ignore[arg-type]
    (event,) = [m.events.decode(log) for log in logs]
    assert event is not None and event.name == "X25519KeySet"
    assert event.args == {"member": m.sender_address, "key": KEY_A}
    m.set_x25519_key(KEY_B)  # rotation, any time
    keys = {info.address: info.x25519_key for info in ctx.admin.members()}
    assert keys[m.sender_address] == KEY_B
    assert all(key is None for address, key in keys.items() if address != m.sender_address)


def test_x25519_key_errors(ctx: Ctx) -> None:
    who = ctx.outsider.sender_address
    with raises_revert("NotMember", account=who):
        ctx.outsider.set_x25519_key(KEY_A)
    with raises_revert("BadX25519Key", key=bytes(32)):
        ctx.members[0].set_x25519_key(bytes(32))
    gone = ctx.members[2]
    ctx.admin.deactivate(gone.sender_address)
    with raises_revert("MemberInactive", member=gone.sender_address):
        gone.set_x25519_key(KEY_A)
    with pytest.raises(LedgerError, match="32 raw bytes, got 31"):
        ctx.members[0].set_x25519_key(KEY_A[:31])


def test_reregistering_under_a_new_peer_id_clears_the_key(ctx: Ctx) -> None:
    same, moved = ctx.members[0], ctx.members[1]
    for m in (same, moved):
        m.set_x25519_key(KEY_A)
        ctx.admin.deactivate(m.sender_address)
    ctx.admin.register(same.sender_address, peer_id(1), "same node back")
    ctx.admin.register(moved.sender_address, "12D3KooWnewmachine", "a new node")
    assert ctx.admin.member(same.sender_address).x25519_key == KEY_A  # type: ignore[union-attr]
    assert ctx.admin.member(moved.sender_address).x25519_key is None  # type: ignore[union-attr]


# ----- cross-site evaluation ---------------------------------------------------------------


def test_members_commit_their_cross_site_evaluation_digest(ctx: Ctx) -> None:
    first, second = ctx.members[0], ctx.members[1]
    assert first.evaluation_of(first.sender_address) is None
    result = first.commit_evaluation(digest_of("row"))
    logs = first.chain.w3.eth.get_transaction_receipt(result.tx_hash)["logs"]  # type: ignore[arg-type]
    (event,) = [first.events.decode(log) for log in logs]
    assert event is not None and event.name == "EvaluationCommitted"
    assert event.args == {"member": first.sender_address, "digest": digest_of("row")}
    # The same digest again (an outbox retrying a write that landed) is refused...
    with raises_revert("AlreadyEvaluated", member=first.sender_address, digest=digest_of("row")):
        first.commit_evaluation(digest_of("row"))
    first.commit_evaluation(digest_of("a later run's row"))  # ...a new one is not
    second.commit_evaluation(digest_of("row"))  # rows are per member: equal digests are fine
    assert ctx.admin.evaluation_of(first.sender_address) == digest_of("a later run's row")
    assert ctx.admin.evaluation_of(ctx.addresses[2]) is None
    found = [(e.member, e.digest) for e in ctx.admin.evaluations()]
    assert found == [
        (first.sender_address, digest_of("row")),
        (first.sender_address, digest_of("a later run's row")),
        (second.sender_address, digest_of("row")),
    ]
    assert [e.digest for e in ctx.admin.evaluations(second.sender_address)] == [digest_of("row")]


def test_only_active_members_commit_an_evaluation(ctx: Ctx) -> None:
    who = ctx.outsider.sender_address
    with raises_revert("NotMember", account=who):
        ctx.outsider.commit_evaluation(digest_of("row"))
    gone = ctx.members[2]
    ctx.admin.deactivate(gone.sender_address)
    with raises_revert("MemberInactive", member=gone.sender_address):
        gone.commit_evaluation(digest_of("row"))
    with pytest.raises(LedgerError, match="evaluation digest is 32 bytes"):
        ctx.members[0].commit_evaluation(digest_of("row")[:31])
    assert ctx.admin.evaluations() == []


def test_max_epsilon_is_admin_only_and_can_be_cleared(ctx: Ctx) -> None:
    assert ctx.admin.state().max_epsilon is None
    with raises_revert("NotAdmin", caller=ctx.addresses[0]):
        ctx.members[0].set_max_epsilon(8)
    result = ctx.admin.set_max_epsilon(8.5)
    assert ctx.admin.state().max_epsilon == 8.5
    logs = ctx.chain.w3.eth.get_transaction_receipt(result.tx_hash)["logs"]  # type: ignore[arg-type]
    event = ctx.admin.events.decode(logs[0])
    assert event is not None and event.name == "MaxEpsilonChanged"
    assert event.args == {"maxEpsilon": 8_500_000, "by": ctx.admin.sender_address}
    ctx.admin.set_max_epsilon(None)
    assert ctx.admin.state().max_epsilon is None
    for bad in (0, float("inf"), -1.0):
        with pytest.raises(LedgerError):
            ctx.admin.set_max_epsilon(bad)


def test_report_logs_the_privacy_spend(ctx: Ctx) -> None:
    m = ctx.members[0]
    result = m.report(0, {peer_id(2): 0.5}, epsilon=2.25, delta=1e-5)
    (spent,) = _privacy_events(m, result.tx_hash)
    assert spent.args == {
        "epoch": 0,
        "member": m.sender_address,
        "epsilon": 2_250_000,
        "delta": 10**13,
    }
    no_dp = m.report_fixed(1, {1: SCORE})  # the default: trains without DP
    (spent,) = _privacy_events(m, no_dp.tx_hash)
    assert (spent.args["epsilon"], spent.args["delta"]) == (NO_PRIVACY, 0)
    assert [(p.epoch, p.epsilon, p.delta) for p in m.privacy_spent(m.sender_address)] == [
        (0, 2_250_000, 10**13),
        (1, NO_PRIVACY, 0),
    ]
    assert m.privacy_spent(ctx.addresses[1]) == []
    with pytest.raises(LedgerError, match="fixed epsilon"):
        m.report_fixed(2, {1: SCORE}, 2.5, 0)  # type: ignore[arg-type]  # a float by mistake


def test_a_report_may_carry_no_scores(ctx: Ctx) -> None:
    """A member whose neighbours never arrived still reports its spend; finalize takes the
    empty report back like any other."""
    ctx.members[0].report_fixed(0, {1: SCORE, 2: SCORE})
    ctx.members[3].report_fixed(0, {1: 3 * SCORE, 2: SCORE})
    empty = ctx.members[4].report(0, {}, epsilon=1.0)
    (spent,) = _privacy_events(ctx.admin, empty.tx_hash)
    assert spent.args["epsilon"] == 1_000_000
    info = ctx.admin.member(ctx.addresses[4])
    assert info is not None and info.next_epoch == 1
    assert [r.entries for r in ctx.admin.reports(0)] == [
        encode_entries({1: SCORE, 2: SCORE}),
        encode_entries({1: 3 * SCORE, 2: SCORE}),
        b"",
    ]
    with raises_revert("AlreadyReported", epoch=0):
        ctx.members[4].report(0, {}, epsilon=1.0)
    close_epoch(ctx, 0)
    ctx.admin.finalize(0, wait_for_reports=False)
    assert ctx.admin.epoch_result(0).finalized


def test_commit_and_report_logs_the_privacy_spend(ctx: Ctx) -> None:
    m = ctx.members[3]
    eps, delta = epsilon_to_fixed(7.125), delta_to_fixed(1e-6)
    items = [Commitment(r, digest_of(f"p{r}"), 3) for r in (0, 1)]
    result = m.commit_and_report(items, 0, {0: SCORE}, eps, delta)
    (spent,) = _privacy_events(m, result.tx_hash)
    assert spent.args == {"epoch": 0, "member": m.sender_address, "epsilon": eps, "delta": delta}
    nothing = m.commit_and_report([Commitment(2, digest_of("p2"), 3)], 1, {}, eps + 1, delta)
    (spent,) = _privacy_events(m, nothing.tx_hash)
    assert (spent.args["epoch"], spent.args["epsilon"]) == (1, eps + 1)
    info = m.member(m.sender_address)
    assert info is not None and (info.next_round, info.next_epoch) == (3, 2)


# ----- finalization -------------------------------------------------------------------------


def _report_all(ctx: Ctx, epoch: int, scores: dict[int, dict[int, int]]) -> None:
    for reporter, entries in scores.items():
        ctx.members[reporter].report_fixed(epoch, entries)


def test_finalize_needs_a_closed_epoch_in_order(ctx: Ctx) -> None:
    with raises_revert("EpochOutOfOrder", epoch=1, nextEpoch=0):
        ctx.admin.finalize(1)
    close_epoch(ctx, 0, who=[0, 1])  # 2 of 5 past the epoch: not a majority
    with raises_revert("EpochNotClosed", epoch=0, membersPast=2, activeMembers=5):
        ctx.admin.finalize(0)
    close_epoch(ctx, 0, who=[2])
    with raises_revert("ReportsMissing", epoch=0, reported=0, activeMembers=5):
        ctx.outsider.finalize(0)  # closed, but it waits for every active member's report
    _report_all(ctx, 0, {i: {} for i in range(5)})
    ctx.outsider.finalize(0)  # anyone may finalize
    with raises_revert("EpochAlreadyFinalized", epoch=0):
        ctx.admin.finalize(0)
    with raises_revert("AlreadyReported", epoch=0):
        ctx.members[1].report_fixed(0, {0: SCORE})


def test_finalize_rejects_tampered_reports(ctx: Ctx) -> None:
    _report_all(ctx, 0, {0: {1: SCORE}, 2: {1: 3 * SCORE}})
    close_epoch(ctx, 0)
    reports = [(r.reporter, r.entries) for r in ctx.admin.reports(0)]
    forged = [reports[0], (reports[1][0], encode_entries({1: 100 * SCORE}))]
    middles = [0] * (2 * len(ctx.members))  # checked only after the reports
    with pytest.raises(LedgerRevert) as info:
        ctx.admin._transact("finalize", 0, forged, middles)
    assert info.value.error_name == "ReportsMismatch" and info.value.arguments["epoch"] == 0
    with raises_revert("ReportsMismatch", epoch=0):  # omitting a report is caught too
        ctx.admin._transact("finalize", 0, reports[:1], middles)


def test_median_resists_a_lying_minority(ctx: Ctx) -> None:
    ctx.admin.fund(10**18)
    honest = {1: 10 * SCORE, 2: 11 * SCORE, 3: 12 * SCORE}
    # members 1..3 score member 0 honestly (~11); member 4 lies wildly in both directions.
    _report_all(
        ctx,
        0,
        {
            1: {0: honest[1], 2: 5 * SCORE},
            2: {0: honest[2], 1: 5 * SCORE},
            3: {0: honest[3], 1: 5 * SCORE, 2: 5 * SCORE},
            4: {0: 10**12, 1: -(10**12), 2: -(10**12)},
        },
    )
    close_epoch(ctx, 0)
    ctx.admin.finalize(0, wait_for_reports=False)
    scores = {
        e.args["member"]: e.args["score"]
        for e in _events(ctx, "ScoreCombined")
        if e.args["epoch"] == 0
    }
    assert scores[ctx.addresses[0]] == (11 * SCORE + 12 * SCORE) // 2  # median of 4 reports
    assert min(honest.values()) <= scores[ctx.addresses[0]] <= max(honest.values())
    assert scores[ctx.addresses[1]] == 5 * SCORE  # median(5, 5, -1e12)
    assert scores[ctx.addresses[2]] == 5 * SCORE
    assert ctx.addresses[3] not in scores  # fewer than min_reports (2): no score
    owed = {m.address: m.owed for m in ctx.admin.members()}
    assert owed[ctx.addresses[3]] == 0 and owed[ctx.addresses[4]] == 0
    total = 11_500_000 + 5 * SCORE + 5 * SCORE
    assert owed[ctx.addresses[0]] == 10**18 * 11_500_000 // total


def test_rewards_split_by_positive_scores_and_pool_bounds_them(ctx: Ctx) -> None:
    ctx.admin.fund(15 * 10**17)  # 1.5 ether: one full epoch, half of another
    _report_all(
        ctx,
        0,
        {
            0: {1: 3 * SCORE, 2: -SCORE, 3: 0},
            4: {1: 3 * SCORE, 2: -SCORE, 3: 0},
        },
    )
    close_epoch(ctx, 0)
    ctx.admin.finalize(0, wait_for_reports=False)
    owed = {m.index: m.owed for m in ctx.admin.members()}
    assert owed == {0: 0, 1: 10**18, 2: 0, 3: 0, 4: 0}
    _report_all(ctx, 1, {0: {1: SCORE, 2: SCORE}, 3: {1: SCORE, 2: 3 * SCORE}})
    close_epoch(ctx, 1)
    ctx.admin.finalize(1, wait_for_reports=False)
    result = ctx.admin.epoch_result(1)
    assert result.finalized and result.reward == 5 * 10**17  # the pool had only 0.5 ether left
    owed = {m.index: m.owed for m in ctx.admin.members()}
    assert owed[1] == 10**18 + 5 * 10**17 // 3 and owed[2] == 5 * 10**17 * 2 // 3
    assert ctx.admin.state().pool == 5 * 10**17 - owed[2] - 5 * 10**17 // 3  # rounding dust


def test_deactivated_reporters_and_subjects_are_left_out(ctx: Ctx) -> None:
    ctx.admin.fund(10**18)
    _report_all(ctx, 0, {0: {1: SCORE, 2: SCORE}, 3: {1: SCORE, 2: SCORE}, 4: {1: 9 * SCORE}})
    close_epoch(ctx, 0)
    ctx.admin.deactivate(ctx.addresses[2])  # a subject
    ctx.admin.deactivate(ctx.addresses[4])  # a reporter
    ctx.admin.finalize(0, wait_for_reports=False)
    owed = {m.index: m.owed for m in ctx.admin.members()}
    assert owed == {0: 0, 1: 10**18, 2: 0, 3: 0, 4: 0}


# ----- funding and withdrawal ---------------------------------------------------------------


def _earn(ctx: Ctx, subject: int, amount: int = 10**18) -> None:
    ctx.admin.fund(amount)
    others = [i for i in range(5) if i != subject][:2]
    _report_all(ctx, 0, {i: {subject: SCORE} for i in others})
    close_epoch(ctx, 0)
    ctx.admin.finalize(0, wait_for_reports=False)


def test_fund_and_withdraw_conserve_wei(ctx: Ctx) -> None:
    w3 = ctx.chain.w3
    with raises_revert("ZeroAmount"):
        ctx.outsider.fund(0)
    _earn(ctx, 1)
    ctx.outsider.fund(3)
    m = ctx.members[1]
    before = w3.eth.get_balance(m.sender_address)
    result = m.withdraw()
    fee = result.gas_used * int(w3.eth.get_transaction(result.tx_hash)["gasPrice"])  # type: ignore[arg-type]
    assert w3.eth.get_balance(m.sender_address) == before + 10**18 - fee
    info = m.member(m.sender_address)
    assert info is not None and (info.owed, info.paid) == (0, 10**18)
    with raises_revert("NothingToWithdraw", member=m.sender_address):
        m.withdraw()
    st = ctx.admin.state()
    funded, paid = 10**18 + 3, 10**18
    assert st.balance == funded - paid
    assert funded == st.total_owed + paid + st.pool


def test_deactivated_member_still_withdraws(ctx: Ctx) -> None:
    _earn(ctx, 2)
    ctx.admin.deactivate(ctx.addresses[2])
    ctx.members[2].withdraw()
    info = ctx.admin.member(ctx.addresses[2])
    assert info is not None and info.paid == 10**18 and info.owed == 0


def _deploy_attacker(ctx: Ctx) -> tuple[Ledger, str, Sender]:
    artifact = load_artifact("ReentrantWithdrawer")
    decoder = ErrorDecoder(ctx.admin.artifact.abi)
    sender = Sender(ctx.chain.w3, ctx.chain.dev_accounts[9], decoder, ctx.chain.name)
    factory = ctx.chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    data = factory.constructor(ctx.admin.address).data_in_transaction
    address = sender.send(None, data, description={"function": "constructor"}).contract_address
    assert address is not None
    ctx.admin.register(address, "peer-attacker", "malicious receiver")
    return ctx.admin, address, sender


def _attacker_call(ctx: Ctx, sender: Sender, address: str, fn: str, *args: object) -> None:
    artifact = load_artifact("ReentrantWithdrawer")
    contract = ctx.chain.w3.eth.contract(address=address, abi=artifact.abi)  # type: ignore[arg-type]
    sender.send(address, contract.encode_abi(fn, args=list(args)), description={"function": fn})


def test_reentrant_withdraw_is_paid_once(ctx: Ctx) -> None:
    _, attacker, sender = _deploy_attacker(ctx)
    _earn(ctx, 5)  # the attacker is member index 5
    owed = ctx.admin.member(attacker)
    assert owed is not None and owed.owed == 10**18
    _attacker_call(ctx, sender, attacker, "attack")
    contract = ctx.chain.w3.eth.contract(
        address=attacker,  # type: ignore[arg-type]
        abi=load_artifact("ReentrantWithdrawer").abi,
    )
    assert contract.functions.received().call() == 10**18
    assert contract.functions.payments().call() == 1
    reentry = bytes(contract.functions.reentryError().call())
    assert reentry == function_signature_to_4byte_selector("Reentrancy()")
    info = ctx.admin.member(attacker)
    assert info is not None and (info.owed, info.paid) == (0, 10**18)
    st = ctx.admin.state()
    assert st.balance == 0 and st.total_owed == 0


def test_withdraw_to_a_refusing_receiver_fails_and_keeps_the_debt(ctx: Ctx) -> None:
    _, attacker, sender = _deploy_attacker(ctx)
    _earn(ctx, 5)
    _attacker_call(ctx, sender, attacker, "setRejectPayments", True)
    with raises_revert("TransferFailed", to=attacker, amount=10**18):
        _attacker_call(ctx, sender, attacker, "attack")
    info = ctx.admin.member(attacker)
    assert info is not None and (info.owed, info.paid) == (10**18, 0)


# ----- pure rules on chain ------------------------------------------------------------------


def test_on_chain_median_rounds_toward_zero(ctx: Ctx) -> None:
    assert ctx.admin.median([3, 1, 2]) == 2
    assert ctx.admin.median([4, 1, 2, 3]) == 2  # (2 + 3) / 2
    assert ctx.admin.median([-4, -1, -2, -3]) == -2  # (-3 + -2) / 2 toward zero


def _events(ctx: Ctx, name: str) -> list:  # type: ignore[type-arg]
    from ledger.events import read_events

    topic = ctx.admin.events.topic(name)
    return read_events(
        ctx.chain.w3, ctx.admin.events, ctx.admin.address, ctx.admin.deployed_at, topics=[topic]
    )


def test_events_cover_the_history(ctx: Ctx) -> None:
    _earn(ctx, 0)
    ctx.members[0].withdraw()
    names = {e.name for e in _events(ctx, "EpochFinalized")}
    assert names == {"EpochFinalized"}
    regs = _events(ctx, "MemberRegistered")
    assert [e.args["name"] for e in regs] == [f"hospital {i}" for i in range(1, 6)]
    (withdrawn,) = _events(ctx, "RewardWithdrawn")
    assert withdrawn.args == {"member": ctx.addresses[0], "amount": 10**18}
    assert CONFIG.rounds_per_epoch == 2
    commit_through(ctx.members[0], 4, 5)  # within the window after epoch 0
