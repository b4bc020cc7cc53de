"""The members' X25519 keys: from the ledger's registry or the consortium's key file, with
errors that name the file, the member and what to do."""

import json

import pytest
import trio

from node.errors import ConfigError
from node.keyring import Keyring, KeyringError, load_peer_keys

KEY = bytes(range(32))


class FakeMembership:
    """What Keyring reads of node.membership.Membership: the registry, refreshed on demand."""

    def __init__(self, keys: dict[str, bytes], active: set[str], arriving: dict[str, bytes]):
        self.x25519_keys = dict(keys)
        self.active_peers = frozenset(active)
        self.arriving = arriving  # keys registered by the time of the next refresh
        self.refreshes = 0

    def refresh(self) -> None:
        self.refreshes += 1
        self.x25519_keys.update(self.arriving)


def test_a_key_file_lists_the_members_and_their_keys(tmp_path):
    path = tmp_path / "peer-keys.json"
    path.write_text(json.dumps({"peerB": KEY.hex(), "peerA": KEY[::-1].hex()}))
    keyring = Keyring(None, path)
    assert keyring.members() == ("peerA", "peerB")
    assert keyring.public_of("peerA") == KEY[::-1] and keyring.public_of("nobody") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a JSON object of peer ID -> X25519 key"),
        ('{"peerA": "abc"}', "peerA: expected 64 hex digits, got 'abc'"),
        ('{"peerA": "' + "zz" * 32 + '"}', "peerA: not hex"),
        ("{", "not a JSON file of peer ID -> X25519 key"),
    ],
)
def test_a_bad_key_file_names_the_file_and_the_member(tmp_path, text, message):
    path = tmp_path / "peer-keys.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_peer_keys(path)
    assert str(path) in str(err.value)


def test_without_ledger_or_key_file_the_node_is_told_where_keys_come_from():
    with pytest.raises(ConfigError, match="enable the ledger, or set node.peer_keys"):
        Keyring(None, None)


def test_keys_members_register_while_starting_are_waited_for():
    membership = FakeMembership({"a": KEY}, {"a", "b"}, arriving={"b": KEY})
    keyring = Keyring(membership, None)  # type: ignore[arg-type]
    assert trio.run(keyring.wait_for_keys, 5.0) == ("a", "b")
    assert membership.refreshes >= 1


def test_a_member_with_no_registered_key_is_named_after_the_wait():
    membership = FakeMembership({"a": KEY}, {"a", "b", "c"}, arriving={})
    keyring = Keyring(membership, None)  # type: ignore[arg-type]
    with pytest.raises(KeyringError, match=r"no X25519 key registered for member\(s\) b, c"):
        trio.run(keyring.wait_for_keys, 1.0)
