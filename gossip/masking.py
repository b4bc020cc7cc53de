"""Secure-aggregation primitives: fixed-point rings, masks from key agreement, sealed shares.

Pure and synchronous; the protocols (`gossip.secure_agg`, `gossip.secure_sum`) use them.

- Values are summed in a ring of integers modulo 2**bits, as fixed point with `frac_bits`
  fractional bits: masks are uniform in the ring, so a masked value says nothing, and masks
  that cancel do so exactly (float masks would not). `MODEL_RING` (64 bits, numpy uint64) is
  for model parameters; `WIDE_RING` (256 bits, Python integers) sums any float64 exactly.
- A pairwise seed is HKDF-SHA256 over the X25519 shared secret of two members' registered keys,
  bound to a context (protocol, session, round, aggregator, the pair): what one aggregation
  reveals about a pair says nothing about any other. The long-term keys never leave a node.
- Masks are ChaCha20 keystreams of a seed (`cryptography`), shares are Shamir shares
  (`shamirs`, over GF(2^127 - 1); PyCryptodome's GF(2^128) in pure Python took 3 ms a
  reconstruction, a third of a secure round at 8 neighbours), sealed for their holder with
  ChaCha20-Poly1305 under a key from the same agreement, so an altered share does not open.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import msgpack
import numpy as np
import shamirs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEED_BYTES = 32
SHARE_PRIME = 2**127 - 1  # the field of the self-mask shares (a Mersenne prime)
SECRET_BYTES = 16  # a self-mask secret, below SHARE_PRIME
KEY_BYTES = 32


class MaskingError(ValueError):
    """Bad input to a masking primitive: a value out of the ring's range, a bad key or share."""


class ShareError(MaskingError):
    """A sealed share does not open: altered, or sealed for another holder or context."""


# -- rings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ring:
    """Integers modulo 2**bits holding fixed-point numbers with `frac_bits` fractional bits.

    Encoded values must stay within +-2**(bits - frac_bits - 1), sums included."""

    bits: int
    frac_bits: int

    @property
    def fast(self) -> bool:
        return self.bits == 64  # numpy uint64 wraps modulo 2**64 by itself

    @property
    def element_bytes(self) -> int:
        return self.bits // 8

    @property
    def limit(self) -> float:
        return float(2 ** (self.bits - self.frac_bits - 1))

    def encode(self, values: np.ndarray) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64).ravel()
        if not np.isfinite(x).all():
            raise MaskingError("cannot encode NaN or infinite values")
        if x.size and float(np.abs(x).max()) >= self.limit:
            raise MaskingError(
                f"a value of magnitude {float(np.abs(x).max()):.3g} is outside this ring's "
                f"fixed-point range (+-{self.limit:.3g})"
            )
        if self.fast:
            return np.rint(np.ldexp(x, self.frac_bits)).astype(np.int64).view(np.uint64)
        modulus = 1 << self.bits
        return np.array([_exact_fixed(v, self.frac_bits) % modulus for v in x], dtype=object)

    def decode(self, encoded: np.ndarray) -> np.ndarray:
        if self.fast:
            return np.ldexp(np.asarray(encoded, np.uint64).view(np.int64).astype(np.float64),
                            -self.frac_bits)  # fmt: skip
        half, modulus = 1 << (self.bits - 1), 1 << self.bits
        signed = [int(v) - modulus if int(v) >= half else int(v) for v in encoded]
        # int / int is correctly rounded in Python: exact to float64 rounding.
        return np.array([v / (1 << self.frac_bits) for v in signed], dtype=np.float64)

    def zeros(self, n: int) -> np.ndarray:
        return np.zeros(n, np.uint64) if self.fast else np.array([0] * n, dtype=object)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b if self.fast else (a + b) % (1 << self.bits)

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a - b if self.fast else (a - b) % (1 << self.bits)

    def mask(self, seed: bytes, n: int) -> np.ndarray:
        """n uniform ring elements, the ChaCha20 keystream of `seed`."""
        stream = keystream(seed, n * self.element_bytes)
        if self.fast:  # read-only, and no copy: the ring's sums make new arrays
            return np.frombuffer(stream, dtype="<u8")
        size = self.element_bytes
        return np.array(
            [int.from_bytes(stream[i * size : (i + 1) * size], "little") for i in range(n)],
            dtype=object,
        )

    def to_bytes(self, encoded: np.ndarray) -> bytes:
        if self.fast:
            return np.asarray(encoded, dtype="<u8").tobytes()
        return b"".join(int(v).to_bytes(self.element_bytes, "little") for v in encoded)

    def from_bytes(self, raw: bytes | bytearray | memoryview, n: int) -> np.ndarray:
        if len(raw) != n * self.element_bytes:
            raise MaskingError(f"{len(raw)} bytes for {n} elements of {self.element_bytes}")
        if self.fast:
            return np.frombuffer(raw, dtype="<u8").astype(np.uint64)
        size = self.element_bytes
        return np.array(
            [int.from_bytes(raw[i * size : (i + 1) * size], "little") for i in range(n)],
            dtype=object,
        )


def _exact_fixed(value: float, frac_bits: int) -> int:
    """round(value * 2**frac_bits) computed exactly (a float64 is a ratio of integers)."""
    numerator, denominator = float(value).as_integer_ratio()
    scaled = numerator << frac_bits
    quotient, remainder = divmod(scaled, denominator)
    return quotient + (1 if 2 * remainder >= denominator else 0)


MODEL_RING = Ring(bits=64, frac_bits=32)  # parameters: +-2**31, resolution 2**-32
WIDE_RING = Ring(bits=256, frac_bits=96)  # statistics: any float64 sum, to float64 rounding


# -- keys, seeds, streams ------------------------------------------------------------------------


def public_key(raw: bytes) -> X25519PublicKey:
    if len(raw) != KEY_BYTES:
        raise MaskingError(f"an X25519 public key is {KEY_BYTES} bytes, got {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


@lru_cache(maxsize=4096)
def _shared(private_raw: bytes, their_public: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private_raw)
    return key.exchange(public_key(their_public))


def shared_secret(mine: X25519PrivateKey, their_public: bytes) -> bytes:
    """The X25519 agreement of two long-term keys (cached: one exchange per pair per process)."""
    return _shared(mine.private_bytes_raw(), bytes(their_public))


def derive(secret: bytes, purpose: bytes, context: bytes, length: int = SEED_BYTES) -> bytes:
    """HKDF-SHA256 of `secret`, bound to what it is for and where it is used."""
    info = b"medswarm/" + purpose + b"/v1|" + context
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def keystream(seed: bytes, n_bytes: int) -> bytes:
    """The ChaCha20 keystream of a 32-byte seed (nonce 0: every seed is used once)."""
    if len(seed) != SEED_BYTES:
        raise MaskingError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    cipher = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None)
    return cipher.encryptor().update(bytes(n_bytes))


def context(*parts: str | int) -> bytes:
    """An unambiguous byte string of a protocol context (names, rounds, peer IDs): msgpack
    frames each part with its type and length."""
    return bytes(msgpack.packb(parts))


def pair_seed(mine: X25519PrivateKey, their_public: bytes, ctx: bytes) -> bytes:
    """The seed two members share for one context: both derive it from their own key."""
    return derive(shared_secret(mine, their_public), b"pair-mask", ctx)


def pair_sign(me: str, other: str) -> int:
    """+1 for the member whose peer ID sorts first, -1 for the other: their masks cancel."""
    if me == other:
        raise MaskingError("a member has no pairwise mask with itself")
    return 1 if me < other else -1


def masked(
    ring: Ring,
    values: np.ndarray,
    me: str,
    pair_seeds: dict[str, bytes],
    self_seed: bytes | None = None,
) -> np.ndarray:
    """encode(values) + self mask + the signed pairwise mask with every other member."""
    n = np.asarray(values).size
    out = ring.encode(values)
    if self_seed is not None:
        out = ring.add(out, ring.mask(self_seed, n))
    for other, seed in sorted(pair_seeds.items()):
        mask = ring.mask(seed, n)
        out = ring.add(out, mask) if pair_sign(me, other) > 0 else ring.sub(out, mask)
    return out


def unmask_pairs(
    ring: Ring, total: np.ndarray, survivor_pairs: Sequence[tuple[str, str, bytes]]
) -> np.ndarray:
    """Remove from `total` the pairwise masks that survivors shared with members who sent
    nothing: each (survivor, dropped, seed), added by the survivor with its sign."""
    n = total.size
    for survivor, dropped, seed in survivor_pairs:
        mask = ring.mask(seed, n)
        total = ring.sub(total, mask) if pair_sign(survivor, dropped) > 0 else ring.add(total, mask)
    return total


# -- self masks and their shares -----------------------------------------------------------------


def new_secret() -> bytes:
    """A fresh self-mask secret: uniform below the sharing field's prime, as 16 bytes."""
    return secrets.randbelow(SHARE_PRIME).to_bytes(SECRET_BYTES, "big")


def self_mask_seed(secret: bytes, ctx: bytes) -> bytes:
    """The 32-byte mask seed of a shared-out secret."""
    return derive(secret, b"self-mask", ctx)


def split_secret(secret: bytes, threshold: int, holders: int) -> list[bytes]:
    """Shamir shares of a secret over GF(2^127 - 1) (`shamirs`): any `threshold` of the
    `holders` shares rebuild it, fewer say nothing. Share k (0-based) is 17 bytes: its index
    k + 1, then its value."""
    if not 1 <= threshold <= holders:
        raise MaskingError(f"threshold {threshold} must be between 1 and the {holders} holders")
    if holders > 255:
        raise MaskingError(f"at most 255 share holders, got {holders}")
    value = _secret_value(secret)
    if threshold == 1:  # a polynomial of degree 0: every share is the secret
        return [bytes([k + 1]) + secret for k in range(holders)]
    # `shamirs` wants more shares than the threshold: one more is made and never handed out.
    made = shamirs.shares(value, quantity=holders + 1, modulus=SHARE_PRIME, threshold=threshold)
    return [bytes([s.index]) + s.value.to_bytes(SECRET_BYTES, "big") for s in made[:holders]]


def combine_shares(shares: Sequence[bytes], threshold: int) -> bytes:
    """The secret from at least `threshold` distinct shares (the first `threshold` by index),
    as `shamirs.interpolate` rebuilds it (tested against it)."""
    distinct = {s[0]: s for s in shares if len(s) > 0}
    if len(distinct) < threshold:
        raise MaskingError(f"{len(distinct)} distinct shares, {threshold} needed")
    chosen = []
    for index in sorted(distinct)[:threshold]:
        share = distinct[index]
        if len(share) != 1 + SECRET_BYTES or index == 0:
            raise ShareError(f"a share is 1 index byte (1..255) + {SECRET_BYTES} bytes")
        value = int.from_bytes(share[1:], "big")
        if value >= SHARE_PRIME:
            raise ShareError("a share's value is outside the sharing field")
        chosen.append((index, value))
    weights = _lagrange_at_zero(tuple(index for index, _ in chosen))
    secret = sum(w * value for w, (_, value) in zip(weights, chosen, strict=True)) % SHARE_PRIME
    return secret.to_bytes(SECRET_BYTES, "big")


@lru_cache(maxsize=1024)
def _lagrange_at_zero(indices: tuple[int, ...]) -> tuple[int, ...]:
    """The weights of Lagrange interpolation at 0 for these share indices, mod SHARE_PRIME.
    They depend only on which holders answered, the same for every secret of an aggregation:
    computed once, where `shamirs.interpolate` recomputes them per secret (a tenth of a secure
    round at 8 neighbours)."""
    weights = []
    for i in indices:
        numerator, denominator = 1, 1
        for m in indices:
            if m != i:
                numerator = numerator * m % SHARE_PRIME
                denominator = denominator * (m - i) % SHARE_PRIME
        weights.append(numerator * pow(denominator, -1, SHARE_PRIME) % SHARE_PRIME)
    return tuple(weights)


def _secret_value(secret: bytes) -> int:
    if len(secret) != SECRET_BYTES:
        raise MaskingError(f"a shared secret is {SECRET_BYTES} bytes, got {len(secret)}")
    value = int.from_bytes(secret, "big")
    if value >= SHARE_PRIME:
        raise MaskingError("a shared secret must be below the sharing field's prime")
    return value


@lru_cache(maxsize=4096)
def _sealer(private_raw: bytes, their_public: bytes) -> ChaCha20Poly1305:
    """The AEAD two members share for sealing shares (one key per pair; a nonce per use)."""
    secret = _shared(private_raw, their_public)
    return ChaCha20Poly1305(derive(secret, b"share", b""))


def _nonce(ctx: bytes) -> bytes:
    # Contexts never repeat for one pair (session, aggregator, round, owner, holder), and a
    # 96-bit hash of them does not collide in practice.
    return hashlib.blake2b(ctx, digest_size=12).digest()


def seal_share(mine: X25519PrivateKey, holder_public: bytes, ctx: bytes, share: bytes) -> bytes:
    """Encrypt and authenticate `share` for its holder (and no one else), bound to `ctx`."""
    sealer = _sealer(mine.private_bytes_raw(), bytes(holder_public))
    return sealer.encrypt(_nonce(ctx), share, ctx)


def open_share(mine: X25519PrivateKey, sender_public: bytes, ctx: bytes, sealed: bytes) -> bytes:
    """The share sealed for us by the sender under `ctx`; ShareError if it does not verify."""
    sealer = _sealer(mine.private_bytes_raw(), bytes(sender_public))
    try:
        return sealer.decrypt(_nonce(ctx), bytes(sealed), ctx)
    except InvalidTag:
        raise ShareError(
            "the share's authentication tag does not verify: it was altered, or sealed by "
            "another key or for another aggregation"
        ) from None
