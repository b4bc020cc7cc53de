"""The packed commitment encoding of commitBatch / commitAndReport and of the ModelsCommitted
event, and the expansion of both commitment events into one record per commitment."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ledger.errors import LedgerError
from ledger.events import Event
from ledger.views import Commitment

COMMITMENT_BYTES = 48  # uint64 round + bytes32 digest + uint64 samples, big-endian
UINT64_MAX = 2**64 - 1


def encode_commitments(items: Sequence[Commitment]) -> bytes:
    """Commitments -> concatenated 48-byte records, in the given order."""
    out = bytearray()
    for c in items:
        if not 0 <= c.round <= UINT64_MAX or not 0 <= c.samples <= UINT64_MAX:
            raise LedgerError(f"round {c.round} / samples {c.samples} out of uint64 range")
        digest = bytes(c.digest)
        if len(digest) != 32:
            raise LedgerError(f"a model digest is 32 bytes (sha256), got {len(digest)}")
        out += c.round.to_bytes(8, "big") + digest + c.samples.to_bytes(8, "big")
    return bytes(out)


def decode_commitments(data: bytes) -> list[Commitment]:
    if len(data) % COMMITMENT_BYTES:
        raise LedgerError(f"commitments length {len(data)} is not a multiple of 48")
    return [
        Commitment(
            int.from_bytes(data[i : i + 8], "big"),
            bytes(data[i + 8 : i + 40]),
            int.from_bytes(data[i + 40 : i + 48], "big"),
        )
        for i in range(0, len(data), COMMITMENT_BYTES)
    ]


def round_range(items: Sequence[Commitment]) -> tuple[int, int]:
    """(firstRound, lastRound) of a batch as ModelsCommitted indexes them: its smallest and
    largest round."""
    rounds = [c.round for c in items]
    return min(rounds), max(rounds)


def round_topic(round: int) -> bytes:
    """A round as an event topic (ModelCommitted's `round`, ModelsCommitted's `firstRound` and
    `lastRound`), for eth_getLogs topic filters."""
    return round.to_bytes(32, "big")


def commitments_in(event: Event) -> Iterator[tuple[str, Commitment]]:
    """(member, commitment) for each commitment an event logs: one for ModelCommitted (from
    `commit`), one per record for ModelsCommitted (from a batch); none for other events."""
    if event.name == "ModelCommitted":
        a = event.args
        yield a["member"], Commitment(a["round"], bytes(a["digest"]), a["samples"])
    elif event.name == "ModelsCommitted":
        for c in decode_commitments(event.args["commitments"]):
            yield event.args["member"], c
