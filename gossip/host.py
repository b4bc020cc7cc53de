"""One libp2p host per node: persisted Ed25519 identity, Noise security, yamux multiplexing, TCP."""

import contextlib
import logging
import weakref

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, IRawConnection
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import THandler, TProtocol
from libp2p.io.abc import ReadWriteCloser
from libp2p.network.config import ConnectionConfig
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.transport.tcp.tcp import TCP, TCPListener

from gossip.errors import GossipError, PeerUnavailable
from gossip.lean_noise import LeanNoise
from gossip.lean_yamux import MAX_FRAME, LeanMuxerMultistream, LeanYamux

log = logging.getLogger(__name__)

# The largest stream write that goes out as one yamux frame (gossip/lean_yamux.py).
WRITE_CHUNK = MAX_FRAME


class _OwnedTCP(TCP):
    """TCP that remembers every connection it dialled or accepted, so that closing the host
    closes them all, as the OS does for a process that dies. py-libp2p can lose track of a
    connection (one side of a simultaneous dial, one finishing its upgrade while the host
    shuts down) and leave its socket open; a peer would then wait on it until its deadline."""

    def __init__(self) -> None:
        super().__init__()
        self.connections: weakref.WeakSet[IRawConnection] = weakref.WeakSet()

    async def dial(self, maddr: multiaddr.Multiaddr) -> IRawConnection:
        conn = await super().dial(maddr)
        self.connections.add(conn)
        return conn

    def create_listener(self, handler_function: THandler) -> TCPListener:
        async def owned(conn: ReadWriteCloser) -> None:
            self.connections.add(conn)  # type: ignore[arg-type]
            await handler_function(conn)

        return super().create_listener(owned)


_TRANSPORTS: "weakref.WeakKeyDictionary[IHost, _OwnedTCP]" = weakref.WeakKeyDictionary()


def build_host(key_pair: KeyPair) -> IHost:
    # Security and muxer are explicit: a default host also accepts plaintext dialers, and mplex
    # is several times slower than yamux.
    # LeanNoise: the stock Noise handshake and wire format with a cheaper per-message read and
    # write path (gossip/lean_noise.py); about a quarter less CPU per transfer on both ends.
    noise = LeanNoise(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    tcp = _OwnedTCP()
    host = new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): LeanYamux},
        transports=[tcp],
        # One connection per peer is all a node uses. With py-libp2p's default (3) a dial that
        # succeeds still waits out the 250 ms happy-eyeballs head start before returning (the
        # wait ends early only on a failure or on reaching this limit): 19 neighbours dialled
        # one after another cost a node almost 5 s of start-up.
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
    # LeanYamux: the stock /yamux/1.0.0 wire format with ~1 MiB frames and a lean frame loop
    # (gossip/lean_yamux.py). py-libp2p 0.8.1's muxer negotiation builds the stock Yamux whatever
    # muxer_opt names, so this host's negotiator is swapped for one that builds the class given.
    network = host.get_network()
    assert isinstance(network, Swarm)
    stock = network.upgrader.muxer_multistream
    network.upgrader.muxer_multistream = LeanMuxerMultistream(
        stock.transports, stock.negotiate_timeout
    )
    # No outbound identify: a node dials its neighbours at configured addresses and speaks one
    # protocol, so what identify learns (listen addresses, protocols) is never used, and it
    # was half the CPU of setting up a connection (a stream, a signed peer record, both ends).
    # Peers that ask are still answered.
    host._should_identify_peer = lambda peer_id: False  # type: ignore[attr-defined]
    _TRANSPORTS[host] = tcp
    return host


async def close_host(host: IHost, timeout: float = 5.0) -> None:
    """Close the host and every TCP connection it ever had, also when called from a cancelled
    scope (a crash, or the simulator's in-process kill): shielded, bounded by `timeout`."""
    with trio.CancelScope(shield=True), trio.move_on_after(timeout):
        await host.close()
        for conn in list(_TRANSPORTS[host].connections):
            with contextlib.suppress(Exception):  # most are closed already
                await conn.close()


def parse_peer_addr(addr: str) -> PeerInfo:
    """A neighbour's full multiaddr, e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW..."""
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(addr))
    except Exception as exc:  # the multiaddr library raises several unrelated types
        raise GossipError(f"{addr!r} is not a multiaddr ending in /p2p/<peer id>: {exc}") from exc


# Dials in progress at once, per process. Hundreds of in-process nodes dialling together made
# every Noise handshake crawl past its timeout and start over; queued, each finishes quickly.
# A node on its own dials only its few neighbours, so this never binds there.
DIAL_SLOTS = trio.CapacityLimiter(16)


async def ensure_connected(host: IHost, info: PeerInfo, timeout: float) -> None:
    """Connect unless already connected, within `timeout` once a dial slot is free (the dial
    timeouts alone skip the handshake)."""
    peer = info.peer_id
    if host.get_network().connections.get(peer):
        return
    async with DIAL_SLOTS:
        if host.get_network().connections.get(peer):  # the peer dialled us meanwhile
            return
        await _connect(host, info, timeout)


async def _connect(host: IHost, info: PeerInfo, timeout: float) -> None:
    peer = info.peer_id
    try:
        with trio.fail_after(timeout):
            await host.connect(info)
    except trio.TooSlowError:
        _forget_failed_dial(host, peer)
        raise PeerUnavailable(peer.to_base58(), f"connect timed out after {timeout:.1f}s") from None
    except Exception as exc:  # dial errors come in many types; all mean "unreachable this round"
        _forget_failed_dial(host, peer)
        raise PeerUnavailable(peer.to_base58(), f"connect failed: {exc}", retryable=True) from exc


async def drop_connections(host: IHost, peer: ID, timeout: float = 5.0) -> None:
    """Close every connection to `peer`, so the next request dials it afresh."""
    with trio.CancelScope(shield=True), trio.move_on_after(timeout):
        try:
            await host.get_network().close_peer(peer)
        except Exception as exc:  # closing a dead connection may fail in many ways; it is gone
            log.debug("closing connections to %s: %r", peer, exc)


def _forget_failed_dial(host: IHost, peer: ID) -> None:
    # After a failed dial py-libp2p blocks the peer for 60 s and keeps its stale address; a
    # restarted neighbour must be dialable next round, from its configured address.
    network = host.get_network()
    unblock = getattr(network, "unblock_peer", None)
    if unblock is not None:
        unblock(peer)
    host.get_peerstore().clear_addrs(peer)
