"""The privacy spend's fixed point: exact for what floats print as, clear errors otherwise."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.privacy import (
    MAX_FIXED_EPSILON,
    NO_PRIVACY,
    PrivacyError,
    decimal_delta,
    decimal_epsilon,
    delta_from_fixed,
    delta_to_fixed,
    epsilon_from_fixed,
    epsilon_to_fixed,
    exceeds,
    format_epsilon,
)


def test_epsilon_fixed_point() -> None:
    assert epsilon_to_fixed(8) == 8_000_000
    assert epsilon_to_fixed(8.1) == 8_100_000  # not 8_099_999 (8.1 * 1e6 in floats)
    assert epsilon_to_fixed(0.0000014) == 1  # rounded to the micro-epsilon
    assert epsilon_to_fixed(None) == NO_PRIVACY
    assert epsilon_to_fixed(math.inf) == NO_PRIVACY  # an unbounded spend: no guarantee
    assert epsilon_from_fixed(8_100_000) == 8.1
    assert epsilon_from_fixed(NO_PRIVACY) is None
    assert epsilon_from_fixed(0) == 0.0


def test_delta_fixed_point() -> None:
    assert delta_to_fixed(1e-5) == 10**13
    assert delta_to_fixed(1.2345678901234567e-7) == 123_456_789_012
    assert delta_to_fixed(None) == 0 and delta_to_fixed(1) == 10**18
    assert delta_from_fixed(10**13) == 1e-5


@pytest.mark.parametrize(
    ("convert", "value", "message"),
    [
        (epsilon_to_fixed, -0.5, "epsilon -0.5 is negative"),
        (epsilon_to_fixed, math.nan, "epsilon is NaN"),
        (epsilon_to_fixed, 2e13, "too large"),
        (delta_to_fixed, -1e-9, "delta -1e-09 is negative"),
        (delta_to_fixed, math.nan, "delta is NaN"),
        (delta_to_fixed, 1.5, "above 1"),
        (epsilon_from_fixed, 2**64, "not a uint64"),
        (delta_from_fixed, -1, "not a uint64"),
    ],
)
def test_values_without_an_encoding_are_value_errors(
    convert: object, value: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        convert(value)  # type: ignore[operator]
    assert isinstance(info.value, PrivacyError)


def test_the_largest_finite_epsilon_is_not_no_privacy() -> None:
    top = MAX_FIXED_EPSILON / 10**6
    assert epsilon_to_fixed(top) <= MAX_FIXED_EPSILON
    assert decimal_epsilon(MAX_FIXED_EPSILON) == "18446744073709.551614"


@given(st.integers(0, 2**50))
def test_fixed_epsilon_round_trips_through_its_decimal_and_float(fixed: int) -> None:
    """Below ~1e9 epsilon a float resolves the micro-epsilon: the round trip is exact."""
    assert epsilon_to_fixed(float(decimal_epsilon(fixed))) == fixed
    assert epsilon_to_fixed(epsilon_from_fixed(fixed)) == fixed


def test_decimals_and_labels() -> None:
    assert decimal_epsilon(8_000_000) == "8" and decimal_epsilon(8_250_000) == "8.25"
    assert decimal_epsilon(NO_PRIVACY) == "inf" and format_epsilon(NO_PRIVACY) == "no DP"
    assert decimal_delta(10**13) == "0.00001" and decimal_delta(1) == "0.000000000000000001"
    assert decimal_delta(0) == "0"


def test_exceeds_the_maximum() -> None:
    assert not exceeds(9_000_000, 0)  # no maximum
    assert not exceeds(NO_PRIVACY, 0)
    assert not exceeds(8_000_000, 8_000_000)
    assert exceeds(8_000_001, 8_000_000)
    assert exceeds(NO_PRIVACY, MAX_FIXED_EPSILON)
    assert exceeds(NO_PRIVACY, NO_PRIVACY)  # no DP is past any maximum set
