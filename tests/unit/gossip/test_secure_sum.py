"""The secure sum's pieces: a relayed row must carry its author's signature; a member without
a registered key stops the sum with its name."""

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from gossip.secure_agg import MaskingKeys
from gossip.secure_sum import Flood, SecureSumError, _row_context, _verifies, masked_row


def test_a_row_verifies_only_unaltered_and_under_its_authors_peer_id():
    author, other = create_new_key_pair(), create_new_key_pair()
    peer = ID.from_pubkey(author.public_key).to_base58()
    row = b"\x01" * 64
    message = _row_context("s", peer) + row
    signature = author.private_key.sign(message)
    assert _verifies(peer, message, signature)
    assert not _verifies(peer, message[:-1] + b"\x02", signature)  # altered on the way
    assert not _verifies(peer, _row_context("t", peer) + row, signature)  # another sum's
    assert not _verifies(peer, message, other.private_key.sign(message))  # someone else's
    assert not _verifies("not-a-peer-id", message, signature)


def test_a_member_without_a_registered_key_is_named():
    me = ID.from_pubkey(create_new_key_pair().public_key).to_base58()
    keys = MaskingKeys(X25519PrivateKey.generate(), {me: bytes(32)}.get)
    flood = Flood("s", (me, "peerWithoutKey"), (), 1.0, 1.0, 1.0)
    with pytest.raises(SecureSumError, match="member peerWithoutKey has no registered X25519 key"):
        masked_row(keys, me, flood, np.ones(3))
