"""Secure aggregation among neighbours on real libp2p hosts on loopback (one trio run): the sum
equals the unmasked Metropolis merge, a neighbour that drops at any step is recovered, a late
model from a dropped neighbour is refused, the double-masking promises hold, and a share that
was altered does not open."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import multiaddr
import numpy as np
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo

from gossip import secure_agg, wire
from gossip.exchange import ParamExchange, SnapshotStore
from gossip.host import build_host, close_host
from gossip.masking import MODEL_RING
from gossip.secure_agg import Deadlines, MaskingKeys, SecAggMember, aggregate
from gossip.wire import unpack_map
from node.merge import metropolis_weight, neighbourhood_weight

pytestmark = pytest.mark.integration

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
LENGTH = 50
DEADLINES = Deadlines(fetch=4.0, io=3.0, connect=3.0)
SESSION = "test-session"


@dataclass
class Node:
    exchange: ParamExchange
    member: SecAggMember
    peer: str
    samples: int

    @property
    def info(self) -> PeerInfo:
        return PeerInfo(self.exchange.host.get_id(), self.exchange.host.get_addrs())


@asynccontextmanager
async def swarm(
    n: int, fraction: float = 0.5, weight: secure_agg.WeightRule = metropolis_weight
) -> AsyncIterator[list[Node]]:
    """n hosts; node 0 aggregates, 1..n-1 are its neighbours (and know every key)."""
    keys = [X25519PrivateKey.generate() for _ in range(n)]
    exchanges = [
        ParamExchange(build_host(create_new_key_pair()), SnapshotStore(), 3.0) for _ in range(n)
    ]
    peers = [e.host.get_id().to_base58() for e in exchanges]
    registry = {p: k.public_key().public_bytes_raw() for p, k in zip(peers, keys, strict=True)}
    nodes = []
    for i, (exchange, key) in enumerate(zip(exchanges, keys, strict=True)):
        member = SecAggMember(peers[i], SESSION, MaskingKeys(key, registry.get), weight, fraction)
        exchange.handlers[secure_agg.KIND] = member.handle
        nodes.append(Node(exchange, member, peers[i], samples=10 * (i + 1)))
    async with AsyncExitStack() as stack:
        for e in exchanges:
            await stack.enter_async_context(e.host.run(LISTEN))
        try:
            yield nodes
        finally:
            for e in exchanges:
                await close_host(e.host)


def models(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, LENGTH) for _ in range(n)]


async def offer_all(nodes: list[Node], xs: list[np.ndarray], round_: int, skip=()) -> None:
    for node, x in zip(nodes[1:], xs[1:], strict=True):
        if node.peer not in skip:
            await node.member.offer(round_, x, node.samples, len(nodes) - 1)


async def run_aggregation(nodes: list[Node], round_: int, fraction: float = 0.5):
    me = nodes[0]
    return await aggregate(
        me.exchange, me.peer, SESSION, [n.info for n in nodes[1:]], round_, me.samples,
        len(nodes) - 1, LENGTH, fraction, metropolis_weight, DEADLINES,
    )  # fmt: skip


def expected(nodes: list[Node], xs: list[np.ndarray], included: list[str]) -> np.ndarray:
    me, degree = nodes[0], len(nodes) - 1
    total = np.zeros(LENGTH)
    for node, x in zip(nodes[1:], xs[1:], strict=True):
        if node.peer in included:
            total += metropolis_weight(me.samples, degree, 0, node.samples, degree, 0) * x
    return total


def test_the_secure_sum_equals_the_unmasked_weighted_sum():
    async def main() -> None:
        async with swarm(5) as nodes:
            xs = models(5)
            await offer_all(nodes, xs, 1)
            result = await run_aggregation(nodes, 1)
            everyone = [n.peer for n in nodes[1:]]
            assert result.failures == {}
            assert sorted(result.weights) == sorted(everyone)
            assert result.total is not None
            assert np.abs(result.total - expected(nodes, xs, everyone)).max() < 1e-8

    trio.run(main)


def test_a_neighbour_that_never_answers_is_recovered_from_the_others_seeds():
    async def main() -> None:
        async with swarm(5) as nodes:
            xs = models(5, seed=1)
            gone = nodes[2].peer
            await offer_all(nodes, xs, 1, skip={gone})  # it never publishes round 1
            result = await run_aggregation(nodes, 1)
            survivors = [n.peer for n in nodes[1:] if n.peer != gone]
            assert set(result.failures) == {gone}
            assert sorted(result.weights) == sorted(survivors)
            assert np.abs(result.total - expected(nodes, xs, survivors)).max() < 1e-8

    trio.run(main)


def test_a_neighbour_that_drops_before_unmasking_is_rebuilt_from_its_shares():
    async def main() -> None:
        async with swarm(5) as nodes:
            xs = models(5, seed=2)
            await offer_all(nodes, xs, 1)
            # The first holder asked for shares in round 1 (the order rotates by round).
            first = sorted(n.peer for n in nodes[1:])[1 % 4]
            quitter = next(n for n in nodes if n.peer == first)
            handle = quitter.member.handle

            async def masks_then_vanishes(peer, msg):  # type: ignore[no-untyped-def]
                if msg.get("op") != "masked":
                    await trio.sleep_forever()  # holds its shares back: the others' suffice
                return await handle(peer, msg)

            quitter.exchange.handlers[secure_agg.KIND] = masks_then_vanishes
            result = await run_aggregation(nodes, 1)
            everyone = [n.peer for n in nodes[1:]]
            assert sorted(result.weights) == sorted(everyone)  # its model is in the sum
            assert "no shares in the unmask step" in result.failures[quitter.peer]
            assert np.abs(result.total - expected(nodes, xs, everyone)).max() < 1e-8

    trio.run(main)


def test_too_few_survivors_abort_instead_of_revealing_one_model():
    async def main() -> None:
        async with swarm(3) as nodes:  # two neighbours, one of them silent
            xs = models(3)
            await offer_all(nodes, xs, 1, skip={nodes[1].peer})
            result = await run_aggregation(nodes, 1)
            assert result.total is None and result.weights == {}
            assert "aborted" in result.failures[nodes[2].peer]

    trio.run(main)


def test_a_member_never_reveals_both_a_seed_and_a_share_of_one_neighbour():
    async def main() -> None:
        async with swarm(4) as nodes:
            xs = models(4)
            await offer_all(nodes, xs, 1)
            me, holder = nodes[0], nodes[1].member
            users = sorted(n.peer for n in nodes[1:])
            request = {"v": wire.WIRE_VERSION, "kind": "secagg", "round": 1, "users": users}
            masked = {**request, "op": "masked", "threshold": 1, "samples": me.samples,
                      "degree": 3, "mass": 0, "wait": 1.0}  # fmt: skip
            await holder.handle(me.peer, masked)
            victim = nodes[2].peer
            seeds = await holder.handle(me.peer, {**request, "op": "seeds", "dropped": [victim]})
            assert b"seeds" in seeds[0]
            answer = await holder.handle(
                me.peer, {**request, "op": "unmask", "survivors": users,
                          "shares": {u: b"x" * 45 for u in users if u != nodes[1].peer}},
            )  # fmt: skip
            reply = unpack_map(answer[0][4:], "answer")
            assert victim not in reply["shares"]
            assert "declared dropped" in reply["bad"][victim]

    trio.run(main)


def test_a_member_that_revealed_a_share_refuses_that_neighbours_seed():
    async def main() -> None:
        async with swarm(4) as nodes:
            xs = models(4)
            await offer_all(nodes, xs, 1)
            me, holder = nodes[0], nodes[1]
            users = sorted(n.peer for n in nodes[1:])
            request = {"v": wire.WIRE_VERSION, "kind": "secagg", "round": 1, "users": users}
            masked = {**request, "op": "masked", "threshold": 1, "samples": me.samples,
                      "degree": 3, "mass": 0, "wait": 1.0}  # fmt: skip
            await holder.member.handle(me.peer, masked)
            # Real sealed shares for the holder: the other members' own masked answers.
            sealed = {}
            for other in nodes[2:]:
                frames = await other.member.handle(me.peer, masked)
                sealed[other.peer] = unpack_map(frames[0][4:], "answer")["shares"][holder.peer]
            opened = await holder.member.handle(
                me.peer, {**request, "op": "unmask", "survivors": users, "shares": sealed}
            )
            assert set(unpack_map(opened[0][4:], "answer")["shares"]) == set(sealed)
            victim = nodes[2].peer
            refused = await holder.member.handle(
                me.peer, {**request, "op": "seeds", "dropped": [victim]}
            )
            reply = unpack_map(refused[0][4:], "answer")
            assert reply["status"] == "refused"
            assert f"already revealed a share of {victim}'s self-mask" in reply["reason"]

    trio.run(main)


def test_the_neighbourhood_weights_with_masses_come_out_as_the_plain_merge_s():
    """Both ends weigh with (samples, degree, mass): the aggregator's mass travels in the
    request, each member's in its answer; one member's mass is still unknown (0)."""

    async def main() -> None:
        async with swarm(4, weight=neighbourhood_weight) as nodes:
            xs = models(4)
            degree = len(nodes) - 1
            masses = [100, 0, 90, 120]  # node 0 aggregates; node 1 does not know its mass yet
            for node, x, mass in zip(nodes[1:], xs[1:], masses[1:], strict=True):
                await node.member.offer(1, x, node.samples, degree, mass)
            me = nodes[0]
            result = await aggregate(
                me.exchange, me.peer, SESSION, [n.info for n in nodes[1:]], 1, me.samples,
                degree, LENGTH, 0.5, neighbourhood_weight, DEADLINES, masses[0],
            )  # fmt: skip
            assert result.total is not None and result.failures == {}
            want = np.zeros(LENGTH)
            for node, x, mass in zip(nodes[1:], xs[1:], masses[1:], strict=True):
                w = neighbourhood_weight(me.samples, degree, masses[0], node.samples, degree, mass)
                assert result.weights[node.peer] == pytest.approx(w)
                want += w * x
            assert np.abs(result.total - want).max() < 1e-8
            assert result.samples == {n.peer: n.samples for n in nodes[1:]}

    trio.run(main)


def test_a_late_model_from_a_dropped_neighbour_is_refused():
    agg = secure_agg.Aggregation("A", SESSION, 3, ("b", "c", "d"), threshold=1, length=4)
    model = secure_agg.MaskedModel("c", 10, 3, 0, MODEL_RING.zeros(4), {})
    agg.accept(secure_agg.MaskedModel("b", 10, 3, 0, MODEL_RING.zeros(4), {}))
    assert agg.close_inputs() == ["c", "d"]
    with pytest.raises(secure_agg.LateInput, match="c after it was declared dropped"):
        agg.accept(model)


def test_an_altered_share_does_not_verify_and_the_aggregation_says_whose():
    async def main() -> None:
        async with swarm(3, fraction=1.0) as nodes:  # threshold 1 of 1: every share needed
            xs = models(3)
            await offer_all(nodes, xs, 1)
            tampered_owner = nodes[1].peer
            real_call = secure_agg._call

            async def tamper(exchange, info, agg, request, timeout, deadlines):  # type: ignore[no-untyped-def]
                if request["op"] == "unmask" and tampered_owner in request["shares"]:
                    box = bytearray(request["shares"][tampered_owner])
                    box[-1] ^= 1
                    request = {
                        **request,
                        "shares": {**request["shares"], tampered_owner: bytes(box)},
                    }
                return await real_call(exchange, info, agg, request, timeout, deadlines)

            secure_agg._call = tamper  # type: ignore[assignment]
            try:
                result = await run_aggregation(nodes, 1, fraction=1.0)
            finally:
                secure_agg._call = real_call  # type: ignore[assignment]
            assert result.total is None
            reason = result.failures[nodes[2].peer]
            assert f"cannot unmask {tampered_owner}'s model" in reason
            assert "authentication tag does not verify" in reason

    trio.run(main)


def test_a_member_refuses_an_aggregator_asking_for_a_threshold_below_its_own():
    async def main() -> None:
        async with swarm(5) as nodes:
            xs = models(5)
            await offer_all(nodes, xs, 1)
            result = await run_aggregation(nodes, 1, fraction=0.2)  # threshold 1 of 3 others
            assert result.total is None
            assert all("refused secure aggregation" in r or "aborted" in r
                       for r in result.failures.values())  # fmt: skip

    trio.run(main)
