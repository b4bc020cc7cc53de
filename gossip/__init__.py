"""libp2p side of medswarm: identity, host, wire format and validation, parameter exchange."""
