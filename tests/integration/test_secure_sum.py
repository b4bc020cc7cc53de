"""The swarm-wide secure sum on real libp2p hosts on loopback, over a ring (so most masked
vectors travel through other members): every member gets the exact sum, and a member that never
takes part stops the sum with an error naming it. A flood of rows in clear goes on without it."""

import math
from contextlib import AsyncExitStack

import multiaddr
import numpy as np
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo

from gossip.exchange import ParamExchange, SnapshotStore
from gossip.host import build_host, close_host
from gossip.secure_agg import MaskingKeys
from gossip.secure_sum import Flood, SecureSumError, flood_available, secure_sum

pytestmark = pytest.mark.integration

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


async def ring_sum(
    values: list[np.ndarray], absent: int | None = None, deadline: float = 20.0, clear=False
):
    """Each member's outcome on a ring: the secure sum of `values`, or with `clear` the rows
    (each member's values as bytes) that reached it by `flood_available`."""
    n = len(values)
    identities = [create_new_key_pair() for _ in range(n)]
    keys = [X25519PrivateKey.generate() for _ in range(n)]
    exchanges = [ParamExchange(build_host(k), SnapshotStore(), 3.0) for k in identities]
    peers = [e.host.get_id().to_base58() for e in exchanges]
    registry = {p: k.public_key().public_bytes_raw() for p, k in zip(peers, keys, strict=True)}
    results: dict[int, object] = {}
    async with AsyncExitStack() as stack:
        for i, e in enumerate(exchanges):
            if i != absent:
                await stack.enter_async_context(e.host.run(LISTEN))
        infos = [PeerInfo(e.host.get_id(), e.host.get_addrs()) for e in exchanges]

        async def member(i: int) -> None:
            flood = Flood(
                "scaling-1", tuple(sorted(peers)),
                (infos[(i - 1) % n], infos[(i + 1) % n]), 2.0, 1.0, deadline,
            )  # fmt: skip
            try:
                if clear:
                    row = values[i].tobytes()
                    results[i] = await flood_available(exchanges[i], identities[i], flood, row)
                    return
                results[i] = await secure_sum(
                    exchanges[i],
                    identities[i],
                    MaskingKeys(keys[i], registry.get),
                    flood,
                    values[i],
                )
            except SecureSumError as exc:
                results[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(n):
                if i != absent:
                    nursery.start_soon(member, i)
        for e in exchanges:
            await close_host(e.host)
    return results, peers


def test_every_member_gets_the_exact_sum_over_a_ring():
    rng = np.random.default_rng(0)
    values = [
        np.concatenate([[rng.integers(1, 300)], rng.normal(50, 20, 6) * 300]) for _ in range(6)
    ]

    results, _ = trio.run(ring_sum, values)
    exact = np.array([math.fsum(v[j] for v in values) for j in range(values[0].size)])
    assert len(results) == 6
    for total in results.values():
        assert isinstance(total, np.ndarray)
        np.testing.assert_array_equal(total, exact)  # exact to float64 rounding: one rounding


def test_a_member_that_never_takes_part_stops_the_sum_naming_it():
    values = [np.ones(3) for _ in range(4)]
    results, peers = trio.run(ring_sum, values, 2, 6.0)
    for i, outcome in results.items():
        assert isinstance(outcome, SecureSumError), i
        assert peers[2] in str(outcome)


def test_a_flood_in_clear_goes_on_without_a_member_that_never_takes_part():
    """A ring of five without member 2 is a line: rows still travel through other members."""
    values = [np.full(3, float(i)) for i in range(5)]
    results, peers = trio.run(ring_sum, values, 2, 20.0, True)
    expected = {peers[i]: values[i].tobytes() for i in (0, 1, 3, 4)}
    assert set(results) == {0, 1, 3, 4}
    for rows in results.values():
        assert rows == expected
        assert list(rows) == [p for p in sorted(peers) if p != peers[2]]  # in members' order
