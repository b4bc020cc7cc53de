"""Chain backends: `embedded` (eth-tester in process), `anvil` and `ganache` (managed local
processes), or any JSON-RPC URL. `connect()` is the one entry point; `CHAIN_BACKENDS` names the
local ones (the CLI and the simulator list their choices from it).

Each backend module is imported only when its chain is asked for: eth-tester and the managed
processes cost nothing to a node that talks to a URL.
"""

from collections.abc import Callable
from pathlib import Path

from ledger.backends.base import Chain
from ledger.errors import BackendError

# A backend's connect: the state file is kept across runs where the backend can (Anvil).
ChainFactory = Callable[[Path | None], Chain]


def _anvil(state_path: Path | None) -> Chain:
    from ledger.backends.anvil import connect_anvil

    return connect_anvil(state_path=state_path)


def _ganache(state_path: Path | None) -> Chain:
    from ledger.backends.ganache import connect_ganache

    return connect_ganache()


def _embedded(state_path: Path | None) -> Chain:
    from ledger.backends.embedded import connect_embedded

    return connect_embedded()


CHAIN_BACKENDS: dict[str, ChainFactory] = {
    "anvil": _anvil,
    "ganache": _ganache,
    "embedded": _embedded,
}


def connect(spec: str, *, state_path: Path | None = None, timeout: float = 10.0) -> Chain:
    """A name in `CHAIN_BACKENDS` or an http(s):// URL. `anvil` starts a managed Anvil on
    127.0.0.1 (state loaded from and saved to `state_path` if given); close() stops it."""
    if spec in CHAIN_BACKENDS:
        return CHAIN_BACKENDS[spec](state_path)
    if spec.startswith(("http://", "https://")):
        from ledger.backends.rpc import connect_rpc

        return connect_rpc(spec, timeout=timeout)
    names = ", ".join(CHAIN_BACKENDS)
    raise BackendError(spec, f"unknown chain: use {names} or an http(s) URL")


__all__ = ["CHAIN_BACKENDS", "Chain", "ChainFactory", "connect"]
