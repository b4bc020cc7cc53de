"""Differential-privacy spend as the contract sees it: fixed point, like scores.

Epsilon is `uint64` micro-epsilon (epsilon * 1e6); `NO_PRIVACY` (2**64 - 1) means the member
trains without differential privacy (no guarantee: None here, and an infinite epsilon maps to
it too). Delta is `uint64` in units of 1e-18; None (pure epsilon-DP, or no DP) is 0. Decimal
arithmetic keeps the conversion exact for what a float prints as (8.1 -> 8_100_000).
"""

from __future__ import annotations

import math
from decimal import Decimal

from ledger.errors import LedgerError

EPSILON_SCALE = 10**6  # micro-epsilon
DELTA_SCALE = 10**18
UINT64_MAX = 2**64 - 1
NO_PRIVACY = UINT64_MAX  # the contract's NO_PRIVACY: trains without differential privacy
MAX_FIXED_EPSILON = NO_PRIVACY - 1  # the largest finite epsilon on chain (~1.8e13)


class PrivacyError(LedgerError, ValueError):
    """An epsilon or delta that has no on-chain encoding."""


def _fixed(value: float, scale: int, what: str) -> int:
    if math.isnan(value):
        raise PrivacyError(f"{what} is NaN")
    if value < 0:
        raise PrivacyError(f"{what} {value} is negative")
    return round(Decimal(repr(float(value))) * scale)


def epsilon_to_fixed(epsilon: float | None) -> int:
    """Epsilon -> micro-epsilon; None or infinity -> NO_PRIVACY."""
    if epsilon is None or epsilon == math.inf:
        return NO_PRIVACY
    fixed = _fixed(epsilon, EPSILON_SCALE, "epsilon")
    if fixed > MAX_FIXED_EPSILON:
        raise PrivacyError(
            f"epsilon {epsilon} is too large for uint64 micro-epsilon"
            f" (at most {MAX_FIXED_EPSILON / EPSILON_SCALE:g})"
        )
    return fixed


def epsilon_from_fixed(fixed: int) -> float | None:
    """Micro-epsilon -> epsilon; NO_PRIVACY -> None."""
    _check_uint64(fixed, "fixed epsilon")
    return None if fixed == NO_PRIVACY else fixed / EPSILON_SCALE


def delta_to_fixed(delta: float | None) -> int:
    """Delta (0 <= delta <= 1) -> units of 1e-18; None -> 0."""
    if delta is None:
        return 0
    if delta > 1:
        raise PrivacyError(f"delta {delta} is above 1 (a probability)")
    return _fixed(delta, DELTA_SCALE, "delta")


def delta_from_fixed(fixed: int) -> float:
    _check_uint64(fixed, "fixed delta")
    return fixed / DELTA_SCALE


def _check_uint64(fixed: int, what: str) -> None:
    if not isinstance(fixed, int) or not 0 <= fixed <= UINT64_MAX:
        raise PrivacyError(f"{what} {fixed!r} is not a uint64")


def check_fixed(epsilon: int, delta: int) -> None:
    """Raise unless both are uint64 fixed-point values (and not, say, floats by mistake)."""
    _check_uint64(epsilon, "fixed epsilon (micro-epsilon, see epsilon_to_fixed)")
    _check_uint64(delta, "fixed delta (units of 1e-18, see delta_to_fixed)")


def format_epsilon(fixed: int) -> str:
    """For people: '8.25', or 'no DP' for NO_PRIVACY."""
    return "no DP" if fixed == NO_PRIVACY else decimal_epsilon(fixed)


def exceeds(epsilon: int, max_epsilon: int) -> bool:
    """Whether a fixed epsilon is past a fixed maximum (0: none). No DP exceeds any maximum."""
    return max_epsilon != 0 and (epsilon == NO_PRIVACY or epsilon > max_epsilon)


def decimal_epsilon(fixed: int) -> str:
    """The exact decimal for files: '8.25', or 'inf' for NO_PRIVACY."""
    _check_uint64(fixed, "fixed epsilon")
    return "inf" if fixed == NO_PRIVACY else _decimal(fixed, EPSILON_SCALE)


def decimal_delta(fixed: int) -> str:
    _check_uint64(fixed, "fixed delta")
    return _decimal(fixed, DELTA_SCALE)


def _decimal(fixed: int, scale: int) -> str:
    text = f"{Decimal(fixed) / scale:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
