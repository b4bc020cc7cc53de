"""A 50 MB parameter set crosses between two processes over the real protocol, bit for bit."""

import json
import subprocess
import sys

import numpy as np
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from gossip import wire
from gossip.exchange import ParamExchange, SnapshotStore
from gossip.host import build_host, parse_peer_addr
from medswarm.bench.transport import parameter_set

pytestmark = pytest.mark.integration


def test_fifty_megabytes_transfer_intact_over_noise_and_yamux():
    server = subprocess.Popen(
        [sys.executable, "-m", "medswarm", "bench", "transport-server", "50"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    expected = parameter_set(50)

    async def fetch(addr: str):
        host = build_host(create_new_key_pair())
        exchange = ParamExchange(host, SnapshotStore(), io_timeout=60)
        expect = wire.Expectation("params", 0, 0, wire.specs_of(expected))
        async with host.run([]):
            header, tensors = await exchange.fetch(parse_peer_addr(addr), 0, expect, 120, 10)
            await host.close()
        return header, tensors, exchange.counters.bytes_received

    assert server.stdout is not None and server.stdin is not None
    try:
        endpoints = json.loads(server.stdout.readline())
        header, tensors, received = trio.run(fetch, endpoints["libp2p"])
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    assert header.payload_bytes == 50_000_000
    assert received > 50_000_000
    assert list(tensors) == list(expected)
    for name, arr in expected.items():
        np.testing.assert_array_equal(tensors[name], arr)
