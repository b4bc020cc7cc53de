"""The ledger against hostile or absent members (issue 17): a huge round number, and an epoch
most members stopped writing in."""

from __future__ import annotations

from pathlib import Path

from ledger.outbox import Outbox
from ledger.testing import digest_of
from ledger.views import Commitment
from tests.unit.ledger.support import CONFIG, Ctx, commit_through, raises_revert

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
