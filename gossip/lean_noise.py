"""A leaner read/write path for py-libp2p's Noise sessions, with the same bytes on the wire.

py-libp2p 0.8.1 spends most of a bulk transfer's CPU on Python work per 64 KiB frame rather than
on the cipher. `LeanNoise` (registered by `build_host` through `sec_opt`) performs the stock XX
handshake, then hands yamux a `LeanNoiseSession`: the stock session, except that it reads
ciphertext from the socket in large chunks and cuts it into Noise messages itself (the stock
reader makes two socket reads per message, the 2-byte length and the body, through four layers of
helpers and locks, then copies the plaintext through a BytesIO), and sends each message with one
call. Every message is still authenticated and decrypted, in order, by the same Noise cipher
state; a message that fails authentication raises exactly as before.

`read_some` hands out decrypted messages without joining them, and a write of any size goes out
as one socket write, for the large frames of gossip/lean_yamux.py.
"""

from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH, NoiseTransportReadWriter
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secure_session import SecureSession
from noise.exceptions import NoiseInvalidMessage

# Socket reads take up to this much ciphertext at once: a yamux frame of gossip/lean_yamux.py
# (~1 MiB) per system call. Measured against 256 KiB: a 10 MB fetch's transfer ~15 -> ~10 ms; no
# gain from 2 MiB.
RECV_SIZE = 1 << 20
NOISE_LENGTH_PREFIX = 2  # bytes, big-endian, before every Noise transport message


class LeanNoiseSession(SecureSession):
    """A finished Noise session whose reads and writes skip the stock helper layers."""

    def __init__(self, session: SecureSession, transport: NoiseTransportReadWriter) -> None:
        super().__init__(
            local_peer=session.local_peer,
            local_private_key=session.local_private_key,
            remote_peer=session.remote_peer,
            remote_permanent_pubkey=session.remote_permanent_pubkey,
            is_initiator=session.is_initiator,
            conn=transport,
        )
        self._transport = transport
        self._raw = transport.read_writer.read_write_closer  # the TCP connection
        # The session's own cipher states, called directly: the same keys and nonce sequence as
        # the stock path, but they take any buffer, so a slice of a received or sent buffer is
        # not copied first (the stock wrapper insists on bytes).
        protocol = transport.noise_state.noise_protocol
        self._cipher_out = protocol.cipher_state_encrypt
        self._cipher_in = protocol.cipher_state_decrypt
        self._wire = bytearray()  # ciphertext received, not yet decrypted, from _wire_pos on
        self._wire_pos = 0
        self._plain = b""  # the current decrypted message, handed out from _plain_pos on
        self._plain_pos = 0

    async def read(self, n: int | None = None) -> bytes:
        # Same contract as SecureSession.read: n=None gives the rest of the current message or
        # the next whole message; otherwise exactly n bytes, waiting for as many messages as
        # needed; errors and end of stream (IncompleteReadError) propagate.
        if n == 0:
            return b""
        if n is None:
            return await self.read_some(MAX_PLAINTEXT_LENGTH)
        pieces: list[bytes] = []
        while n:
            try:
                piece = await self.read_some(n)
            except ConnectionClosedError:
                if pieces:  # like the stock session: what arrived before the close
                    break
                raise
            pieces.append(piece)
            n -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def read_some(self, n: int) -> bytes:
        """At most n (> 0) bytes: the rest of the current message, or of the next one. A whole
        message comes back as the decrypted object itself, so a muxer that keeps received data
        as these pieces copies nothing (gossip/lean_yamux.py)."""
        if self._plain_pos == len(self._plain):
            self._plain, self._plain_pos = await self._next_message(), 0
            if not self._plain:  # the stock session takes an empty message as a close
                raise ConnectionClosedError("Connection closed")
        pos, plain = self._plain_pos, self._plain
        end = min(len(plain), pos + n)
        self._plain_pos = end
        return plain if pos == 0 and end == len(plain) else plain[pos:end]

    async def _next_message(self) -> bytes:
        wire, pos = self._wire, self._wire_pos
        while True:
            if len(wire) - pos >= NOISE_LENGTH_PREFIX:
                start = pos + NOISE_LENGTH_PREFIX
                end = start + int.from_bytes(wire[pos:start], "big")
                if len(wire) >= end:
                    self._wire_pos = end
                    with memoryview(wire) as view, view[start:end] as ciphertext:
                        return self._decrypt(ciphertext)
            del wire[:pos]  # keep only the partial message before reading more
            pos = self._wire_pos = 0
            chunk = await self._raw.read(RECV_SIZE)
            if not chunk:
                raise IncompleteReadError(
                    f"Connection closed with {len(wire)} bytes of a Noise message unread",
                    expected_bytes=NOISE_LENGTH_PREFIX,
                    received_bytes=len(wire),
                )
            wire += chunk

    def _decrypt(self, ciphertext: memoryview) -> bytes:
        try:
            return self._cipher_in.decrypt_with_ad(None, ciphertext)
        except InvalidTag:  # as NoiseConnection.decrypt reports it
            raise NoiseInvalidMessage("Failed authentication of message") from None

    async def write(self, data: bytes) -> None:
        await self.write_parts([data])

    async def write_parts(self, parts: Iterable[bytes | memoryview]) -> None:
        """Each part cut into messages as the stock writer cuts a write (an empty part is one
        empty message), all sent with one socket write: a ~1 MiB yamux frame is one system
        call, not 17."""
        out: list[bytes] = []
        for part in parts:
            with memoryview(part) as view:
                for start in range(0, max(len(view), 1), MAX_PLAINTEXT_LENGTH):
                    with view[start : start + MAX_PLAINTEXT_LENGTH] as plaintext:
                        ciphertext = self._cipher_out.encrypt_with_ad(None, plaintext)
                    out += (len(ciphertext).to_bytes(NOISE_LENGTH_PREFIX, "big"), ciphertext)
        await self._raw.write(b"".join(out))


class LeanNoise(NoiseTransport):
    """The stock Noise XX transport; only the finished session is a `LeanNoiseSession`."""

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        return _lean(await super().secure_inbound(conn))

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        return _lean(await super().secure_outbound(conn, peer_id))


def _lean(session: ISecureConn) -> ISecureConn:
    if type(session) is SecureSession and type(session.conn) is NoiseTransportReadWriter:
        return LeanNoiseSession(session, session.conn)
    return session  # anything unexpected from a future library version: leave it alone
