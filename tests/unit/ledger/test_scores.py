"""The reward split and median: properties of the Python rules, and of the contract's own
rules evaluated on chain (pure calls on the embedded backend)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.contract import Ledger
from ledger.scores import (
    INT64_MAX,
    INT64_MIN,
    ScoreError,
    decode_entries,
    encode_entries,
    median,
    split_reward,
    to_fixed,
)
from tests.unit.ledger.support import Ctx

scores_st = st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=1, max_size=100)
reward_st = st.integers(0, 10**30)
ON_CHAIN = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check_split(reward: int, scores: list[int], shares: list[int]) -> None:
    assert len(shares) == len(scores)
    assert sum(shares) <= reward
    positive = sum(s for s in scores if s > 0)
    for score, share in zip(scores, shares, strict=True):
        if score <= 0:
            assert share == 0
        else:  # proportional within 1 wei: exact share minus share is in [0, 1)
            exact_times_total = reward * score
            assert 0 <= exact_times_total - share * positive < positive


@given(reward_st, scores_st)
def test_python_split_properties(reward: int, scores: list[int]) -> None:
    _check_split(reward, scores, split_reward(reward, scores))


@settings(ON_CHAIN)
@given(reward=reward_st, scores=scores_st)
def test_contract_split_properties_and_agreement(ctx: Ctx, reward: int, scores: list[int]) -> None:
    shares = ctx.admin.split_reward(reward, scores)
    _check_split(reward, scores, shares)
    assert shares == split_reward(reward, scores)


@settings(ON_CHAIN)
@given(values=st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=1, max_size=40))
def test_contract_median_matches_python(ctx: Ctx, values: list[int]) -> None:
    assert ctx.admin.median(values) == median(values)


@given(st.lists(st.integers(-100, 100), min_size=3, max_size=30), st.integers(0, 10**15))
def test_median_is_bounded_by_a_lying_minority(honest: list[int], lie: int) -> None:
    """A minority (fewer than half the reports) of liars cannot push the median outside the
    range of the honest values."""
    liars = (len(honest) - 1) // 2
    for sign in (1, -1):
        combined = median(honest + [sign * lie] * liars)
        assert min(honest) <= combined <= max(honest)


def test_all_nonpositive_scores_give_nothing() -> None:
    assert split_reward(10**18, [0, -5, 0]) == [0, 0, 0]


def test_entries_round_trip_and_validation() -> None:
    scores = {3: -5, 0: 7, 65535: INT64_MAX}
    data = encode_entries(scores)
    assert len(data) == 30 and decode_entries(data) == scores
    assert list(decode_entries(data)) == [0, 3, 65535]  # ascending, as the contract wants
    assert encode_entries({}) == b"" and decode_entries(b"") == {}  # a report of no scores
    with pytest.raises(ScoreError):
        encode_entries({70000: 1})
    with pytest.raises(ScoreError):
        decode_entries(b"\x00" * 11)
    assert to_fixed(1.5) == 1_500_000 and to_fixed(-0.25) == -250_000
    with pytest.raises(ScoreError):
        to_fixed(1e13)


def test_median_rules() -> None:
    assert median([5]) == 5
    assert median([1, 2]) == 1 and median([-1, -2]) == -1  # toward zero
    assert median([3, 1, 2, 100]) == 2
    with pytest.raises(ScoreError):
        median([])


def test_ledger_split_helper_is_typed(ctx: Ctx) -> None:
    assert isinstance(ctx.admin, Ledger)
    assert ctx.admin.split_reward(10, [1, 1, 1]) == [3, 3, 3]
