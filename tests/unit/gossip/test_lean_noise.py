"""LeanNoiseSession against the stock SecureSession, over an in-memory connection."""

import os
import random

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH, NoiseTransportReadWriter
from libp2p.security.secure_session import SecureSession
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import NoiseInvalidMessage

from gossip.lean_noise import LeanNoiseSession


class Pipe:
    """One direction of a connection: writes are recorded, reads come in chosen piece sizes."""

    def __init__(self, piece: int | None = None, seed: int = 0) -> None:
        self.data = bytearray()
        self.piece = piece  # None: a random size per read, up to what the reader asks for
        self.rng = random.Random(seed)

    async def write(self, data: bytes) -> None:
        self.data += data

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        limit = len(self.data) if n is None else n
        size = self.piece if self.piece is not None else self.rng.randint(1, max(limit, 1))
        out = bytes(self.data[: min(size, limit)])
        del self.data[: len(out)]
        return out

    async def close(self) -> None:
        pass


def noise_pair() -> tuple[NoiseConnection, NoiseConnection]:
    """Two Noise states that finished an XX handshake with each other."""
    sides = []
    for initiator in (True, False):
        state = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_SHA256")
        state.set_as_initiator() if initiator else state.set_as_responder()
        state.set_keypair_from_private_bytes(Keypair.STATIC, os.urandom(32))
        state.start_handshake()
        sides.append(state)
    a, b = sides
    b.read_message(a.write_message())
    a.read_message(b.write_message())
    b.read_message(a.write_message())
    assert a.handshake_finished and b.handshake_finished
    return a, b


def session(pipe: Pipe, state: NoiseConnection, lean: bool) -> SecureSession:
    key = create_new_key_pair()
    transport = NoiseTransportReadWriter(pipe, state)  # type: ignore[arg-type]
    stock = SecureSession(
        local_peer=ID.from_pubkey(key.public_key),
        local_private_key=key.private_key,
        remote_peer=ID.from_pubkey(key.public_key),
        remote_permanent_pubkey=key.public_key,
        is_initiator=True,
        conn=transport,
    )
    return LeanNoiseSession(stock, transport) if lean else stock


MESSAGES = [b"x", os.urandom(12), os.urandom(65507), os.urandom(MAX_PLAINTEXT_LENGTH), b"tail"]


@pytest.mark.parametrize("writer_lean", [False, True])
def test_written_bytes_decode_with_the_stock_reader(writer_lean):
    async def main():
        pipe = Pipe(piece=None, seed=1)
        a, b = noise_pair()
        writer, reader = session(pipe, a, writer_lean), session(pipe, b, lean=False)
        for msg in [*MESSAGES, os.urandom(3 * MAX_PLAINTEXT_LENGTH + 5)]:
            await writer.write(msg)
            assert await reader.read(len(msg)) == msg
        assert not pipe.data

    trio.run(main)


def test_lean_and_stock_writers_emit_the_same_bytes():
    async def main():
        a1, _ = noise_pair()
        # The same keys and nonces on both writers: copy the finished state's cipher keys.
        a2, _ = noise_pair()
        src, dst = a1.noise_protocol.cipher_state_encrypt, a2.noise_protocol.cipher_state_encrypt
        dst.k = src.k
        dst.cipher.initialize(src.k)
        stock_pipe, lean_pipe = Pipe(), Pipe()
        stock, lean = session(stock_pipe, a1, lean=False), session(lean_pipe, a2, lean=True)
        for msg in [*MESSAGES, os.urandom(2 * MAX_PLAINTEXT_LENGTH + 1)]:
            await stock.write(msg)
            await lean.write(msg)
        assert bytes(lean_pipe.data) == bytes(stock_pipe.data)

    trio.run(main)


@pytest.mark.parametrize("piece", [1, 7, 1000, 65537, 1 << 20, None])
def test_reads_match_the_stock_reader_whatever_the_socket_delivers(piece):
    """Reads of every size, as yamux makes them, across messages arriving in any cut.

    The stock reader gives up after 100 short socket reads per message, so it is only compared
    where the socket delivers at least ~1 KB per read (as TCP does); the lean one reads any cut.
    """

    async def main():
        stream = b"".join(MESSAGES) * 2
        sizes = [12, 65507, 1, 3, 100000, 5, len(stream)]
        results = {}
        for lean in (False, True) if piece is None or piece >= 1000 else (True,):
            pipe = Pipe(piece=piece, seed=2)
            a, b = noise_pair()
            writer, reader = session(pipe, a, lean=False), session(pipe, b, lean=lean)
            for msg in MESSAGES * 2:
                await writer.write(msg)
            got, left = [], len(stream)
            for size in sizes:
                take = min(size, left)
                if take:
                    got.append(await reader.read(take))
                    left -= take
            results[lean] = got
            assert b"".join(got) == stream
        if False in results:
            assert results[True] == results[False]

    trio.run(main)


def test_read_without_size_returns_the_rest_of_a_message_then_whole_messages():
    async def main():
        pipe = Pipe(piece=1 << 20)
        a, b = noise_pair()
        writer, reader = session(pipe, a, lean=False), session(pipe, b, lean=True)
        for msg in (b"hello world", b"second"):
            await writer.write(msg)
        assert await reader.read(5) == b"hello"
        assert await reader.read() == b" world"
        assert await reader.read(None) == b"second"
        assert await reader.read(0) == b""

    trio.run(main)


def test_read_some_gives_at_most_n_bytes_and_never_joins_messages():
    async def main():
        pipe = Pipe(piece=None, seed=3)
        a, b = noise_pair()
        writer, reader = session(pipe, a, lean=False), session(pipe, b, lean=True)
        for msg in MESSAGES:
            await writer.write(msg)
        assert await reader.read_some(5) == MESSAGES[0]  # a shorter message ends the piece
        assert await reader.read_some(5) == MESSAGES[1][:5]
        assert await reader.read_some(1 << 20) == MESSAGES[1][5:]
        for msg in MESSAGES[2:]:
            assert await reader.read_some(1 << 20) == msg

    trio.run(main)


def test_end_of_stream_is_an_incomplete_read_clean_only_between_messages():
    async def main():
        a, b = noise_pair()
        pipe = Pipe(piece=1000)
        writer, reader = session(pipe, a, lean=False), session(pipe, b, lean=True)
        await writer.write(b"done")
        assert await reader.read(4) == b"done"
        with pytest.raises(IncompleteReadError) as clean:
            await reader.read(12)
        assert clean.value.is_clean_close

        await writer.write(os.urandom(5000))
        del pipe.data[3000:]  # the connection dies mid-message
        with pytest.raises(IncompleteReadError) as cut:
            await reader.read(12)
        assert not cut.value.is_clean_close

    trio.run(main)


def test_an_empty_message_reads_as_a_close_like_the_stock_session():
    async def main():
        for lean in (False, True):
            a, b = noise_pair()
            pipe = Pipe(piece=1 << 20)
            writer, reader = session(pipe, a, lean=False), session(pipe, b, lean=lean)
            await writer.write(b"")
            with pytest.raises(ConnectionClosedError):
                await reader.read(12)

    trio.run(main)


def test_tampered_ciphertext_is_rejected():
    async def main():
        a, b = noise_pair()
        pipe = Pipe(piece=1 << 20)
        writer, reader = session(pipe, a, lean=False), session(pipe, b, lean=True)
        await writer.write(b"parameters")
        pipe.data[5] ^= 0x01
        with pytest.raises(NoiseInvalidMessage):
            await reader.read(10)

    trio.run(main)
