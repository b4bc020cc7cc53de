"""`medswarm bench transport`: parameter sets between two processes, libp2p vs plain TCP.

A server process holds one parameter set per size and serves it both through the real
parameter-exchange protocol (Noise + yamux) and over a plain TCP socket with the same framing.
This process fetches each set, validating it the same way on both paths (header checks, sha256
digests, finite values), and reports MB/s and the libp2p/TCP ratio.
"""

import json
import subprocess
import sys
import time
from functools import partial
from typing import Any

import multiaddr
import numpy as np
import trio
from rich.console import Console
from rich.table import Table

from gossip import wire
from gossip.exchange import ParamExchange, SnapshotStore
from gossip.host import build_host, parse_peer_addr

TENSOR_BYTES = 4 << 20  # parameter sets are split into 4 MB tensors, like a model's layers


def parameter_set(megabytes: float) -> dict[str, np.ndarray]:
    total = int(megabytes * 1e6) // 4
    per = TENSOR_BYTES // 4
    rng = np.random.default_rng(0)
    return {
        f"layer{i}.weight": rng.standard_normal(min(per, total - start), dtype=np.float32)
        for i, start in enumerate(range(0, total, per))
    }


def serve_parameter_sets(sizes: list[float]) -> None:
    """The server process: print its libp2p address and TCP port as one JSON line, then serve
    one parameter set per size over both until stdin closes."""
    trio.run(_serve, sizes)


async def _serve(sizes: list[float]) -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair

    from gossip.identity import peer_id_of

    key = create_new_key_pair()
    me = peer_id_of(key)
    host = build_host(key)
    store = SnapshotStore(keep_rounds=len(sizes))
    ParamExchange(host, store, io_timeout=60)
    encoded = []
    for i, size in enumerate(sizes):
        snap = wire.Snapshot("params", i, me, 1, 1, parameter_set(size))
        await store.publish(snap)
        encoded.append(wire.encode_snapshot(snap))

    async def tcp_handler(stream: trio.SocketStream) -> None:
        body = await _tcp_read_frame(stream, wire.MAX_REQUEST_BYTES)
        _kind, index, _wait = wire.decode_request(body, "client")
        header, buffers = encoded[index]
        await stream.send_all(header)
        for buf in buffers:
            await stream.send_all(buf)

    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]), trio.open_nursery() as n:
        listeners = await n.start(partial(trio.serve_tcp, tcp_handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        print(json.dumps({"libp2p": str(host.get_addrs()[0]), "tcp": port}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # serve until the client closes stdin
        n.cancel_scope.cancel()


async def _tcp_read_frame(stream: trio.SocketStream, cap: int) -> bytes:
    (length,) = wire.LENGTH_PREFIX.unpack(await _tcp_read_exactly(stream, 4))
    if length > cap:
        raise ValueError(f"frame of {length} bytes > {cap}")
    return bytes(await _tcp_read_exactly(stream, length))


async def _tcp_read_exactly(stream: trio.SocketStream, n: int) -> bytearray:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError(f"TCP stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


async def _measure(endpoints: dict[str, Any], sizes: list[float], repeats: int) -> list[dict]:
    from libp2p.crypto.ed25519 import create_new_key_pair

    host = build_host(create_new_key_pair())
    exchange = ParamExchange(host, SnapshotStore(), io_timeout=60)
    info = parse_peer_addr(endpoints["libp2p"])
    peer = info.peer_id.to_base58()
    rows = []
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        for index, size in enumerate(sizes):
            expect = wire.Expectation("params", index, index, wire.specs_of(parameter_set(size)))
            nbytes = expect.payload_bytes
            for transport in ("libp2p", "tcp"):
                seconds = []
                for _ in range(repeats):
                    began = time.perf_counter()
                    if transport == "libp2p":
                        await exchange.fetch(info, index, expect, timeout=120, connect_timeout=10)
                    else:
                        await _tcp_fetch(endpoints["tcp"], index, expect, peer)
                    seconds.append(time.perf_counter() - began)
                best = min(seconds)
                rows.append(
                    {
                        "size_mb": size,
                        "transport": transport,
                        "bytes": nbytes,
                        "seconds": seconds,
                        "mb_per_s": nbytes / best / 1e6,
                    }
                )
        await host.close()
    return rows


async def _tcp_fetch(port: int, index: int, expect: wire.Expectation, peer: str) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(wire.encode_request("params", index, 0.0))
        header = wire.parse_header(
            await _tcp_read_frame(stream, wire.MAX_HEADER_BYTES), peer, expect
        )
        wire.decode_payload(header, await _tcp_read_exactly(stream, header.payload_bytes), peer)


def run_transport_bench(sizes: list[float], repeats: int, console: Console) -> dict[str, Any]:
    # The first connect and stream pay fixed setup costs: a small warm-up set goes first.
    all_sizes = [0.01, *sizes]
    server = subprocess.Popen(
        [sys.executable, "-m", "medswarm", "bench", "transport-server", *map(str, all_sizes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        line = server.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server process failed to start")
        rows = trio.run(_measure, json.loads(line), all_sizes, repeats)[2:]
        server.stdin.close()
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    results: dict[str, Any] = {"repeats": repeats, "rows": rows, "ratio": {}}
    table = Table(title="parameter transfer between two processes on loopback (best of repeats)")
    for col in ("MB", "libp2p MB/s", "TCP MB/s", "libp2p/TCP"):
        table.add_column(col, justify="right")
    for size in sizes:
        by = {r["transport"]: r["mb_per_s"] for r in rows if r["size_mb"] == size}
        ratio = by["libp2p"] / by["tcp"]
        results["ratio"][str(size)] = ratio
        table.add_row(f"{size:g}", f"{by['libp2p']:.1f}", f"{by['tcp']:.1f}", f"{ratio:.2f}")
    console.print(table)
    return results
