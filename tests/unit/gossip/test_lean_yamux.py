"""LeanYamux against itself and against py-libp2p's stock Yamux, over an in-memory connection."""

import os
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamError, MuxedStreamReset
from libp2p.stream_muxer.yamux.yamux import Yamux

from gossip.lean_yamux import MAX_FRAME, RECV_WINDOW, LeanYamux


class MemoryConn:
    """Stands in for a secured connection: reads of n bytes return n bytes unless it closed."""

    def __init__(self, stream: trio.abc.Stream, is_initiator: bool) -> None:
        self.stream = stream
        self.is_initiator = is_initiator
        self.buffer = bytearray()
        self.frame_sizes: list[int] = []  # the length field of every DATA frame written

    async def read(self, n: int | None = None) -> bytes:
        while len(self.buffer) < (n or 1):
            chunk = await self.stream.receive_some()
            if not chunk:
                break
            self.buffer += chunk
        out = bytes(self.buffer[:n])
        del self.buffer[: len(out)]
        return out

    async def write(self, data: bytes) -> None:
        if data[1] == 0:  # type DATA
            self.frame_sizes.append(int.from_bytes(data[8:12], "big"))
        await self.stream.send_all(data)

    async def close(self) -> None:
        await self.stream.aclose()


@asynccontextmanager
async def muxers(dialer_class: type[Yamux], listener_class: type[Yamux]):
    """A connected pair, the dialer's connection first."""
    left, right = trio.testing.memory_stream_pair()  # unbounded: only yamux limits the sender
    peer = ID.from_pubkey(create_new_key_pair().public_key)
    pair = (
        dialer_class(MemoryConn(left, True), peer),
        listener_class(MemoryConn(right, False), peer),
    )
    with trio.fail_after(60):  # a hang fails the test instead of stalling the run
        async with trio.open_nursery() as nursery:
            for muxer in pair:
                nursery.start_soon(muxer.start)
                await muxer.event_started.wait()
            yield pair
            nursery.cancel_scope.cancel()


async def read_all(stream, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        got += await stream.read(min(n - len(got), 1 << 20))
    return bytes(got)


PAIRS = [(LeanYamux, LeanYamux), (LeanYamux, Yamux), (Yamux, LeanYamux)]


@pytest.mark.parametrize(("dialer", "listener"), PAIRS)
def test_megabytes_cross_both_ways_between_lean_and_stock(dialer, listener):
    # More than the lean receive window each way: the lean receiver must return credit, and the
    # stock one (256 KiB windows) many times over.
    size = RECV_WINDOW + 3 * MAX_FRAME + 12345

    async def main():
        async with muxers(dialer, listener) as (a, b):
            out = await a.open_stream()
            into = await b.accept_stream()
            for writer, reader in ((out, into), (into, out)):
                payload = os.urandom(size)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(writer.write, payload)
                    assert await read_all(reader, size) == payload
            await out.close()
            with pytest.raises(MuxedStreamEOF):
                await into.read(1)
        for muxer in (a, b):  # a lean sender's frames are larger than the stock 64 KiB
            sizes = muxer.secured_conn.frame_sizes
            assert max(sizes) <= MAX_FRAME
            assert (max(sizes) > 65524) == isinstance(muxer, LeanYamux)

    trio.run(main)


@pytest.mark.parametrize("dialer", [LeanYamux, Yamux])
def test_a_reader_that_stops_reading_holds_the_writer_at_one_window(dialer):
    async def main():
        async with muxers(dialer, LeanYamux) as (a, b):
            out = await a.open_stream()
            into = await b.accept_stream()
            payload = os.urandom(3 * RECV_WINDOW)
            done = trio.Event()

            async def write() -> None:
                await out.write(payload)
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                buffered = b.stream_buffers[into.stream_id]
                while out.send_window > 0 or len(buffered) < RECV_WINDOW:
                    await trio.sleep(0.01)  # until the writer used its window and all arrived
                assert len(buffered) == RECV_WINDOW
                assert not done.is_set()
                assert await read_all(into, len(payload)) == payload
            assert done.is_set()

    trio.run(main)


@pytest.mark.parametrize("reader", [Yamux, LeanYamux])  # the stock behaviour is the reference
def test_close_and_reset_raise_as_with_the_stock_yamux(reader):
    async def main():
        async with muxers(LeanYamux, reader) as (a, b):
            out = await a.open_stream()
            into = await b.accept_stream()
            await out.write(b"last words")
            await out.close()
            assert await into.read(100) == b"last words"
            with pytest.raises(MuxedStreamEOF):
                await into.read(100)
            await into.write(b"reply")  # half-closed: the other direction still works
            assert await out.read(100) == b"reply"

            out = await a.open_stream()
            into = await b.accept_stream()
            await out.write(b"unread")
            await out.reset()
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(MuxedStreamReset):
                await into.read(100)
            with pytest.raises(MuxedStreamError):
                await into.write(b"too late")

    trio.run(main)


def test_a_writer_waiting_for_window_fails_when_the_reader_resets():
    async def main():
        async with muxers(LeanYamux, LeanYamux) as (a, b):
            out = await a.open_stream()
            into = await b.accept_stream()
            failed = trio.Event()

            async def write() -> None:
                with pytest.raises(MuxedStreamError, match="closed"):  # not "Timed out ..."
                    await out.write(bytes(2 * RECV_WINDOW))
                failed.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                while out.send_window > 0:
                    await trio.sleep(0.01)
                await into.reset()
            assert failed.is_set()

    trio.run(main)
