import os

import pytest

from gossip.errors import IdentityError
from gossip.identity import create_key_file, load_key_file, peer_id_of


def test_key_file_is_0600_and_reloads_to_the_same_peer_id(tmp_path):
    path = tmp_path / "keys" / "id.key"
    created = create_key_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert peer_id_of(load_key_file(path)) == peer_id_of(created)
    assert peer_id_of(created).startswith("12D3KooW")


def test_existing_key_is_never_overwritten(tmp_path):
    path = tmp_path / "id.key"
    create_key_file(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        create_key_file(path)
    assert path.read_bytes() == before


def test_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "id.key"
    create_key_file(path)
    path.chmod(0o644)
    with pytest.raises(IdentityError, match="mode 644"):
        load_key_file(path)


def test_missing_and_malformed_keys_are_named(tmp_path):
    with pytest.raises(IdentityError, match="not found"):
        load_key_file(tmp_path / "nope.key")
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"short")
    bad.chmod(0o600)
    with pytest.raises(IdentityError, match="expected 32 key bytes"):
        load_key_file(bad)
