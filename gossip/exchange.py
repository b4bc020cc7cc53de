"""The parameter-exchange protocol: serve this node's snapshots, fetch a neighbour's.

A request names (kind, round) and how long the asker will wait; the server long-polls until it
has that round or the wait runs out. A server that no longer holds an old round answers with its
newest one, so a node that restarts catches up; the asker's round window decides what it takes.

An asker keeps one stream per neighbour and sends its requests on it one after another: opening
a libp2p stream (yamux frames plus a multistream-select negotiation) cost about three times the
CPU of a small request itself, which is what limits how many nodes share one event loop. A
stream whose state is in doubt (a deadline hit mid-request, an invalid answer) is reset and the
next request opens a new one; an asker that sends one request and closes is served as well.
"""

import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import numpy as np
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.peer.peerinfo import PeerInfo

from gossip import wire
from gossip.errors import GossipError, PeerMessageError, PeerUnavailable
from gossip.host import WRITE_CHUNK, drop_connections, ensure_connected

log = logging.getLogger(__name__)

PROTOCOL = TProtocol("/medswarm/params/1.0.0")
READ_CHUNK = 1 << 20
MAX_SERVER_WAIT = 120.0
IDLE_STREAM_SECONDS = 600.0  # the server closes a kept stream unused for this long
FETCH_ATTEMPTS = 3
RETRY_PAUSE = 0.2

Fetched = tuple[wire.Header, dict[str, np.ndarray]]  # a validated header and its tensors
T = TypeVar("T")
# What answers a request of another kind (e.g. secure aggregation's): the request's fields,
# the asking peer; it returns the bytes to write back.
RequestHandler = Callable[[str, dict[str, Any]], Awaitable[Sequence[bytes]]]
# One request and its answer on a stream (the asker's side): returns the parsed answer or
# raises _StreamGone if the stream ended cleanly before it.
Transaction = Callable[[INetStream, float], Awaitable[T]]
# Whether the link to a peer is up for a request of (kind, round): a snapshot's, or another kind's
# (round None if it names none). The host's own judgement of a simulated partition.
LinkCheck = Callable[[str, str | None, int | None], bool]


@dataclass
class TrafficCounters:
    """Bytes moved and messages rejected, per peer; the round loop reads and resets them."""

    bytes_sent: int = 0
    bytes_received: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    served: dict[str, int] = field(default_factory=dict)  # newest "params" round sent, per peer
    # Per kind, the newest round sent, per peer ("params" is `served`).
    served_kinds: dict[str, dict[str, int]] = field(default_factory=dict)

    def reset(self) -> None:
        self.bytes_sent = self.bytes_received = 0

    def served_of(self, kind: str) -> dict[str, int]:
        return self.served if kind == "params" else self.served_kinds.setdefault(kind, {})


@dataclass
class _Encoded:
    round: int
    header: bytes
    buffers: list[bytes]


class SnapshotStore:
    """The snapshots this node serves, a few rounds per kind, with waiting for future rounds."""

    def __init__(self, keep_rounds: int = 4) -> None:
        self._keep = keep_rounds
        self._by_kind: dict[str, dict[int, _Encoded]] = {}
        self._final: dict[str, _Encoded] = {}  # a kind's last word, the answer for later rounds
        self.retired: set[str] = set()  # kinds this node publishes no more: answered "gone"
        self._published = trio.Condition()

    async def publish(self, snap: wire.Snapshot, final: bool = False) -> None:
        """Serve `snap`; `final`: it is also the answer for any later round of its kind (a
        finished agreement, whose neighbours may still be asking for later steps)."""
        header, buffers = wire.encode_snapshot(snap)
        encoded = _Encoded(snap.round, header, buffers)
        rounds = self._by_kind.setdefault(snap.kind, {})
        rounds[snap.round] = encoded
        for old in sorted(rounds)[: -self._keep]:
            del rounds[old]
        if final:
            self._final[snap.kind] = encoded
        async with self._published:
            self._published.notify_all()

    def _lookup(self, kind: str, round_: int) -> _Encoded | None:
        rounds = self._by_kind.get(kind, {})
        if round_ in rounds:
            return rounds[round_]
        final = self._final.get(kind)
        if final is not None and round_ >= final.round:
            return final
        if rounds and round_ < min(rounds):
            return rounds[max(rounds)]
        return None

    async def wait_for(self, kind: str, round_: int, wait: float) -> _Encoded | None:
        with trio.move_on_after(min(max(wait, 0.0), MAX_SERVER_WAIT)):
            while (found := self._lookup(kind, round_)) is None:
                async with self._published:
                    await self._published.wait()
            return found
        return None


class ParamExchange:
    """Both sides of the protocol on one libp2p host."""

    def __init__(
        self,
        host: IHost,
        store: SnapshotStore,
        io_timeout: float,
        allow_peer: Callable[[str], bool] = lambda _peer: True,
        link_up: LinkCheck = lambda _peer, _kind, _round: True,
    ) -> None:
        self.host = host
        self.store = store
        self.io_timeout = io_timeout
        # Who may ask at all (consortium membership): judged before a request is read.
        self.allow_peer = allow_peer
        # Whether the link to the peer is up (a simulated partition): for a snapshot, judged by
        # its round once it is published, not by the round this host is in when the request
        # arrives (early, for the round after a partition, or late, for one before it).
        self.link_up = link_up
        self.counters = TrafficCounters()
        self.handlers: dict[str, RequestHandler] = {}  # other request kinds, by kind
        self._streams: dict[str, INetStream] = {}  # kept open per neighbour we fetch from
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        host.set_stream_handler(PROTOCOL, self._handle)

    async def _handle(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        # An exception escaping a stream handler kills the whole host: everything stops here.
        try:
            await self._serve(stream, peer)
        except PeerMessageError as exc:
            self.counters.rejected[peer] += 1
            log.warning("rejected request: %s", exc)
        except trio.TooSlowError:
            log.info("peer %s: serving timed out", peer)
        except Exception as exc:  # stream resets, closed connections, library errors
            log.info("peer %s: serving failed: %r", peer, exc)
        finally:
            with trio.move_on_after(1.0):
                await stream.close()

    async def _serve(self, stream: INetStream, peer: str) -> None:
        """Answer the requests on one stream in turn until the asker closes it."""
        wait_for_request = self.io_timeout  # the first request follows the stream's opening
        while True:
            with trio.fail_after(wait_for_request):
                body = await read_frame(stream, wire.MAX_REQUEST_BYTES, peer, eof_ok=True)
            if body is None:
                return
            # Asked per request: a kept stream outlives a member's deactivation or a partition.
            if not self.allow_peer(peer):
                await self._refuse(stream, peer, "unauthorised peer")
                return
            request = wire.unpack_map(body, "request", peer)
            kind = request.get("kind")
            if kind in self.handlers:
                round_ = request.get("round")  # a request of another kind may name a round
                if not self.link_up(peer, kind, round_ if type(round_) is int else None):
                    await self._refuse(stream, peer, "peer cut off")
                    return
                await self._answer_other(stream, peer, request)
            elif not await self._answer(stream, peer, *wire.request_fields(request, peer)):
                await self._refuse(stream, peer, "peer cut off")
                return
            wait_for_request = IDLE_STREAM_SECONDS

    async def _refuse(self, stream: INetStream, peer: str, why: str) -> None:
        self.counters.refused[peer] += 1
        log.warning("refused request from %s %s", why, peer)
        with trio.move_on_after(self.io_timeout):  # say why, then hang up
            await stream.write(wire.encode_status("refused"))

    async def _answer(
        self, stream: INetStream, peer: str, kind: str, round_: int, wait: float
    ) -> bool:
        """Send the snapshot of (kind, round_) once published; False (nothing sent) if the link
        to the peer is down by then."""
        if kind in self.store.retired:  # e.g. a privacy budget spent: no need to wait for it
            with trio.fail_after(self.io_timeout):
                await stream.write(wire.encode_status("gone"))
            return True
        found = await self.store.wait_for(kind, round_, wait)
        if not self.link_up(peer, kind, round_ if found is None else found.round):
            return False
        with trio.fail_after(self.io_timeout):
            if found is None:
                await stream.write(wire.encode_status("not_ready"))
                return True
            size = len(found.header) + sum(map(len, found.buffers))
            if size <= WRITE_CHUNK:
                # One write, so one yamux frame, not one per tensor (measured on the
                # breast-cancer MLP, both ends in one process: 2.3 ms of CPU per fetch, not 4.2).
                await stream.write(b"".join([found.header, *found.buffers]))
            else:
                await stream.write(found.header)
                for buf in found.buffers:
                    await stream.write(buf)  # the muxer cuts it into frames
        self.counters.bytes_sent += len(found.header) + sum(map(len, found.buffers))
        served = self.counters.served_of(kind)
        served[peer] = max(served.get(peer, -1), found.round)
        return True

    async def _answer_other(self, stream: INetStream, peer: str, request: dict[str, Any]) -> None:
        parts = await self.handlers[request["kind"]](peer, request)
        with trio.fail_after(self.io_timeout):
            await stream.write(b"".join(parts))
        self.counters.bytes_sent += sum(map(len, parts))

    async def fetch(
        self,
        info: PeerInfo,
        round_: int,
        expect: wire.Expectation,
        timeout: float,
        connect_timeout: float,
    ) -> Fetched:
        """Fetch a neighbour's snapshot for `round_`, all within `timeout` seconds.

        Raises PeerUnavailable (dead, slow, nothing in time) or PeerMessageError (invalid: also
        counted against the peer).
        """

        async def transact(stream: INetStream, deadline: float) -> Fetched:
            return await self._request(stream, info.peer_id.to_base58(), round_, expect, deadline)

        return await self.call(info, transact, timeout, connect_timeout, f"round {round_}")

    async def call(
        self,
        info: PeerInfo,
        transact: Transaction[T],
        timeout: float,
        connect_timeout: float,
        what: str,
    ) -> T:
        """One request and its answer on the kept stream to `info`, all within `timeout`
        seconds, retrying transient failures: what `fetch` does for parameters, for any
        request kind. `what` names the request in errors."""
        peer = info.peer_id.to_base58()
        deadline = trio.current_time() + timeout
        attempt = 1
        while True:
            try:
                return await self._call_once(info, peer, transact, deadline, connect_timeout, what)
            except PeerUnavailable as exc:
                # Retry a transient failure (a stream that failed to open under load, a reset)
                # while the deadline allows: a one-sided miss shifts the swarm's weighted average.
                pause = RETRY_PAUSE * attempt
                last = attempt == FETCH_ATTEMPTS or trio.current_time() + pause >= deadline
                if not exc.retryable or last:
                    raise
                log.info("%s: retrying %s after %s", what, peer, exc.reason)
                await trio.sleep(pause)
                attempt += 1

    async def _call_once(
        self,
        info: PeerInfo,
        peer: str,
        transact: Transaction[T],
        deadline: float,
        connect_timeout: float,
        what: str,
    ) -> T:
        try:
            with trio.fail_at(deadline):
                async with self._locks[peer]:  # one request at a time on a kept stream
                    return await self._on_kept_stream(
                        info, peer, transact, deadline, connect_timeout
                    )
        except trio.TooSlowError:
            raise PeerUnavailable(peer, f"no answer for {what} by the deadline") from None
        except PeerMessageError:
            self.counters.rejected[peer] += 1
            raise
        except GossipError:
            raise
        except Exception as exc:  # stream resets and closed connections surface in many types
            raise PeerUnavailable(peer, f"transfer failed: {exc!r}", retryable=True) from exc

    async def _on_kept_stream(
        self,
        info: PeerInfo,
        peer: str,
        transact: Transaction[T],
        deadline: float,
        connect_timeout: float,
    ) -> T:
        kept = self._streams.pop(peer, None)
        if kept is not None:
            try:
                return await self._request_keeping(kept, peer, transact, deadline)
            except _StreamGone:  # the server closed it while idle, or restarted: open anew
                pass
        await ensure_connected(self.host, info, connect_timeout)
        try:
            stream = await self.host.new_stream(info.peer_id, [PROTOCOL])
        except StreamFailure:
            # The connection did not answer within libp2p's negotiation timeout: most likely
            # its other end is gone without closing it (a crashed or frozen host, a dropped NAT
            # entry). Drop it, or every retry would wait on it again instead of dialling.
            await drop_connections(self.host, info.peer_id)
            raise
        try:
            return await self._request_keeping(stream, peer, transact, deadline)
        except _StreamGone:
            raise PeerUnavailable(peer, "stream closed before an answer", retryable=True) from None

    async def _request_keeping(
        self, stream: INetStream, peer: str, transact: Transaction[T], deadline: float
    ) -> T:
        """A request on `stream`, kept for the next one if answered; reset otherwise (closed,
        cut off mid-answer or invalid: its state is unknown)."""
        try:
            result = await transact(stream, deadline)
        except BaseException:
            await _discard(stream)
            raise
        self._streams[peer] = stream
        return result

    async def _request(
        self,
        stream: INetStream,
        peer: str,
        round_: int,
        expect: wire.Expectation,
        deadline: float,
    ) -> Fetched:
        # Let the server hold the request for most of our deadline, keeping a margin to send
        # the parameters once they are ready.
        wait = self.server_wait(deadline)
        body = await self.exchange_frames(
            stream, peer, wire.encode_request(expect.kind, round_, wait), wire.MAX_HEADER_BYTES
        )
        header = wire.parse_header(body, peer, expect)
        if header.status != "ok":
            raise PeerUnavailable(peer, f"round {round_}: {header.status}")
        payload = await read_exactly(stream, header.payload_bytes, peer)
        self.counters.bytes_received += len(body) + 4 + len(payload)
        return header, wire.decode_payload(header, payload, peer)

    def server_wait(self, deadline: float) -> float:
        """How long the server may hold a request: most of our deadline, keeping a margin to
        send the answer once it is ready."""
        remaining = deadline - trio.current_time()
        return max(0.0, remaining - min(self.io_timeout / 2, remaining / 4))

    @staticmethod
    async def exchange_frames(stream: INetStream, peer: str, request: bytes, cap: int) -> bytes:
        """Write a request frame, read the answer's first frame (at most `cap` bytes)."""
        try:
            await stream.write(request)
        except Exception as exc:  # the library raises several types for a closed stream
            raise _StreamGone from exc
        body = await read_frame(stream, cap, peer, eof_ok=True)
        if body is None:
            raise _StreamGone
        return body


class _StreamGone(Exception):
    """The stream ended cleanly before the request was answered."""


async def _discard(stream: INetStream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        try:
            await stream.reset()
        except Exception as exc:  # already closed or reset: nothing left to do
            log.debug("reset of a discarded stream failed: %r", exc)


@overload
async def read_frame(stream: INetStream, cap: int, peer: str) -> bytes: ...
@overload
async def read_frame(stream: INetStream, cap: int, peer: str, eof_ok: bool) -> bytes | None: ...
async def read_frame(stream: INetStream, cap: int, peer: str, eof_ok: bool = False) -> bytes | None:
    """A length-prefixed frame; the length is checked against `cap` before anything is read.

    `eof_ok`: a stream that ends before the frame's first byte gives None (a clean close
    between requests), not a truncation error."""
    prefix = await read_exactly(stream, wire.LENGTH_PREFIX.size, peer, eof_ok)
    if prefix is None:
        return None
    (length,) = wire.LENGTH_PREFIX.unpack(prefix)
    if length > cap:
        raise PeerMessageError(peer, "oversized", f"frame of {length} bytes > cap {cap}")
    return bytes(await read_exactly(stream, length, peer))


@overload
async def read_exactly(stream: INetStream, n: int, peer: str) -> bytearray: ...
@overload
async def read_exactly(stream: INetStream, n: int, peer: str, eof_ok: bool) -> bytearray | None: ...
async def read_exactly(
    stream: INetStream, n: int, peer: str, eof_ok: bool = False
) -> bytearray | None:
    # stream.read(n) returns at most n bytes, and the library's own helper gives up after 100
    # partial reads: loop until done or the peer closes. The buffer is allocated once: growing
    # it chunk by chunk re-copied the payload several times over.
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        try:
            chunk = await stream.read(min(n - got, READ_CHUNK))
        except EOFError:  # the library signals a peer's close either way
            chunk = b""
        if not chunk:
            if eof_ok and got == 0:
                return None
            raise PeerMessageError(peer, "truncated", f"stream ended after {got} of {n} bytes")
        view[got : got + len(chunk)] = chunk
        got += len(chunk)
    return buf
