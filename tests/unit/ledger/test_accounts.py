import os
from pathlib import Path

import pytest

from ledger.accounts import dev_account, load_key_env, load_key_file, write_key_file
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
