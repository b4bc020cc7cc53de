"""Closing a host closes every TCP connection it had, also one py-libp2p lost track of (seen
for a dialled connection in the simulator's in-process kills), and also from a cancelled scope:
what the peers of a dead process see. A real host on loopback."""

import multiaddr
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from gossip import host as host_module
from gossip.host import build_host, close_host

pytestmark = pytest.mark.integration

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


def test_every_connection_the_host_dialled_is_closed_with_it_even_when_cancelled():
    async def main() -> None:
        host = build_host(create_new_key_pair())
        [far_end] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        far_port = far_end.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()
            up = trio.Event()

            async def run_host() -> None:
                with scope:
                    try:
                        async with host.run(LISTEN):
                            up.set()
                            await trio.sleep_forever()
                    finally:
                        await close_host(host)

            nursery.start_soon(run_host)
            await up.wait()
            [listening] = host.get_addrs()
            # A connection the swarm never registered, as a lost one looks to it.
            transport = host_module._TRANSPORTS[host]
            lost = await transport.dial(multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{far_port}"))
            accepted = await far_end.accept()
            scope.cancel()  # a crash, or the simulator's kill
            with trio.fail_after(3):
                assert await accepted.receive_some() == b""  # closed: the far end sees EOF
        del lost  # held until here, as whatever held the lost connection did
        with pytest.raises(OSError):  # and nothing listens any more
            await trio.open_tcp_stream("127.0.0.1", int(listening.value_for_protocol("tcp")))
        await far_end.aclose()

    trio.run(main)
