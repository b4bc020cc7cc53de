"""A build_host node (LeanNoise + LeanYamux) and a stock py-libp2p node (Noise + yamux) exchange
parameters both ways."""

import multiaddr
import numpy as np
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from gossip import wire
from gossip.exchange import ParamExchange, SnapshotStore
from gossip.host import build_host, parse_peer_addr
from gossip.identity import peer_id_of
from gossip.lean_noise import LeanNoiseSession
from gossip.lean_yamux import RECV_WINDOW, LeanYamux
from medswarm.bench.transport import parameter_set

pytestmark = pytest.mark.integration

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
# Five tensors: hundreds of Noise messages and yamux frames each way, and more than a LeanYamux
# receive window, so both receivers return credit (the stock one every 256 KiB or so).
MEGABYTES = 17.0
assert MEGABYTES * 1e6 > 2 * RECV_WINDOW


def stock_host(key):
    noise = NoiseTransport(key, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
    )


def muxed_conns(host):
    conns = host.get_network().connections.values()
    return [
        c.muxed_conn for entry in conns for c in (entry if isinstance(entry, list) else [entry])
    ]


@pytest.mark.parametrize("first", ["lean", "stock"])  # who dials: Noise initiator or responder
def test_build_host_and_stock_host_exchange_parameters_both_ways(first):
    lean_set = parameter_set(MEGABYTES)
    sets = {"lean": lean_set, "stock": {name: arr * -2.0 for name, arr in lean_set.items()}}

    async def main():
        keys = {"lean": create_new_key_pair(), "stock": create_new_key_pair()}
        hosts = {"lean": build_host(keys["lean"]), "stock": stock_host(keys["stock"])}
        exchanges = {}
        for side, host in hosts.items():
            store = SnapshotStore()
            me = peer_id_of(keys[side])
            await store.publish(wire.Snapshot("params", 3, me, 10, 1, sets[side]))
            exchanges[side] = ParamExchange(host, store, io_timeout=30)
        got = {}
        async with hosts["lean"].run([LOOPBACK]), hosts["stock"].run([LOOPBACK]):
            addr = {side: str(host.get_addrs()[0]) for side, host in hosts.items()}
            order = [("lean", "stock"), ("stock", "lean")]
            for me, other in order if first == "lean" else order[::-1]:
                expect = wire.Expectation("params", 3, 3, wire.specs_of(sets[other]))
                with trio.fail_after(60):
                    header, tensors = await exchanges[me].fetch(
                        parse_peer_addr(addr[other]), 3, expect, timeout=30, connect_timeout=10
                    )
                assert header.sender == peer_id_of(keys[other])
                got[me] = tensors
            muxers = {side: muxed_conns(host) for side, host in hosts.items()}
            await hosts["lean"].close()
            await hosts["stock"].close()
        # The pairing under test really was lean on one end and stock on the other.
        for side, muxer_type, session_type in (
            ("lean", LeanYamux, LeanNoiseSession),
            ("stock", Yamux, SecureSession),
        ):
            assert muxers[side] and all(type(m) is muxer_type for m in muxers[side])
            assert all(type(m.secured_conn) is session_type for m in muxers[side])
        return got

    got = trio.run(main)
    for me, other in (("lean", "stock"), ("stock", "lean")):
        assert list(got[me]) == list(sets[other])
        for name, arr in sets[other].items():
            np.testing.assert_array_equal(got[me][name], arr)
