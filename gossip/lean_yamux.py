"""A leaner /yamux/1.0.0 for bulk transfers: the same frame format, fewer frames, less Python each.

py-libp2p 0.8.1's yamux spends most of a bulk transfer's CPU on Python work per 64 KiB frame
(debug f-strings formatted whether logged or not, environment lookups, locks, a timeout each)
and copies every received byte five times. `LeanYamux` keeps the stock connection object (stream
bookkeeping, close, reset, ping loop, sweeper) and replaces only the hot paths:

- sending: DATA frames of up to ~1 MiB, as much as the peer's window allows, each one socket write
  (the spec bounds a frame only by the window; stock py-libp2p accepts up to 16 MiB);
- receiving: a frame loop with no per-frame logging, that keeps received data as the pieces
  Noise decrypted it into (no copies) and hands them to readers as they are;
- flow control: a fixed 8 MiB receive window, granted as a delta on the SYN or ACK frame (as
  go-yamux does) and refilled in half-window batches; a writer waits on an event, not by polling.

Any /yamux/1.0.0 peer interoperates: frame sizes and window increments are each side's choice.
"""

import logging
import struct
from collections import deque
from collections.abc import Iterable

import trio
from libp2p.abc import IMuxedConn, ISecureConn
from libp2p.io.exceptions import IncompleteReadError
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH as NOISE_MAX_PLAINTEXT
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamError, MuxedStreamReset
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.stream_muxer.yamux.yamux import (
    DEFAULT_WINDOW_SIZE,
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    HEADER_SIZE,
    MAX_WINDOW_SIZE,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    YAMUX_HEADER_FORMAT,
    Yamux,
    YamuxStream,
)

log = logging.getLogger(__name__)

HEADER = struct.Struct(YAMUX_HEADER_FORMAT)
# A full frame's payload fills 16 Noise messages exactly (its header goes in a message of its own).
MAX_FRAME = 16 * NOISE_MAX_PLAINTEXT
# What a peer may send ahead on one stream, i.e. the most one stream buffers for a slow reader.
RECV_WINDOW = 8 << 20
WINDOW_GRANT = RECV_WINDOW - DEFAULT_WINDOW_SIZE  # every stream starts with the spec's 256 KiB
WINDOW_WAIT = 5.0  # a writer waiting this long for window fails, as with the stock yamux
DATA_READ_TIMEOUT = 60.0  # for the body of a frame whose header arrived, as the stock yamux


class _Pieces:
    """A stream's received, unread bytes, kept as the pieces they arrived in: storing copies
    nothing, and a read that takes whole pieces gets them as they are."""

    def __init__(self) -> None:
        self._pieces: deque[bytes] = deque()
        self._pos = 0  # how much of the first piece was read already
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def extend(self, pieces: Iterable[bytes]) -> None:
        for piece in pieces:
            self._pieces.append(piece)
            self._len += len(piece)

    def clear(self) -> None:
        self._pieces.clear()
        self._pos = self._len = 0

    def take(self, n: int) -> bytes:
        """Up to n bytes from the front."""
        out = []
        pieces = self._pieces
        while n > 0 and pieces:
            first, pos = pieces[0], self._pos
            if len(first) - pos <= n:
                out.append(first[pos:] if pos else first)
                pieces.popleft()
                self._pos = 0
                n -= len(out[-1])
            else:
                out.append(first[pos : pos + n])
                self._pos = pos + n
                n = 0
        data = out[0] if len(out) == 1 else b"".join(out)
        self._len -= len(data)
        return data


class LeanYamuxStream(YamuxStream):
    conn: "LeanYamux"

    def __init__(self, stream_id: int, conn: "LeanYamux", is_initiator: bool) -> None:
        super().__init__(stream_id, conn, is_initiator)
        self.recv_window = RECV_WINDOW  # the SYN or ACK frame grants the peer the difference
        self._send_lock = trio.Lock()  # one write at a time: frames of two writes never mix
        self._window_opened = trio.Event()

    async def write(self, data: bytes) -> None:
        view = memoryview(data).cast("B")
        async with self._send_lock:
            sent = 0
            while sent < len(view):
                if self.send_closed:
                    raise MuxedStreamError("Stream is closed for sending")
                if self.closed:
                    raise MuxedStreamError("Stream is closed")
                if self.send_window <= 0:
                    await self._wait_for_window()
                    continue
                size = min(self.send_window, MAX_FRAME, len(view) - sent)
                self.send_window -= size
                header = HEADER.pack(0, TYPE_DATA, 0, self.stream_id, size)
                await self.conn._write_data_frame(header, view[sent : sent + size])
                sent += size

    async def _wait_for_window(self) -> None:
        with trio.move_on_after(WINDOW_WAIT) as waited:
            while self.send_window <= 0 and not self.closed:
                self._window_opened = trio.Event()  # set by the peer's WINDOW_UPDATE or a RST
                with trio.move_on_after(0.05):  # and look again now and then: a close sets none
                    await self._window_opened.wait()
        if waited.cancelled_caught:
            raise MuxedStreamError("Timed out waiting for window update after 5 seconds.")

    async def read(self, n: int | None = -1) -> bytes:
        # The stock semantics: up to n bytes (all that is buffered for n None or -1) once there
        # are any; a reset raises MuxedStreamReset, an end of stream MuxedStreamEOF.
        conn, sid = self.conn, self.stream_id
        buffer = conn.stream_buffers.get(sid)
        if self.recv_closed and not buffer:
            raise (
                MuxedStreamReset("Stream was reset")
                if self.reset_received
                else MuxedStreamEOF("Stream is closed for receiving")
            )
        while True:
            buffer = conn.stream_buffers.get(sid)
            if sid not in conn.streams or conn.event_shutting_down.is_set():
                raise MuxedStreamEOF("Stream closed")
            if buffer is None:
                raise (
                    MuxedStreamReset("Stream was reset")
                    if self.reset_received
                    else (MuxedStreamEOF("Stream buffer closed"))
                )
            if buffer and (self.recv_closed or not self.reset_received):
                data = buffer.take(len(buffer) if n is None or n < 0 else n)
                if self.closed and not buffer:
                    conn._finalize_stream_locked(self, fully_closed=True)
                await self._return_credit()
                return data
            if self.reset_received:
                raise MuxedStreamReset("Stream was reset")
            if self.recv_closed:
                raise MuxedStreamEOF("Stream is closed for receiving")
            if self.closed:
                raise MuxedStreamReset("Stream is reset or closed")
            event = conn.stream_events.get(sid)
            if event is None:
                raise MuxedStreamEOF("Stream was removed")
            if event.is_set():  # from data already read: wait for the next
                event = conn.stream_events[sid] = trio.Event()
            await event.wait()

    async def _return_credit(self) -> None:
        # What the reader consumed since the last update goes back to the peer once it is half
        # the window: about two WINDOW_UPDATE frames per window's worth of data.
        buffered = len(self.conn.stream_buffers.get(self.stream_id) or ())
        consumed = RECV_WINDOW - self.recv_window - buffered
        if consumed >= RECV_WINDOW // 2 and not (self.closed or self.recv_closed):
            self.recv_window += consumed
            await self.send_window_update(consumed)


class LeanYamux(Yamux):
    # Filled by _add_stream only: every stream is a LeanYamuxStream, every buffer a _Pieces.
    streams: dict[int, LeanYamuxStream]  # type: ignore[assignment]
    stream_buffers: dict[int, _Pieces]  # type: ignore[assignment]

    async def _write_frame(self, data: bytes) -> None:
        async with self._write_lock:
            await self.secured_conn.write(data)

    async def _write_data_frame(self, header: bytes, payload: memoryview) -> None:
        # A LeanNoiseSession encrypts the payload where it lies, in whole messages after the
        # header's: no copy to join the two, and the receiver gets whole messages to keep.
        write_parts = getattr(self.secured_conn, "write_parts", None)
        async with self._write_lock:
            if write_parts is not None:
                await write_parts((header, payload))
            else:
                await self.secured_conn.write(header + payload)

    async def open_stream(self) -> YamuxStream:
        await self.stream_backlog_semaphore.acquire()
        async with self.streams_lock:
            if self.event_shutting_down.is_set():
                self.stream_backlog_semaphore.release()
                raise MuxedStreamError("Connection is shutting down")
            stream_id = self.next_stream_id
            self.next_stream_id += 2
            stream = self._add_stream(stream_id, is_initiator=True)
            stream._owns_backlog_slot = True
        try:
            await self._write_frame(
                HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_SYN, stream_id, WINDOW_GRANT)
            )
        except Exception as exc:
            stream._backlog_slot_released = True
            self.stream_backlog_semaphore.release()
            for table in (self.streams, self.stream_buffers, self.stream_events):
                table.pop(stream_id, None)
            raise MuxedStreamError(f"Failed to send SYN: {exc}") from exc
        return stream

    def _add_stream(self, stream_id: int, is_initiator: bool) -> LeanYamuxStream:
        stream = LeanYamuxStream(stream_id, self, is_initiator)
        self.streams[stream_id] = stream
        self.stream_buffers[stream_id] = _Pieces()
        self.stream_events[stream_id] = trio.Event()
        return stream

    async def handle_incoming(self) -> None:
        conn = self.secured_conn
        try:
            while not self.event_shutting_down.is_set():
                header = await conn.read(HEADER_SIZE)
                if len(header) != HEADER_SIZE:
                    raise IncompleteReadError(
                        "connection closed inside a yamux header",
                        expected_bytes=HEADER_SIZE,
                        received_bytes=len(header),
                    )
                _version, typ, flags, stream_id, length = HEADER.unpack(header)
                if typ == TYPE_DATA:
                    if length > MAX_WINDOW_SIZE:
                        raise MuxedStreamError(f"oversized DATA frame of {length} bytes")
                    body = await self._read_body(conn, length) if length else []
                    await self._on_stream_frame(typ, flags, stream_id, length, body)
                elif typ == TYPE_WINDOW_UPDATE:
                    await self._on_stream_frame(typ, flags, stream_id, length, [])
                elif typ == TYPE_PING:
                    await self._on_ping(flags, length)
                elif typ == TYPE_GO_AWAY:
                    log.debug("peer %s: GO_AWAY code %d", self.peer_id, length)
                    break
        except Exception as exc:  # the connection broke or the peer broke the protocol
            log.debug("yamux connection to %s ends: %r", self.peer_id, exc)
        else:
            if self.event_shutting_down.is_set():
                return  # closed from our side
        self.event_shutting_down.set()
        await self._cleanup_on_error()

    @staticmethod
    async def _read_body(conn: ISecureConn, length: int) -> list[bytes]:
        read_some = getattr(conn, "read_some", conn.read)  # LeanNoiseSession: without copies
        pieces = []
        with trio.fail_after(DATA_READ_TIMEOUT):
            while length:
                piece = await read_some(length)
                if not piece:
                    raise IncompleteReadError("connection closed inside a yamux frame")
                pieces.append(piece)
                length -= len(piece)
        return pieces

    async def _on_stream_frame(
        self, typ: int, flags: int, stream_id: int, length: int, body: list[bytes]
    ) -> None:
        stream = self.streams.get(stream_id)
        opened = bool(flags & FLAG_SYN)
        if opened:
            if stream is not None:  # the peer reused a live stream id
                await self._write_frame(HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0))
                return
            stream = self._add_stream(stream_id, is_initiator=False)
        if stream is None:
            return  # a frame for a stream already forgotten, dropped as the stock yamux does
        if typ == TYPE_DATA:
            self.stream_buffers[stream_id].extend(body)
            stream.recv_window -= length
            if stream.recv_window < 0:
                log.warning("stream %d: peer exceeded the receive window", stream_id)
                stream.recv_window = 0
        elif length:
            stream.send_window += length
            stream._window_opened.set()
        if flags & FLAG_FIN:
            stream.recv_closed = True
            stream.closed = stream.closed or stream.send_closed
        if flags & FLAG_RST:
            stream.closed = stream.reset_received = True
            stream._window_opened.set()
        if typ == TYPE_DATA or flags & (FLAG_FIN | FLAG_RST):
            event = self.stream_events.get(stream_id)
            if event is not None:
                event.set()
        if stream.closed:
            self._finalize_stream_locked(stream, fully_closed=True)
        if opened:
            if not flags & FLAG_RST:  # a stream reset on arrival is delivered but not acked
                await self._write_frame(
                    HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_ACK, stream_id, WINDOW_GRANT)
                )
            await self.new_stream_send_channel.send(stream)

    async def _on_ping(self, flags: int, opaque: int) -> None:
        if flags & FLAG_SYN:
            await self._write_frame(HEADER.pack(0, TYPE_PING, FLAG_ACK, 0, opaque))
        elif flags & FLAG_ACK:
            rtt = trio.current_time() - self._ping_sent_time
            self._rtt = rtt if self._rtt == 0.0 else (self._rtt + rtt) / 2
            self._ping_event.set()


class LeanMuxerMultistream(MuxerMultistream):
    """Builds whatever muxer class was negotiated. py-libp2p 0.8.1's `new_conn` builds the stock
    `Yamux` for /yamux/1.0.0 whatever class the host was given; this one honours `LeanYamux`."""

    async def new_conn(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        protocol, muxer_class = await self._selector.select(
            conn, conn.is_initiator, self.negotiate_timeout
        )
        return self._annotate_connection(muxer_class(conn, peer_id), conn, protocol)
