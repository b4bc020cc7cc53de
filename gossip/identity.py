"""Persisted keys, each a 0600 file of 32 bytes: the Ed25519 libp2p identity (its seed) and
the X25519 masking key of secure aggregation."""

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from libp2p.crypto.ed25519 import Ed25519PrivateKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from gossip.errors import IdentityError

SEED_BYTES = 32


def create_key_file(path: Path) -> KeyPair:
    """Write a fresh identity to `path` (which must not exist) with mode 0600."""
    key_pair = create_new_key_pair()
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite an existing identity; the mode is set at creation, no window.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pair.private_key.to_bytes()[:SEED_BYTES])
    return key_pair


def _check_private_mode(path: Path, what: str, create: str) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise IdentityError(f"{path}: {what} file not found (create one: {create})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path}: {what} file has mode {stat.S_IMODE(mode):o}; expected 600 (chmod 600)"
        )


def load_key_file(path: Path) -> KeyPair:
    """Read an identity; refuse a key file that group or others can read."""
    _check_private_mode(path, "identity key", "medswarm node init")
    seed = path.read_bytes()
    if len(seed) != SEED_BYTES:
        raise IdentityError(f"{path}: expected {SEED_BYTES} key bytes, found {len(seed)}")
    private = Ed25519PrivateKey.new(seed)
    return KeyPair(private, private.get_public_key())


def peer_id_of(key_pair: KeyPair) -> str:
    return ID.from_pubkey(key_pair.public_key).to_base58()


# -- X25519 masking keys (secure aggregation), registered on chain next to the peer ID ---------


def create_x25519_key_file(path: Path) -> bytes:
    """Write a fresh X25519 private key to `path` (which must not exist) with mode 0600;
    returns its 32-byte public key (what the member registers on chain)."""
    key = X25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes_raw())
    return key.public_key().public_bytes_raw()


def load_x25519_key_file(path: Path) -> X25519PrivateKey:
    """Read an X25519 masking key; refuse a key file that group or others can read."""
    _check_private_mode(path, "X25519 masking key", "medswarm node init")
    raw = path.read_bytes()
    if len(raw) != SEED_BYTES:
        raise IdentityError(f"{path}: expected {SEED_BYTES} key bytes, found {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def x25519_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()
