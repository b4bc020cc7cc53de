"""Ethereum keys: from a 0600 key file or an environment variable, or the well-known dev
accounts of local chains. Keys are never logged, printed or written anywhere by the ledger.

A key file is either a hex private key or an encrypted keystore (the Web3 Secret Storage JSON
that geth, MetaMask and eth-account write: scrypt and AES-128-CTR), whose password comes from
$MEDSWARM_KEY_PASSWORD or, at a terminal, a prompt.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from ledger.errors import KeyFileError

# The public test mnemonic Anvil, Hardhat and Foundry use for their dev accounts. Only for
# local throwaway chains (anvil, ganache, embedded); never for a chain holding real value.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_HD_PREFIX = "m/44'/60'/0'/0"
DEV_ACCOUNT_COUNT = 10
KEY_ENV = "MEDSWARM_ETH_KEY"
PASSWORD_ENV = "MEDSWARM_KEY_PASSWORD"  # a keystore's password, where nobody can type it
NEW_KEY = "medswarm ledger new-key"


@cache
def dev_account(index: int) -> LocalAccount:
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"{DEV_HD_PREFIX}/{index}")


def dev_accounts(count: int = DEV_ACCOUNT_COUNT) -> list[LocalAccount]:
    return [dev_account(i) for i in range(count)]


def check_key_mode(path: Path) -> None:
    """Refuse a key file that group or others may read or write (KeyFileError naming the fix)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found (make one: {NEW_KEY} {path})") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: key file mode {oct(mode & 0o777)} is too open; use 0600 (chmod 600 {path})"
        )


def load_key_file(
    path: Path, password: str | None = None, ask: Callable[[str], str] | None = None
) -> LocalAccount:
    """The account of a key file readable by its owner only (mode 0600 or stricter): a hex
    private key, or a keystore unlocked with `password`, else $MEDSWARM_KEY_PASSWORD, else
    `ask(prompt)` (e.g. getpass at a terminal)."""
    check_key_mode(path)
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc}") from None
    if not is_keystore(text):
        return _from_hex(text, str(path))
    if password is None:
        password = os.environ.get(PASSWORD_ENV) or None  # empty: unset (compose passes "")
    if password is None and ask is not None:
        password = ask(f"password of {path}: ")
    if password is None:
        raise KeyFileError(
            f"{path} is an encrypted keystore and no password was given: set ${PASSWORD_ENV}"
        )
    return _decrypt(_keystore(text, path), password, path)


def is_keystore(text: str) -> bool:
    """Whether a key file's text is a keystore (JSON) rather than a hex key."""
    return text.lstrip().startswith("{")


def keystore_address(path: Path) -> str | None:
    """The address a keystore file names (it is stored in clear), or None for a hex key file.
    Reads no secret: for checks that must not ask for the password."""
    check_key_mode(path)
    text = path.read_text().strip()
    if not is_keystore(text):
        return None
    address = _keystore(text, path).get("address")
    if not isinstance(address, str):
        return None
    return str(to_checksum_address(address))


def write_keystore(
    path: Path, account: LocalAccount, password: str, iterations: int | None = None
) -> None:
    """Create a new 0600 keystore of `account` encrypted with `password` (refuses to
    overwrite). `iterations`: scrypt's n (default eth-account's 2**18, about 1 s to unlock)."""
    if not password:
        raise KeyFileError("an empty password would leave the keystore open to anyone")
    keystore = Account.encrypt(account.key, password, kdf="scrypt", iterations=iterations)
    _create_private(path, json.dumps(keystore) + "\n")


def _keystore(text: str, path: Path) -> dict[str, Any]:
    try:
        keystore = json.loads(text)
    except ValueError:
        raise KeyFileError(f"{path}: neither a hex key nor a keystore (JSON)") from None
    if not isinstance(keystore, dict) or "crypto" not in keystore:
        raise KeyFileError(f"{path}: not a keystore (no 'crypto' section)")
    return keystore


def _decrypt(keystore: dict[str, Any], password: str, path: Path) -> LocalAccount:
    try:
        key = Account.decrypt(keystore, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise KeyFileError(
                f"{path}: wrong password for this keystore (check ${PASSWORD_ENV})"
            ) from None
        raise KeyFileError(f"{path}: unusable keystore: {exc}") from None
    return Account.from_key(key)


def load_key_env(name: str = KEY_ENV) -> LocalAccount | None:
    text = os.environ.get(name)
    return _from_hex(text.strip(), f"${name}") if text else None


def write_key_file(path: Path, account: LocalAccount) -> None:
    """Create a new 0600 key file (refuses to overwrite)."""
    _create_private(path, account.key.hex() + "\n")


def _create_private(path: Path, text: str) -> None:
    # O_EXCL: never overwrite a key; the mode is set at creation, with no window open to others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _from_hex(text: str, where: str) -> LocalAccount:
    try:
        return Account.from_key(text)
    except (ValueError, TypeError):
        # the underlying error's message may echo the key: do not chain it
        raise KeyFileError(f"{where}: not a valid hex private key") from None
