"""The members and their X25519 public keys: the PKI of the secure sums and secure aggregation.

With the ledger it is the consortium's registry (each member registers its key on chain next to
its peer ID, and the node reads them with the rest of the registry every round); without it, a
JSON file `node.peer_keys` of peer ID -> hex key that the consortium hands out.
"""

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from node.errors import ConfigError, NodeError

if TYPE_CHECKING:  # web3 is imported only by a node with the ledger on
    from node.membership import Membership

log = logging.getLogger(__name__)
KEY_HEX = 64


class KeyringError(NodeError):
    """A member without a registered X25519 key, or an unreadable key file."""


def load_peer_keys(path: Path) -> dict[str, bytes]:
    """A `node.peer_keys` file: {peer ID: 64 hex digits}."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a JSON file of peer ID -> X25519 key: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object of peer ID -> X25519 key (hex)")
    keys = {}
    for peer, text in raw.items():
        if not (isinstance(text, str) and len(text) == KEY_HEX):
            raise ConfigError(f"{path}: {peer}: expected {KEY_HEX} hex digits, got {text!r}")
        try:
            keys[peer] = bytes.fromhex(text)
        except ValueError:
            raise ConfigError(f"{path}: {peer}: not hex: {text!r}") from None
    return keys


class Keyring:
    """Who the members are and their keys, from the ledger or a file."""

    def __init__(self, membership: "Membership | None", peer_keys: Path | None) -> None:
        if membership is None and peer_keys is None:
            raise ConfigError(
                "the members' X25519 keys are needed (the scaling agreement is a secure sum): "
                "enable the ledger, or set node.peer_keys to the consortium's key file"
            )
        self.membership = membership
        self._file = load_peer_keys(peer_keys) if membership is None and peer_keys else {}

    def public_of(self, peer: str) -> bytes | None:
        if self.membership is not None:
            return self.membership.x25519_keys.get(peer)
        return self._file.get(peer)

    def members(self) -> tuple[str, ...]:
        """Every member, sorted: the ledger's active members, or the file's peers."""
        peers = self.membership.active_peers if self.membership is not None else self._file
        return tuple(sorted(peers))

    def missing(self) -> list[str]:
        return [p for p in self.members() if self.public_of(p) is None]

    async def wait_for_keys(self, seconds: float) -> tuple[str, ...]:
        """The members once each has a key registered (they register theirs as they start),
        within `seconds`; else a KeyringError naming who has none."""
        with trio.move_on_after(seconds):
            while missing := self.missing():
                log.info("waiting for the X25519 keys of %s", ", ".join(missing))
                await trio.sleep(0.5)
                if self.membership is not None:
                    await trio.to_thread.run_sync(self.membership.refresh)
            return self.members()
        raise KeyringError(
            f"no X25519 key registered for member(s) {', '.join(self.missing())} after "
            f"{seconds:g} s: each member's node registers its key when it starts (or with "
            "`medswarm ledger set-x25519-key`); without the ledger, add it to node.peer_keys"
        )
