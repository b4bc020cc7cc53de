"""(d) A peer that answers with malformed, oversized, wrong-shape, non-finite, impostor and
truncated messages: the real node process rejects and counts each one and finishes its rounds."""

import itertools
import subprocess

import multiaddr
import numpy as np
import pytest
import trio

from gossip import wire
from gossip.exchange import PROTOCOL, read_frame
from gossip.host import build_host
from gossip.identity import create_key_file, peer_id_of
from node.models import build_model
from sim.local_swarm import free_port, init_swarm, start_node, stop_processes
from tests.integration.swarm_support import metrics, synthetic_sites

pytestmark = pytest.mark.integration

ROUNDS = 8
FEATURES = 2  # the synthetic schema's columns


def honest_tensors(kind: str) -> dict[str, np.ndarray]:
    model = build_model("logreg", FEATURES, (), 0)
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def bad_response(behaviour: str, kind: str, round_: int, me: str) -> list[bytes]:
    tensors = honest_tensors(kind)
    snap = wire.Snapshot(kind, round_, me, 10, 1, tensors)
    if behaviour == "garbage":
        return [wire.LENGTH_PREFIX.pack(5) + b"\xc1\xc1\xc1\xc1\xc1"]
    if behaviour == "oversized":
        return [wire.LENGTH_PREFIX.pack(wire.MAX_HEADER_BYTES + 1) + b"\0" * 64]
    if behaviour == "wrong_shape":
        snap = wire.Snapshot(
            kind,
            round_,
            me,
            10,
            1,
            {k: np.zeros(v.shape + (2,), v.dtype) for k, v in tensors.items()},
        )
    if behaviour == "nan":
        snap = wire.Snapshot(
            kind,
            round_,
            me,
            10,
            1,
            {k: np.full(v.shape, np.nan, v.dtype) for k, v in tensors.items()},
        )
    if behaviour == "impostor":
        snap = wire.Snapshot(
            kind, round_, "12D3KooWKcTfJHmsB4Dbd1Bv4RbKWkR6nb3fXGNYEvf4oSAtGhzq", 10, 1, tensors
        )
    header, buffers = wire.encode_snapshot(snap)
    payload = b"".join(buffers)
    if behaviour == "truncated":
        payload = payload[: len(payload) // 2]
    return [header, payload]


BEHAVIOURS = ["garbage", "oversized", "wrong_shape", "nan", "impostor", "truncated"]
EXPECTED_RULE = {
    "garbage": "schema",
    "oversized": "oversized",
    "wrong_shape": "shape",
    "nan": "non_finite",
    "impostor": "identity",
    "truncated": "truncated",
}


def test_invalid_messages_are_rejected_counted_and_the_node_keeps_going(tmp_path):
    sites = synthetic_sites(tmp_path / "data", {"honest": 200})
    swarm = tmp_path / "swarm"
    # One node and no neighbours in its config: its only neighbour is the evil peer (below).
    schema = tmp_path / "data" / "schema.toml"
    init_swarm(swarm, sites, schema, rounds=ROUNDS, topology=[set()], model="logreg")
    evil_key = create_key_file(tmp_path / "evil.key")
    evil_id, evil_port = peer_id_of(evil_key), free_port()
    overrides = {
        "node.neighbours": [f"/ip4/127.0.0.1/tcp/{evil_port}/p2p/{evil_id}"],
        "timeouts.fetch_seconds": 6,
        "timeouts.linger_seconds": 0,
    }
    sent: list[str] = []

    async def evil_peer(proc: subprocess.Popen) -> None:
        host = build_host(evil_key)
        cycle = itertools.cycle(BEHAVIOURS)

        async def handler(stream) -> None:
            try:
                body = await read_frame(stream, wire.MAX_REQUEST_BYTES, "node")
                kind, round_, _wait = wire.decode_request(body, "node")
                behaviour = next(cycle)
                # Counted before writing: a node that rejects the header resets the stream, and
                # the payload write after it may then fail (sooner, the faster the transport).
                sent.append(behaviour)
                for part in bad_response(behaviour, kind, round_, evil_id):
                    await stream.write(part)
                await stream.close()
            except Exception:  # the node may reset the stream mid-write: that is its right
                pass

        host.set_stream_handler(PROTOCOL, handler)
        async with host.run([multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{evil_port}")]):
            with trio.fail_after(240):
                while proc.poll() is None:
                    await trio.sleep(0.1)

    proc = start_node(swarm, "honest", overrides)
    try:
        trio.run(evil_peer, proc)
    finally:
        stop_processes([proc])
    assert proc.returncode == 0, (swarm / "nodes" / "honest" / "node.log").read_text()[-3000:]

    records = metrics(swarm, "honest")
    assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
    # Its only member is itself (the evil peer holds no registered key): the scaling agreement
    # asks nobody, and every request the evil peer answers is for a round's parameters.
    assert len(sent) == ROUNDS
    # Nothing from the bad peer was ever merged, and each bad message was counted against it.
    assert all(r["neighbours_reached"] == [] for r in records)
    assert records[-1]["rejected_total"] == {evil_id: len(sent)}
    for record, behaviour in zip(records, sent, strict=True):
        reason = record["failures"][evil_id]
        assert reason.startswith(f"rejected ({EXPECTED_RULE[behaviour]})"), (behaviour, reason)
