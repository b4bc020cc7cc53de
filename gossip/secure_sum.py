"""An exact secure sum over every member of the swarm, with no server: the primitive behind the
scaling agreement (and the swarm's federated statistics).

Each member adds to its vector, in `masking.WIDE_RING` (256-bit fixed point: any float64 sum
to float64 rounding), one pairwise mask per other member, derived from the X25519 agreement of
their registered keys and bound to the session, and signs the result with its libp2p identity.
The masked vectors are flooded over the gossip links (each step a node serves every vector it
holds and fetches its neighbours') until every member holds all of them. Their sum is the sum of
the inputs, exactly, and every member computes the same one; a masked vector alone is uniform
noise, and members short of all but one cannot strip another's masks (each pair's mask needs
one of the pair's keys). A relayed vector that was altered fails its signature and is dropped.

Every member must take part: one whose vector does not arrive within the deadline stops the
sum with an error naming it (its masks could only be removed by its pairs revealing their
seeds, which would expose it if its vector were merely late).

The flood itself also carries rows in clear that need no one but their author
(`flood_available`, e.g. each member's final model for the cross-site evaluation): there a
member that never arrives is left out, not an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import trio
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from gossip import masking, wire
from gossip.errors import GossipError, PeerMessageError, PeerUnavailable
from gossip.exchange import ParamExchange
from gossip.masking import WIDE_RING
from gossip.secure_agg import MaskingKeys

log = logging.getLogger(__name__)

SIGNATURE_BYTES = 64


class SecureSumError(GossipError):
    """The secure sum could not complete: a member without a key, or one that never arrived."""


@dataclass(frozen=True)
class Flood:
    """One secure sum's setting: who takes part, what this node holds, how long it may take."""

    session: str  # unique per sum: it binds every mask and signature
    members: tuple[str, ...]  # every participant's peer ID, sorted (this node among them)
    neighbours: tuple[PeerInfo, ...]
    fetch_seconds: float
    connect_seconds: float
    deadline_seconds: float


def _row_context(session: str, member: str) -> bytes:
    return masking.context("secsum", "row", session, member)


def _pair_context(session: str, a: str, b: str) -> bytes:
    return masking.context("secsum", "pair", session, *sorted((a, b)))


def masked_row(keys: MaskingKeys, me: str, flood: Flood, values: np.ndarray) -> bytes:
    """This member's vector under one pairwise mask per other member, as ring bytes."""
    seeds = {}
    for other in flood.members:
        if other == me:
            continue
        public = keys.public_of(other)
        if public is None:
            raise SecureSumError(
                f"secure sum {flood.session}: member {other} has no registered X25519 key "
                "(expected one on the ledger, or in privacy.peer_keys)"
            )
        seeds[other] = masking.pair_seed(
            keys.private, public, _pair_context(flood.session, me, other)
        )
    return WIDE_RING.to_bytes(masking.masked(WIDE_RING, values, me, seeds))


async def secure_sum(
    exchange: ParamExchange,
    identity: KeyPair,
    keys: MaskingKeys,
    flood: Flood,
    values: np.ndarray,
) -> np.ndarray:
    """The sum over all members of their `values` (float64 vectors of one length), exactly."""
    me = ID.from_pubkey(identity.public_key).to_base58()
    if me not in flood.members:
        raise SecureSumError(f"secure sum {flood.session}: this node {me} is not a member")
    length = int(np.asarray(values).size)
    row = masked_row(keys, me, flood, np.asarray(values, np.float64).ravel())
    rows = await flood_rows(exchange, identity, flood, row)
    total = WIDE_RING.zeros(length)
    for member in flood.members:
        total = WIDE_RING.add(total, WIDE_RING.from_bytes(rows[member], length))
    return WIDE_RING.decode(total)


async def agree_session(
    exchange: ParamExchange, identity: KeyPair, flood: Flood, label: str
) -> str:
    """A session name no earlier run can have had: the hash of a fresh random nonce from every
    member. Masks bound to it are never reused across runs (reuse would leak differences)."""
    nonces = await flood_rows(exchange, identity, dataclasses.replace(flood, session=label),
                              os.urandom(32))  # fmt: skip
    digest = hashlib.sha256()
    for member in flood.members:
        digest.update(member.encode() + nonces[member])
    return digest.hexdigest()[:32]


async def flood_rows(
    exchange: ParamExchange, identity: KeyPair, flood: Flood, row: bytes
) -> dict[str, bytes]:
    """Every member's `row` (all of one length), signed by its author and relayed over the
    gossip links until each member holds them all; a member missing at the end is an error."""
    rows = await _flood(exchange, identity, flood, row, drop_unreachable=False)
    missing = [m for m in flood.members if m not in rows]
    if missing:
        raise SecureSumError(
            f"secure sum {flood.session}: nothing from {', '.join(missing)} within "
            f"{flood.deadline_seconds:g} s; every member must take part (a member that is down "
            "can be deactivated on the ledger, or removed from privacy.peer_keys)"
        )
    return rows


async def flood_available(
    exchange: ParamExchange, identity: KeyPair, flood: Flood, row: bytes
) -> dict[str, bytes]:
    """The members' `row`s (all of one length, this node's among them) that reached this node:
    each signed by its author and relayed over the gossip links for at most n + 1 steps (a row
    crosses any connected swarm in fewer) and `flood.deadline_seconds`. A member that is down
    is simply not in the result, in `flood.members` order. A neighbour that cannot be reached
    (the exchange's retries failed) is not asked again: a member that is down would cost its
    dial time in every step."""
    return await _flood(exchange, identity, flood, row, drop_unreachable=True)


async def _flood(
    exchange: ParamExchange, identity: KeyPair, flood: Flood, row: bytes, drop_unreachable: bool
) -> dict[str, bytes]:
    me = ID.from_pubkey(identity.public_key).to_base58()
    known = {me: (row, identity.private_key.sign(_row_context(flood.session, me) + row))}
    n, width = len(flood.members), len(row)
    specs = (
        wire.TensorSpec("rows", "uint8", (n, width)),
        wire.TensorSpec("present", "uint8", (n,)),
        wire.TensorSpec("signatures", "uint8", (n, SIGNATURE_BYTES)),
    )
    kind = f"flood/{flood.session}"
    expect = wire.Expectation(kind, 0, n + 1, specs)
    unreachable: set[str] = set()  # stays empty unless `drop_unreachable`
    with trio.move_on_after(flood.deadline_seconds):
        for step in range(n + 1):
            complete = len(known) == n
            await exchange.store.publish(
                wire.Snapshot(kind, step, me, 1, 1, _tensors(flood.members, known, width)),
                final=complete,
            )
            if complete:
                break
            down = await _gather(exchange, flood, step, expect, known, unreachable)
            if drop_unreachable:
                unreachable |= down
    return {member: known[member][0] for member in flood.members if member in known}


def _tensors(
    members: Sequence[str], known: dict[str, tuple[bytes, bytes]], width: int
) -> dict[str, np.ndarray]:
    rows = np.zeros((len(members), width), np.uint8)
    present = np.zeros(len(members), np.uint8)
    signatures = np.zeros((len(members), SIGNATURE_BYTES), np.uint8)
    for i, member in enumerate(members):
        if member in known:
            row, signature = known[member]
            rows[i] = np.frombuffer(row, np.uint8)
            signatures[i] = np.frombuffer(signature, np.uint8)
            present[i] = 1
    return {"rows": rows, "present": present, "signatures": signatures}


async def _gather(
    exchange: ParamExchange,
    flood: Flood,
    step: int,
    expect: wire.Expectation,
    known: dict[str, tuple[bytes, bytes]],
    skip: set[str],
) -> set[str]:
    """Fetch every neighbour's step (but those in `skip`) and keep the signed rows this node
    did not hold; returns the neighbours that could not be reached (not merely slow)."""
    unreachable: set[str] = set()

    async def fetch_one(info: PeerInfo) -> None:
        sender = info.peer_id.to_base58()
        try:
            _, tensors = await exchange.fetch(
                info, step, expect, flood.fetch_seconds, flood.connect_seconds
            )
        except (PeerUnavailable, PeerMessageError) as exc:
            log.info("secure sum %s, step %d: %s", flood.session, step, exc)
            if isinstance(exc, PeerUnavailable) and exc.retryable:
                unreachable.add(sender)
            return
        for i in np.flatnonzero(tensors["present"]):
            member = flood.members[int(i)]
            if member in known:
                continue
            row, signature = tensors["rows"][i].tobytes(), tensors["signatures"][i].tobytes()
            if _verifies(member, _row_context(flood.session, member) + row, signature):
                known[member] = (row, signature)
            else:
                exchange.counters.rejected[sender] += 1
                log.warning("secure sum %s: %s relayed an altered row of %s", flood.session,
                            sender, member)  # fmt: skip

    async with trio.open_nursery() as nursery:
        for info in flood.neighbours:
            if info.peer_id.to_base58() not in skip:
                nursery.start_soon(fetch_one, info)
    return unreachable


def _verifies(member: str, message: bytes, signature: bytes) -> bool:
    try:
        key = ID.from_base58(member).extract_public_key()
        return key is not None and bool(key.verify(message, signature))
    except (ValueError, TypeError) as exc:  # a peer ID without an embedded key, a bad encoding
        log.warning("cannot check a signature of %s: %r", member, exc)
        return False
