"""Chain backends: `embedded` (eth-tester in process), `anvil` and `ganache` (managed local
processes), or any JSON-RPC URL. `connect()` is the one entry point."""

from ledger.backends.base import Chain, connect

__all__ = ["Chain", "connect"]
