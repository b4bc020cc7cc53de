"""Ethereum keys: from a 0600 key file or an environment variable, or the well-known dev
accounts of local chains. Keys are never logged, printed or written anywhere by the ledger."""

from __future__ import annotations

import os
import stat
from functools import cache
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.errors import KeyFileError

# The public test mnemonic Anvil, Hardhat and Foundry use for their dev accounts. Only for
# local throwaway chains (anvil, ganache, embedded); never for a chain holding real value.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_HD_PREFIX = "m/44'/60'/0'/0"
DEV_ACCOUNT_COUNT = 10
KEY_ENV = "MEDSWARM_ETH_KEY"


@cache
def dev_account(index: int) -> LocalAccount:
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"{DEV_HD_PREFIX}/{index}")


def dev_accounts(count: int = DEV_ACCOUNT_COUNT) -> list[LocalAccount]:
    return [dev_account(i) for i in range(count)]


def load_key_file(path: Path) -> LocalAccount:
    """A hex private key from a file readable by its owner only (mode 0600 or stricter)."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{path}: key file mode {oct(mode & 0o777)} is too open; use 0600")
        text = path.read_text().strip()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from exc
    return _from_hex(text, str(path))


def load_key_env(name: str = KEY_ENV) -> LocalAccount | None:
    text = os.environ.get(name)
    return _from_hex(text.strip(), f"${name}") if text else None


def write_key_file(path: Path, account: LocalAccount) -> None:
    """Create a new 0600 key file (refuses to overwrite)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(account.key.hex() + "\n")


def _from_hex(text: str, where: str) -> LocalAccount:
    try:
        return Account.from_key(text)
    except (ValueError, TypeError):
        # the underlying error's message may echo the key: do not chain it
        raise KeyFileError(f"{where}: not a valid hex private key") from None
