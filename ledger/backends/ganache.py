"""A managed Ganache 7.9 (npm, pinned in package.json) on 127.0.0.1, Shanghai rules."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

from ledger.accounts import DEV_ACCOUNT_COUNT, DEV_MNEMONIC, dev_accounts
from ledger.artifacts import REPO_ROOT
from ledger.backends.base import Chain
from ledger.backends.process import ManagedProcess
from ledger.backends.rpc import http_web3
from ledger.errors import BackendError

_READY = re.compile(r"RPC Listening on 127\.0\.0\.1:(\d+)")
CHAIN_ID = 1337


def ganache_cli() -> Path:
    path = REPO_ROOT / "node_modules" / "ganache" / "dist" / "node" / "cli.js"
    if not path.is_file():
        raise BackendError("ganache", f"not found at {path}; run `npm install` (setup.sh)")
    return path


def _free_port() -> int:
    # Ganache cannot listen on port 0 and report it; the window between close and bind is tiny.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GanacheProcess(ManagedProcess):
    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise BackendError("ganache", "node (Node.js) not on PATH")
        argv = [
            node, str(ganache_cli()),
            "--server.host", "127.0.0.1",
            "--server.port", str(_free_port()),
            "--chain.hardfork", "shanghai",
            "--chain.chainId", str(CHAIN_ID),
            "--wallet.mnemonic", DEV_MNEMONIC,
            "--wallet.totalAccounts", str(DEV_ACCOUNT_COUNT),
        ]  # fmt: skip
        super().__init__("ganache", argv, _READY)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def connect_ganache() -> Chain:
    proc = GanacheProcess()
    proc.start()
    return Chain(
        name="ganache",
        w3=http_web3(proc.url, timeout=30.0),
        dev_accounts=dev_accounts(),
        url=proc.url,
        process=proc,
        _closer=proc.stop,
    )
