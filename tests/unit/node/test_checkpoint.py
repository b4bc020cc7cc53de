import json

import numpy as np
import pytest

from node import checkpoint as checkpoint_module
from node.checkpoint import load_checkpoint, save_checkpoint
from node.errors import CheckpointError


def params(v):
    return {"layer.weight": np.full((3, 2), v, np.float32), "layer.bias": np.arange(3.0)}


def test_roundtrip_keeps_one_file(tmp_path):
    assert load_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, 1, params(1.0), {"scaler": {"mean": [0.0]}})
    save_checkpoint(tmp_path, 2, params(2.0), {"scaler": {"mean": [1.0]}})
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.round == 2
    np.testing.assert_array_equal(ckpt.params["layer.weight"], params(2.0)["layer.weight"])
    assert ckpt.state["scaler"] == {"mean": [1.0]}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-2.safetensors"]


def test_no_pickle_on_disk(tmp_path):
    save_checkpoint(tmp_path, 1, params(1.0), {})
    raw = (tmp_path / "checkpoint-1.safetensors").read_bytes()
    assert b"\x80\x04" not in raw[:2]  # not a pickle stream
    header_len = int.from_bytes(raw[:8], "little")
    assert "layer.weight" in json.loads(raw[8 : 8 + header_len])


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 1, params(1.0), {})
    # A crash while the next one is written leaves its temporary file half written.
    (tmp_path / "checkpoint-2.safetensors.tmp").write_bytes(b"partial")
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.round == 1
    save_checkpoint(tmp_path, 2, params(2.0), {})  # the redone round
    assert load_checkpoint(tmp_path).round == 2
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.safetensors")) == [
        "checkpoint-2.safetensors"
    ]


def test_the_newest_round_wins_by_number_not_by_name(tmp_path):
    save_checkpoint(tmp_path, 10, params(10.0), {})
    save_checkpoint(tmp_path / "other", 9, params(9.0), {})
    (tmp_path / "other" / "checkpoint-9.safetensors").rename(tmp_path / "checkpoint-9.safetensors")
    assert load_checkpoint(tmp_path).round == 10


def test_tampered_params_are_detected(tmp_path):
    save_checkpoint(tmp_path, 1, params(1.0), {})
    path = tmp_path / "checkpoint-1.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("fsync, flushes", [(True, 1), (False, 0)])
def test_a_checkpoint_is_flushed_to_disk_unless_told_not_to(tmp_path, monkeypatch, fsync, flushes):
    calls = []
    monkeypatch.setattr(checkpoint_module.os, "fsync", lambda fd: calls.append(fd))
    save_checkpoint(tmp_path, 3, params(3.0), {"scaler": {}}, fsync)
    assert len(calls) == flushes
    assert load_checkpoint(tmp_path).round == 3
