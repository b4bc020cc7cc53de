"""Shared by the explorer's integration and browser tests: a consortium's history on a managed
Anvil saved to a state file (what `medswarm sim run` leaves in chain/anvil-state.json), and the
explorer (`medswarm ledger explorer`) run on it as its own process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil

from ledger.accounts import dev_account
from ledger.backends import connect
from ledger.contract import DeployConfig, Ledger
from ledger.privacy import delta_to_fixed, epsilon_to_fixed
from ledger.testing import digest_of
from ledger.views import Commitment

ROOT = Path(__file__).resolve().parents[1]
MEDSWARM = [sys.executable, "-m", "medswarm"]
HOSPITALS = ["St Mary", "Cleveland", "Hungary", "V.A. Long Beach"]
CONFIG = DeployConfig(
    max_members=8,
    rounds_per_epoch=2,
    min_reports=1,
    grace_rounds=0,
    reward_per_epoch=10**18,
    close_timeout=3600,
)
# Who scores whom (member index -> score * 1e6), per epoch: everyone but index 3 is liked.
SCORES = [
    {0: {1: 410_000, 2: 120_000, 3: -50_000}, 1: {0: 300_000, 2: 90_000, 3: -20_000},
     2: {0: 250_000, 1: 380_000, 3: 10_000}, 3: {0: 200_000, 1: 350_000, 2: 60_000}},
    {0: {1: 150_000, 2: 220_000, 3: -10_000}, 1: {0: 180_000, 2: 170_000, 3: 5_000},
     2: {0: 120_000, 1: 90_000, 3: -30_000}, 3: {0: 140_000, 1: 110_000, 2: 200_000}},
]  # fmt: skip


def build_history(state: Path) -> str:
    """Deploy, register four hospitals, fund, two finalized epochs of commitments and reports
    (with privacy spends), a withdrawal, an evaluation digest, a deactivation. Returns the
    contract's address; the chain is saved in `state`."""
    with connect("anvil", state_path=state) as chain:
        admin = Ledger.deploy(chain, chain.dev_accounts[0], CONFIG)
        members = []
        for i, name in enumerate(HOSPITALS, start=1):
            account = dev_account(i)
            admin.register(account.address, f"12D3KooWexplorer{i:02d}", name)
            members.append(admin.as_account(account))
        admin.set_max_epsilon(8)
        members[0].set_x25519_key(bytes(range(32)))
        admin.fund(3 * 10**18)
        for epoch, rounds in ((0, range(0, 3)), (1, range(3, 5))):
            for i, member in enumerate(members):
                items = [Commitment(r, digest_of(f"{i}:{r}"), 100 + 10 * i) for r in rounds]
                member.commit_and_report(
                    items,
                    epoch,
                    SCORES[epoch][i],
                    epsilon_to_fixed(1.5 * (epoch + 1) + i / 4),
                    delta_to_fixed(1e-5),
                )
            admin.finalize(epoch, wait_for_reports=False)
        members[1].withdraw()
        members[0].commit_evaluation(digest_of("St Mary's cross-site row"))
        admin.deactivate(members[3].sender_address)
        return admin.address


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return bytes(response.read())


def get_json(url: str) -> Any:
    return json.loads(get(url))


@contextmanager
def explorer(*args: str, port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """`medswarm ledger explorer ARGS --port PORT` as a process (with `env` added to this
    one's); yields its URL once it answers; stops it (SIGTERM) afterwards."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    cmd = [*MEDSWARM, "ledger", "explorer", *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):  # the Anvil start and the first audit come first
            if proc.poll() is not None:
                _, err = proc.communicate()
                raise AssertionError(f"explorer exited {proc.returncode}: {err.decode()}")
            try:
                get(url + "api/head")
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        else:
            raise AssertionError("the explorer never answered")
        children = psutil.Process(proc.pid).children(recursive=True)  # its managed Anvil
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # stopping the explorer stops what it started
    _, alive = psutil.wait_procs(children, timeout=30)
    for child in alive:
        child.kill()
    assert not alive, f"the explorer left {[c.pid for c in alive]} running"


def eth(wei: int | str) -> str:
    """Wei as the page shows it: exact ether, trailing zeros dropped."""
    whole, part = divmod(int(wei), 10**18)
    fraction = f"{part:018d}".rstrip("0")
    return f"{whole}.{fraction} ETH" if fraction else f"{whole} ETH"


def score(fixed: int) -> str:
    """A fixed-point score (score * 1e6) as the page shows it: six decimals."""
    return f"{Decimal(fixed) / Decimal(10**6):.6f}"
