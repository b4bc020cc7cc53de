import os
from pathlib import Path

import pytest

from ledger.accounts import (
    PASSWORD_ENV,
    dev_account,
    keystore_address,
    load_key_env,
    load_key_file,
    write_key_file,
    write_keystore,
)
from ledger.errors import KeyFileError


def test_dev_accounts_are_anvils() -> None:
    assert dev_account(0).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def test_key_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_key_file(path, dev_account(3))
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_key_file(path).address == dev_account(3).address
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="too open"):
        load_key_file(path)
    with pytest.raises(FileExistsError):
        write_key_file(path, dev_account(3))


def test_bad_key_does_not_echo_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSWARM_ETH_KEY", "0xnot-a-key-secret")
    with pytest.raises(KeyFileError) as info:
        load_key_env()
    assert "secret" not in str(info.value) and info.value.__cause__ is None
    monkeypatch.delenv("MEDSWARM_ETH_KEY")
    assert load_key_env() is None


FAST = 2**4  # scrypt's n for tests: a keystore unlocked in milliseconds (the default takes ~1 s)


def test_keystore_unlocks_with_the_password_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "eth.key"
    write_keystore(path, dev_account(4), "correct horse", iterations=FAST)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert dev_account(4).key.hex() not in path.read_text()
    assert keystore_address(path) == dev_account(4).address  # no password needed for this
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(KeyFileError, match=f"no password was given: set \\${PASSWORD_ENV}"):
        load_key_file(path)
    assert load_key_file(path, ask=lambda prompt: "correct horse").address == dev_account(4).address
    monkeypatch.setenv(PASSWORD_ENV, "wrong horse")
    with pytest.raises(KeyFileError, match="wrong password") as info:
        load_key_file(path)
    assert info.value.__cause__ is None
    monkeypatch.setenv(PASSWORD_ENV, "correct horse")
    assert load_key_file(path).address == dev_account(4).address
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="too open; use 0600 \\(chmod 600"):
        load_key_file(path)
    with pytest.raises(FileExistsError):
        write_keystore(path, dev_account(4), "x", iterations=FAST)
    with pytest.raises(KeyFileError, match="empty password"):
        write_keystore(tmp_path / "other.key", dev_account(4), "", iterations=FAST)


def test_missing_and_garbled_key_files_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found \\(make one: medswarm ledger new-key"):
        load_key_file(tmp_path / "nope.key")
    garbled = tmp_path / "garbled.key"
    garbled.write_text('{"version": 3')
    garbled.chmod(0o600)
    with pytest.raises(KeyFileError, match="neither a hex key nor a keystore"):
        load_key_file(garbled, password="x")
