"""Persisted Ed25519 libp2p identities: a 0600 key file holding the 32-byte seed."""

import os
import stat
from pathlib import Path

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


def load_key_file(path: Path) -> KeyPair:
    """Read an identity; refuse a key file that group or others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise IdentityError(
            f"{path}: identity key file not found (create one: medswarm node init)"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path}: identity key file has mode {stat.S_IMODE(mode):o}; expected 600 (chmod 600)"
        )
    seed = path.read_bytes()
    if len(seed) != SEED_BYTES:
        raise IdentityError(f"{path}: expected {SEED_BYTES} key bytes, found {len(seed)}")
    private = Ed25519PrivateKey.new(seed)
    return KeyPair(private, private.get_public_key())


def peer_id_of(key_pair: KeyPair) -> str:
    return ID.from_pubkey(key_pair.public_key).to_base58()
