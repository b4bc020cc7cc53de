"""Wire format for parameter sets, and its validation. Never pickle.

A response is a 4-byte big-endian header length, a msgpack header, then the raw little-endian
bytes of each tensor in header order. The header carries round, sender, sample count, degree,
mass (the sender's closed-neighbourhood sample count this round, 0 while unknown: the merge's
weights need it) and, per tensor, name, dtype, shape, byte length and sha256 digest.

Every message carries the wire version `v`, and a peer of another version is rejected (a
`schema` error naming both): version 2 added the mass, which both ends of a link need for the
same weight, so a swarm runs one version.

Validation happens in the order docs/design.md fixes: size caps before anything is parsed, then the
schema, sender identity, round window, tensor names/dtypes/shapes against the local model, and,
once the bytes are in, digests and finite values.
"""

import hashlib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from gossip.errors import PeerMessageError

WIRE_VERSION = 2  # 2: the header's `mass`
LENGTH_PREFIX = struct.Struct(">I")
# A request is small, but secure aggregation's carry peer lists and sealed shares (about 100
# bytes per neighbour of the aggregating node).
MAX_REQUEST_BYTES = 64 * 1024
MAX_HEADER_BYTES = 1 << 20
ALLOWED_DTYPES = frozenset({"float16", "float32", "float64", "int32", "int64", "uint8"})
STATUSES = frozenset({"ok", "not_ready", "gone", "refused"})


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Snapshot:
    """What a node serves for one (kind, round): its parameters and the facts its peers weigh."""

    kind: str
    round: int
    sender: str
    samples: int
    degree: int
    tensors: Mapping[str, np.ndarray]
    mass: int = 0  # the sender's closed-neighbourhood sample count this round; 0: unknown


@dataclass(frozen=True)
class Expectation:
    """What the receiver accepts: the tensors of its own model, a round window and a size cap."""

    kind: str
    round_min: int
    round_max: int
    specs: tuple[TensorSpec, ...]

    @property
    def payload_bytes(self) -> int:
        return sum(s.nbytes for s in self.specs)


@dataclass(frozen=True)
class Header:
    status: str
    kind: str
    round: int
    sender: str
    samples: int
    degree: int
    specs: tuple[TensorSpec, ...]
    digests: tuple[bytes, ...]
    mass: int = 0

    @property
    def payload_bytes(self) -> int:
        return sum(s.nbytes for s in self.specs)


def specs_of(tensors: Mapping[str, np.ndarray]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(n, t.dtype.name, tuple(t.shape)) for n, t in tensors.items())


def frame(header: Mapping[str, Any]) -> bytes:
    body = msgpack.packb(dict(header), use_bin_type=True)
    return LENGTH_PREFIX.pack(len(body)) + body


def encode_request(kind: str, round_: int, wait: float) -> bytes:
    """Ask for (kind, round); the server may hold the request up to `wait` seconds."""
    return frame({"v": WIRE_VERSION, "kind": kind, "round": round_, "wait": float(wait)})


def decode_request(body: bytes, peer: str) -> tuple[str, int, float]:
    return request_fields(unpack_map(body, "request", peer), peer)


def request_fields(msg: dict[str, Any], peer: str) -> tuple[str, int, float]:
    """(kind, round, wait) of a parameter request, checked."""
    kind, round_, wait = msg.get("kind"), msg.get("round"), msg.get("wait")
    if (
        msg.get("v") != WIRE_VERSION
        or not isinstance(kind, str)
        or not isinstance(round_, int)
        or isinstance(round_, bool)
        or not isinstance(wait, float)
    ):
        raise PeerMessageError(peer, "schema", f"malformed request {msg!r}")
    return kind, round_, wait


def encode_status(status: str) -> bytes:
    """A response without parameters: the round is not ready yet, or no longer held."""
    return frame({"v": WIRE_VERSION, "status": status})


def encode_snapshot(snap: Snapshot) -> tuple[bytes, list[bytes]]:
    """Header frame and payload buffers (little-endian, C order) for one snapshot."""
    buffers: list[bytes] = []
    entries = []
    for name, tensor in snap.tensors.items():
        dtype = tensor.dtype.name  # byte order is not part of the name: it always travels as <
        if dtype not in ALLOWED_DTYPES:
            raise ValueError(f"tensor {name}: dtype {tensor.dtype} cannot travel")
        raw = np.ascontiguousarray(tensor, dtype=tensor.dtype.newbyteorder("<")).tobytes()
        buffers.append(raw)
        entries.append(
            {
                "name": name,
                "dtype": dtype,
                "shape": list(tensor.shape),
                "nbytes": len(raw),
                "digest": hashlib.sha256(raw).digest(),
            }
        )
    header = {
        "v": WIRE_VERSION,
        "status": "ok",
        "kind": snap.kind,
        "round": snap.round,
        "sender": snap.sender,
        "samples": snap.samples,
        "degree": snap.degree,
        "mass": snap.mass,
        "tensors": entries,
    }
    return frame(header), buffers


def parse_header(body: bytes, peer: str, expect: Expectation) -> Header:
    """Validate a response header against the sender's identity and the local model."""
    msg = unpack_map(body, "header", peer)
    check_version(msg, peer)
    status = msg.get("status")
    if status not in STATUSES:
        raise PeerMessageError(peer, "schema", f"status {status!r}")
    if status != "ok":
        return Header(status, expect.kind, -1, peer, 0, 0, (), ())
    fields = {"kind": str, "round": int, "sender": str, "samples": int, "degree": int, "mass": int}
    for key, typ in fields.items():
        value = msg.get(key)
        if not (isinstance(value, typ) and not isinstance(value, bool)):
            raise PeerMessageError(peer, "schema", f"{key} should be {typ.__name__}: {value!r}")
    if msg["sender"] != peer:
        raise PeerMessageError(peer, "identity", f"header claims sender {msg['sender']}")
    if msg["kind"] != expect.kind:
        raise PeerMessageError(peer, "schema", f"kind {msg['kind']!r}, asked {expect.kind!r}")
    if not expect.round_min <= msg["round"] <= expect.round_max:
        raise PeerMessageError(
            peer,
            "round",
            f"round {msg['round']} outside [{expect.round_min}, {expect.round_max}]",
        )
    if msg["samples"] < 1 or msg["degree"] < 1:
        raise PeerMessageError(peer, "schema", "samples and degree must be >= 1")
    check_mass(msg["mass"], msg["samples"], peer)
    specs, digests = _parse_tensors(msg.get("tensors"), peer)
    if specs != expect.specs:
        want = ", ".join(f"{s.name}:{s.dtype}{list(s.shape)}" for s in expect.specs)
        got = ", ".join(f"{s.name}:{s.dtype}{list(s.shape)}" for s in specs)
        raise PeerMessageError(peer, "shape", f"tensors [{got}] != local model [{want}]")
    return Header(
        "ok",
        msg["kind"],
        msg["round"],
        msg["sender"],
        msg["samples"],
        msg["degree"],
        specs,
        digests,
        msg["mass"],
    )


def check_version(msg: Mapping[str, Any], peer: str) -> None:
    if msg.get("v") != WIRE_VERSION:
        raise PeerMessageError(
            peer, "schema", f"wire version {msg.get('v')!r}, this node speaks {WIRE_VERSION}"
        )


def check_mass(mass: int, samples: int, peer: str) -> None:
    """A closed neighbourhood holds the sender's own samples: 0 (unknown) or >= samples."""
    if mass != 0 and mass < samples:
        raise PeerMessageError(
            peer, "schema", f"mass {mass} below the sender's own {samples} samples (0: unknown)"
        )


def decode_payload(header: Header, payload: bytes | bytearray, peer: str) -> dict[str, np.ndarray]:
    """Check digests and finiteness; return tensors in native byte order."""
    if len(payload) != header.payload_bytes:
        raise PeerMessageError(
            peer, "truncated", f"{len(payload)} payload bytes, header said {header.payload_bytes}"
        )
    view = memoryview(payload)
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for spec, digest in zip(header.specs, header.digests, strict=True):
        chunk = view[offset : offset + spec.nbytes]
        offset += spec.nbytes
        if hashlib.sha256(chunk).digest() != digest:
            raise PeerMessageError(peer, "digest", f"tensor {spec.name} does not match its digest")
        arr = np.frombuffer(chunk, dtype=np.dtype(spec.dtype).newbyteorder("<"))
        arr = arr.astype(spec.dtype).reshape(spec.shape)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise PeerMessageError(peer, "non_finite", f"tensor {spec.name} has NaN or Inf")
        tensors[spec.name] = arr
    return tensors


def _parse_tensors(raw: Any, peer: str) -> tuple[tuple[TensorSpec, ...], tuple[bytes, ...]]:
    if not isinstance(raw, list):
        raise PeerMessageError(peer, "schema", "tensors should be a list")
    specs, digests = [], []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise PeerMessageError(peer, "schema", f"tensors[{i}] should be a map")
        name, dtype, shape = entry.get("name"), entry.get("dtype"), entry.get("shape")
        nbytes, digest = entry.get("nbytes"), entry.get("digest")
        if not isinstance(name, str) or dtype not in ALLOWED_DTYPES:
            raise PeerMessageError(peer, "schema", f"tensors[{i}]: bad name or dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise PeerMessageError(peer, "schema", f"tensors[{i}] {name}: bad shape {shape!r}")
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise PeerMessageError(peer, "schema", f"tensors[{i}] {name}: bad digest")
        spec = TensorSpec(name, dtype, tuple(shape))
        if nbytes != spec.nbytes:
            raise PeerMessageError(
                peer, "schema", f"tensor {name}: nbytes {nbytes!r} != shape x dtype {spec.nbytes}"
            )
        specs.append(spec)
        digests.append(digest)
    return tuple(specs), tuple(digests)


def unpack_map(body: bytes, what: str, peer: str = "?") -> dict[str, Any]:
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=64)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise PeerMessageError(peer, "schema", f"{what} is not valid msgpack: {exc}") from exc
    if not isinstance(msg, dict):
        raise PeerMessageError(peer, "schema", f"{what} should be a map")
    return msg


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
