"""A managed Anvil (npm @foundry-rs/anvil, pinned in package.json) on 127.0.0.1."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ledger.accounts import DEV_ACCOUNT_COUNT, DEV_MNEMONIC, dev_accounts
from ledger.artifacts import REPO_ROOT
from ledger.backends.base import Chain
from ledger.backends.process import ManagedProcess
from ledger.backends.rpc import http_web3
from ledger.errors import BackendError

_READY = re.compile(r"Listening on 127\.0\.0\.1:(\d+)")
HARDFORK = "shanghai"  # the contracts' evmVersion; also what Ganache and eth-tester run


def anvil_binary() -> Path:
    """The real binary (not the node wrapper in .bin, which outlives a kill)."""
    explicit = os.environ.get("MEDSWARM_ANVIL")
    path = (
        Path(explicit)
        if explicit
        else REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    )
    if not path.is_file():
        raise BackendError("anvil", f"binary not found at {path}; run `npm install` (setup.sh)")
    return path


class AnvilProcess(ManagedProcess):
    """Anvil with dev accounts from the test mnemonic; `--state` persists across restarts,
    and restart() comes back on the same port so clients keep their URL."""

    def __init__(
        self, state_path: Path | None = None, port: int = 0, extra_args: Sequence[str] = ()
    ) -> None:
        self.state_path = state_path
        self.requested_port = port
        self.extra_args = list(extra_args)  # e.g. --steps-tracing (opcode traces)
        super().__init__("anvil", self._argv(port), _READY)

    def _argv(self, port: int) -> list[str]:
        argv = [
            str(anvil_binary()),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--hardfork", HARDFORK,
            "--mnemonic", DEV_MNEMONIC,
            "--accounts", str(DEV_ACCOUNT_COUNT),
        ]  # fmt: skip
        if self.state_path is not None:
            argv += ["--state", str(self.state_path)]
        return argv + self.extra_args

    @property
    def url(self) -> str:
        if self.port is None:
            raise BackendError("anvil", "not started")
        return f"http://127.0.0.1:{self.port}"

    def restart(self, timeout: float = 60.0) -> int:
        """Stop (saving state) and start again on the same port."""
        port = self.port
        self.stop()
        if port is not None:
            self.argv = self._argv(port)
        return self.start(timeout)


def connect_anvil(
    state_path: Path | None = None, port: int = 0, extra_args: Sequence[str] = ()
) -> Chain:
    proc = AnvilProcess(state_path=state_path, port=port, extra_args=extra_args)
    proc.start()
    return Chain(
        name="anvil",
        w3=http_web3(proc.url),
        dev_accounts=dev_accounts(),
        url=proc.url,
        process=proc,
        _closer=proc.stop,
    )
