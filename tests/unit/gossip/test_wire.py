import hashlib

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gossip import wire
from gossip.errors import PeerMessageError

PEER = "12D3KooWpeer"

dtypes = st.sampled_from(["float32", "float64", "int64", "int32", "float16"])
tensors = st.dictionaries(
    st.text(min_size=1, max_size=12),
    dtypes.flatmap(
        lambda dt: hnp.arrays(
            dt,
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
            elements={"allow_nan": False, "allow_infinity": False} if dt.startswith("f") else None,
        )
    ),
    min_size=1,
    max_size=4,
)


def roundtrip(snap: wire.Snapshot, expect: wire.Expectation | None = None) -> dict:
    header_frame, buffers = wire.encode_snapshot(snap)
    expect = expect or wire.Expectation(
        snap.kind, snap.round - 1, snap.round + 1, wire.specs_of(snap.tensors)
    )
    header = wire.parse_header(header_frame[4:], PEER, expect)
    return wire.decode_payload(header, b"".join(buffers), PEER)


def snapshot(params: dict, **kw) -> wire.Snapshot:
    fields = dict(kind="params", round=3, sender=PEER, samples=10, degree=2, tensors=params)
    fields.update(kw)
    return wire.Snapshot(**fields)


@settings(max_examples=60, deadline=None)
@given(tensors)
def test_roundtrip_preserves_every_tensor_bit_for_bit(params):
    out = roundtrip(snapshot(params))
    assert list(out) == list(params)
    for name, arr in params.items():
        assert out[name].dtype == arr.dtype and out[name].shape == arr.shape
        assert out[name].tobytes() == arr.tobytes()


@settings(max_examples=30, deadline=None)
@given(tensors, st.data())
def test_any_flipped_payload_byte_is_caught_by_the_digest(params, data):
    header_frame, buffers = wire.encode_snapshot(snapshot(params))
    payload = bytearray(b"".join(buffers))
    if not payload:
        return
    i = data.draw(st.integers(0, len(payload) - 1))
    payload[i] ^= 0xFF
    header = wire.parse_header(
        header_frame[4:], PEER, wire.Expectation("params", 0, 9, wire.specs_of(params))
    )
    with pytest.raises(PeerMessageError) as err:
        wire.decode_payload(header, payload, PEER)
    assert err.value.rule in {"digest", "non_finite"}


def test_big_endian_input_travels_as_little_endian():
    arr = np.arange(6, dtype=">f4").reshape(2, 3)
    out = roundtrip(snapshot({"w": arr}))
    np.testing.assert_array_equal(out["w"], arr.astype("<f4"))


def header_dict(**changes):
    params = {"w": np.ones((2, 2), np.float32)}
    frame, _ = wire.encode_snapshot(snapshot(params))
    msg = msgpack.unpackb(frame[4:])
    msg.update(changes)
    return msg


EXPECT = wire.Expectation("params", 1, 5, (wire.TensorSpec("w", "float32", (2, 2)),))


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"sender": "12D3KooWimpostor"}, "identity"),
        ({"round": 9}, "round"),
        ({"round": 0}, "round"),
        ({"round": "3"}, "schema"),
        ({"samples": 0}, "schema"),
        ({"v": wire.WIRE_VERSION - 1}, "schema"),
        ({"mass": 5}, "schema"),  # below the sender's own 10 samples
        ({"mass": -1}, "schema"),
        ({"mass": 12.0}, "schema"),
        ({"mass": True}, "schema"),
        ({"mass": None}, "schema"),  # a version-1 header has none
        ({"status": "maybe"}, "schema"),
        ({"kind": "stats"}, "schema"),
        ({"tensors": "nope"}, "schema"),
    ],
)
def test_header_rules_name_what_failed(changes, rule):
    body = msgpack.packb(header_dict(**changes))
    with pytest.raises(PeerMessageError) as err:
        wire.parse_header(body, PEER, EXPECT)
    assert err.value.rule == rule
    assert err.value.peer == PEER


def test_the_mass_travels_and_zero_means_unknown():
    for mass in (0, 10, 10**9):
        frame, _ = wire.encode_snapshot(snapshot({"w": np.ones((2, 2), np.float32)}, mass=mass))
        assert wire.parse_header(frame[4:], PEER, EXPECT).mass == mass


def test_wrong_shape_and_wrong_dtype_are_rejected_before_any_payload():
    for entry in (
        {"name": "w", "dtype": "float32", "shape": [3, 3], "nbytes": 36},
        {"name": "w", "dtype": "float64", "shape": [2, 2], "nbytes": 32},
        {"name": "v", "dtype": "float32", "shape": [2, 2], "nbytes": 16},
    ):
        entry["digest"] = hashlib.sha256(b"").digest()
        body = msgpack.packb(header_dict(tensors=[entry]))
        with pytest.raises(PeerMessageError) as err:
            wire.parse_header(body, PEER, EXPECT)
        assert err.value.rule == "shape"


def test_nbytes_that_disagrees_with_shape_is_rejected():
    entry = {"name": "w", "dtype": "float32", "shape": [2, 2], "nbytes": 10**9, "digest": bytes(32)}
    with pytest.raises(PeerMessageError, match="nbytes"):
        wire.parse_header(msgpack.packb(header_dict(tensors=[entry])), PEER, EXPECT)


def test_pickle_like_dtypes_never_travel():
    with pytest.raises(ValueError, match="cannot travel"):
        wire.encode_snapshot(snapshot({"o": np.array([object()], dtype=object)}))
    entry = {"name": "w", "dtype": "object", "shape": [2, 2], "nbytes": 16, "digest": bytes(32)}
    with pytest.raises(PeerMessageError):
        wire.parse_header(msgpack.packb(header_dict(tensors=[entry])), PEER, EXPECT)


def test_non_finite_values_are_rejected():
    params = {"w": np.array([[1.0, np.nan], [0.0, 1.0]], np.float32)}
    with pytest.raises(PeerMessageError) as err:
        roundtrip(snapshot(params), EXPECT)
    assert err.value.rule == "non_finite"


def test_truncated_payload_is_rejected():
    frame, buffers = wire.encode_snapshot(snapshot({"w": np.ones((2, 2), np.float32)}))
    header = wire.parse_header(frame[4:], PEER, EXPECT)
    with pytest.raises(PeerMessageError) as err:
        wire.decode_payload(header, b"".join(buffers)[:-1], PEER)
    assert err.value.rule == "truncated"


def test_garbage_header_is_a_schema_error_not_a_crash():
    for body in (b"\xc1\xc1\xc1", msgpack.packb([1, 2, 3]), b""):
        with pytest.raises(PeerMessageError) as err:
            wire.parse_header(body, PEER, EXPECT)
        assert err.value.rule == "schema"


def test_not_ready_status_is_passed_through():
    header = wire.parse_header(wire.encode_status("not_ready")[4:], PEER, EXPECT)
    assert header.status == "not_ready"


def test_request_roundtrip_and_rejection():
    assert wire.decode_request(wire.encode_request("params", 7, 2.5)[4:], PEER) == (
        "params",
        7,
        2.5,
    )
    with pytest.raises(PeerMessageError):
        wire.decode_request(
            msgpack.packb({"v": wire.WIRE_VERSION, "kind": "params", "round": True, "wait": 1.0}),
            PEER,
        )
