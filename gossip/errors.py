"""Error root of the gossip package. Trust-boundary errors name the peer they came from."""


class GossipError(Exception):
    """Root of every error raised by gossip/."""


class IdentityError(GossipError):
    """A key file is missing, malformed or readable by others."""


class PeerMessageError(GossipError):
    """A peer sent something invalid: the message is dropped and counted against the peer."""

    def __init__(self, peer: str, rule: str, detail: str) -> None:
        super().__init__(f"peer {peer}: {rule}: {detail}")
        self.peer = peer
        self.rule = rule
        self.detail = detail


class PeerUnavailable(GossipError):
    """A peer could not be reached, timed out, or had nothing for the round in time."""

    def __init__(self, peer: str, reason: str, retryable: bool = False) -> None:
        super().__init__(f"peer {peer}: {reason}")
        self.peer = peer
        self.reason = reason
        self.retryable = retryable  # a transient failure worth another try before the deadline
