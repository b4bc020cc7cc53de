"""The ledger against hostile or absent members (issue 17): a huge round number, and an epoch
most members stopped writing in (closed by an admin after the timeout)."""

from __future__ import annotations

from pathlib import Path

from ledger.audit import run_audit
from ledger.contract import finalize_middles
from ledger.outbox import Outbox
from ledger.testing import advance_time, digest_of
from ledger.views import Commitment
from tests.unit.ledger.support import CONFIG, SCORE, Ctx, commit_through, raises_revert

HUGE = 10**9


def test_a_huge_round_is_refused_and_closes_nothing_in_advance(ctx: Ctx) -> None:
    a, b, c, d, _ = ctx.members
    limit = ctx.admin.round_limit()
    assert limit == 2 * CONFIG.rounds_per_epoch + CONFIG.grace_rounds
    # The old failure: a member committed round 10**9 and counted toward closing every epoch.
    with raises_revert("RoundBeyondWindow", round=HUGE, limit=limit):
        a.commit(HUGE, digest_of("huge"), 1)
    with raises_revert("RoundBeyondWindow", round=HUGE, limit=limit):
        a.commit_batch([Commitment(0, digest_of("0"), 1), Commitment(HUGE, digest_of("h"), 1)])
    with raises_revert("RoundBeyondWindow", round=HUGE, limit=limit):
        a.commit_and_report([Commitment(HUGE, digest_of("h"), 1)], 0, {})
    # Honest rounds pass, up to the round that closes the current epoch and a little beyond.
    for m in (a, b, c):
        commit_through(m, 0, limit - 1)
    with raises_revert("RoundBeyondWindow", round=limit, limit=limit):
        a.commit(limit, digest_of("next"), 1)
    ctx.admin.finalize(0)  # epoch 0 is closed: three of five members are past it
    with raises_revert("EpochNotClosed"):  # nobody could commit past epoch 1's close
        ctx.admin.finalize(1)
    assert ctx.admin.round_limit() == limit + CONFIG.rounds_per_epoch  # the window moved on
    a.commit(limit, digest_of("next"), 1)
    d.commit(0, digest_of("late"), 1)  # a member far behind is never refused


def test_the_outbox_holds_a_commit_past_the_window_without_blocking(
    ctx: Ctx, tmp_path: Path
) -> None:
    a, b, c, _, _ = ctx.members
    box = Outbox(tmp_path / "outbox.db", a)
    limit = a.round_limit()
    for r in range(limit + 2):
        box.enqueue_commit(r, digest_of(f"a{r}"), 1)
    box.enqueue_commit(HUGE, digest_of("huge"), 1)
    box.enqueue_report(0, {})
    first = box.flush()
    # Rounds below the limit and the report went out; the rest wait (not failed, not sent).
    assert (first.failed, first.pending, first.chain_down) == (0, 3, False)
    assert a.committed(a.sender_address, limit - 1)
    assert not a.committed(a.sender_address, limit)
    assert box.flush().pending == 3  # still held: epoch 0 is not closed (one member of five)
    for m in (b, c):
        commit_through(m, 0, CONFIG.rounds_per_epoch)  # now most members are past epoch 0
    third = box.flush()  # finalizes epoch 0, which moves the window
    assert ctx.admin.state().next_epoch == 1
    assert (third.failed, third.pending) == (0, 1)
    assert a.committed(a.sender_address, limit + 1)
    assert [i.args["round"] for i in box.items("pending")] == [HUGE]


def test_an_admin_closes_a_stalled_epoch_after_the_timeout(ctx: Ctx, tmp_path: Path) -> None:
    a, b, c, d, e = ctx.members
    ctx.admin.fund(10**18)
    limit = ctx.admin.round_limit()
    # The old failure: three of five members stop committing; epoch 0 never closes and the
    # two left cannot move past the window.
    for m in (a, b):
        commit_through(m, 0, limit - 1)
    a.report_fixed(0, {1: SCORE, 2: SCORE})
    with raises_revert("EpochNotClosed", membersPast=2, activeMembers=5):
        ctx.admin.finalize(0)
    with raises_revert("RoundBeyondWindow"):
        a.commit(limit, digest_of("stuck"), 1)
    # Before the timeout an admin cannot close it either; a member never can.
    closable_at = ctx.admin.closable_at()
    with raises_revert("EpochNotStalled", epoch=0, closableAt=closable_at):
        ctx.admin.close_epoch(0)
    advance_time(ctx.chain, CONFIG.close_timeout)
    with raises_revert("NotAdmin"):
        a.close_epoch(0)
    with raises_revert("EpochOutOfOrder"):
        ctx.admin.close_epoch(1)
    result = ctx.admin.close_epoch(0)
    logs = ctx.chain.w3.eth.get_transaction_receipt(result.tx_hash)["logs"]  # type: ignore[arg-type]
    (event,) = [ctx.admin.events.decode(log) for log in logs]
    assert event is not None
    assert (event.name, event.args["epoch"], event.args["by"]) == (
        "EpochClosedByAdmin",
        0,
        ctx.admin.sender_address,
    )
    state = ctx.admin.state()
    assert state.next_epoch == 1 and state.pool == 10**18  # no reward paid
    assert ctx.admin.epoch_result(0).reward == 0
    with raises_revert("EpochAlreadyFinalized"):
        ctx.admin.close_epoch(0)
    # The next epoch proceeds: the two members commit on, and with the absent three
    # deactivated epoch 1 closes and finalizes as usual.
    for m in (a, b):
        commit_through(m, limit, limit + CONFIG.rounds_per_epoch - 1)
    for m in (c, d, e):
        ctx.admin.deactivate(m.sender_address)
    ctx.admin.finalize(1)
    report = run_audit(ctx.admin)
    assert report.ok, report.findings
    assert [(c.epoch, c.by) for c in report.epochs_closed_by_admin] == [
        (0, ctx.admin.sender_address)
    ]


def test_finalize_checks_the_middle_scores_it_is_given(ctx: Ctx) -> None:
    """finalize takes the scores' middle values sorted off chain and checks them."""
    a, b, c, d, _ = ctx.members
    for i, m in enumerate((b, c, d)):  # three reports about a: 1, 2, 3 (odd: middle 2)
        m.report_fixed(0, {0: (i + 1) * SCORE, 4: (4 - i) * SCORE})
    a.report_fixed(0, {4: 9 * SCORE})  # four about e: 4, 3, 2, 9 (even: 3 and 4)
    for m in (a, b, c):
        commit_through(m, 0, CONFIG.rounds_per_epoch)
    reports = [(r.reporter, r.entries) for r in ctx.admin.reports(0)]
    members = len(ctx.members)
    right = finalize_middles([[1 * SCORE, 2 * SCORE, 3 * SCORE], [], [], [], [4, 3, 2, 9]])
    assert right[:2] == [2 * SCORE, 2 * SCORE] and right[8:] == [3, 4]
    with raises_revert("BadMiddles", length=2, expected=2 * members):
        ctx.admin._transact("finalize", 0, reports, [0, 0])
    wrong = [SCORE, SCORE] + [0] * (2 * members - 2)  # a's lowest score, not its middle
    with raises_revert("MiddlesMismatch", member=0, low=SCORE, high=SCORE):
        ctx.admin._transact("finalize", 0, reports, wrong)
    ctx.admin.finalize(0)  # Ledger.finalize sorts them itself
    combined = {s.member: s.score for s in run_audit(ctx.admin).scores}
    assert combined == {a.sender_address: 2 * SCORE, ctx.addresses[4]: 3 * SCORE + SCORE // 2}
