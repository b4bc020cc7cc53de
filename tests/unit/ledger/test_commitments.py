"""The packed commitment encoding (commitBatch, commitAndReport, ModelsCommitted)."""

from __future__ import annotations

import pytest

from ledger.commitments import COMMITMENT_BYTES, decode_commitments, encode_commitments
from ledger.errors import LedgerError
from ledger.testing import digest_of
from ledger.views import Commitment


def test_round_trip_and_layout() -> None:
    items = [Commitment(0, digest_of("a"), 0), Commitment(2**64 - 1, digest_of("b"), 2**64 - 1)]
    data = encode_commitments(items)
    assert len(data) == 2 * COMMITMENT_BYTES
    assert data[:8] == bytes(8) and data[8:40] == digest_of("a") and data[40:48] == bytes(8)
    assert data[48:56] == b"\xff" * 8
    assert decode_commitments(data) == items


@pytest.mark.parametrize(
    "item",
    [Commitment(-1, digest_of("a"), 1), Commitment(2**64, digest_of("a"), 1),
     Commitment(1, digest_of("a"), 2**64), Commitment(1, b"short", 1)],
)  # fmt: skip
def test_rejects_what_the_contract_cannot_hold(item: Commitment) -> None:
    with pytest.raises(LedgerError):
        encode_commitments([item])


def test_decode_rejects_a_partial_record() -> None:
    with pytest.raises(LedgerError):
        decode_commitments(bytes(47))
