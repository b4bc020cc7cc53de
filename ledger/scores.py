"""Scores as the contract sees them: fixed point, the packed report encoding, and reference
implementations of the contract's median and reward split (used by the audit and tests)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ledger.errors import LedgerError

SCORE_SCALE = 1_000_000  # on chain a score is round(score * 1e6) as int64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ENTRY_BYTES = 10  # uint16 subject index + int64 score, big-endian


class ScoreError(LedgerError):
    """A score or report that the contract would reject, caught before sending."""


def to_fixed(score: float) -> int:
    fixed = round(score * SCORE_SCALE)
    if not INT64_MIN <= fixed <= INT64_MAX:
        raise ScoreError(f"score {score} out of int64 fixed-point range")
    return fixed


def from_fixed(fixed: int) -> float:
    return fixed / SCORE_SCALE


def encode_entries(scores: Mapping[int, int]) -> bytes:
    """{subject index: fixed score} -> packed entries, subjects ascending (as required). No
    scores is an empty report (it still carries the reporter's privacy spend)."""
    out = bytearray()
    for subject in sorted(scores):
        fixed = scores[subject]
        if not 0 <= subject < 2**16:
            raise ScoreError(f"subject index {subject} out of range")
        if not INT64_MIN <= fixed <= INT64_MAX:
            raise ScoreError(f"fixed score {fixed} for subject {subject} out of int64 range")
        out += subject.to_bytes(2, "big") + fixed.to_bytes(8, "big", signed=True)
    return bytes(out)


def decode_entries(data: bytes) -> dict[int, int]:
    if len(data) % ENTRY_BYTES:
        raise ScoreError(f"report entries length {len(data)} is not a multiple of 10")
    return {
        int.from_bytes(data[i : i + 2], "big"): int.from_bytes(
            data[i + 2 : i + ENTRY_BYTES], "big", signed=True
        )
        for i in range(0, len(data), ENTRY_BYTES)
    }


def median(values: Sequence[int]) -> int:
    """The contract's median: the middle value, or for an even count the mean of the two middle
    values rounded toward zero (Solidity integer division)."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ScoreError("median of no values")
    if n % 2:
        return ordered[n // 2]
    total = ordered[n // 2 - 1] + ordered[n // 2]
    return -((-total) // 2) if total < 0 else total // 2


def split_reward(reward: int, scores: Sequence[int]) -> list[int]:
    """The contract's split: reward * score / sum(positive scores), rounded down; zero or
    negative scores get nothing; the shares never sum to more than `reward`."""
    total = sum(s for s in scores if s > 0)
    if total == 0:
        return [0] * len(scores)
    return [reward * s // total if s > 0 else 0 for s in scores]
