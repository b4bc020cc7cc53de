"""A hospital's row of the cross-site matrix: flooded models checked before use, the consensus
weighted by rows, every model scored on the hospital's split, and a digest that follows every
number of the row and nothing else."""

import hashlib
import json

import numpy as np
import pytest

from node.cross_site import (
    canonical_json,
    consensus,
    decode_model,
    document,
    encode_model,
    evaluate_row,
    row_digest,
)
from node.models import build_model
from node.params import flatten, load_params, model_params, unflatten
from node.training import evaluate


def _model(seed: int) -> dict[str, np.ndarray]:
    return model_params(build_model("mlp", 4, [8], seed))


def _split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    return x, (x[:, 0] - x[:, 2] > 0).astype(np.int64)


def test_a_model_crosses_the_flood_unchanged_with_its_rows():
    params = _model(1)
    row = encode_model(params, 123)
    assert len(row) == 8 + 4 * flatten(params).size  # one width for every member's model
    samples, back = decode_model(row, _model(0))
    assert samples == 123
    assert list(back) == list(params)
    for name, tensor in params.items():
        assert back[name].dtype == tensor.dtype
        np.testing.assert_array_equal(back[name], tensor)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda row: row[:-4], "bytes, expected"),
        (lambda row: row + b"\0\0\0\0", "bytes, expected"),
        (lambda row: bytes(8) + row[8:], "0 rows"),
        (lambda row: row[:8] + np.float32(np.nan).tobytes() + row[12:], "non-finite"),
        (lambda row: row[:-4] + np.float32(np.inf).tobytes(), "non-finite"),
    ],
)
def test_an_unusable_model_is_refused_saying_why(spoil, message):
    with pytest.raises(ValueError, match=message):
        decode_model(spoil(encode_model(_model(1), 10)), _model(0))


def test_unflatten_needs_the_models_size():
    with pytest.raises(ValueError, match="3 values for a model of"):
        unflatten(np.zeros(3), _model(0))


def test_the_consensus_weighs_models_by_their_training_rows():
    a, b = _model(1), _model(2)
    agreed = consensus([(100, a), (300, b)])
    for name in a:
        expected = 0.25 * a[name].astype(np.float64) + 0.75 * b[name]
        np.testing.assert_allclose(agreed[name], expected, rtol=1e-6)
        assert agreed[name].dtype == a[name].dtype
    only = consensus([(7, a)])
    for name in a:
        np.testing.assert_array_equal(only[name], a[name])


def test_a_row_scores_every_model_that_arrived_and_their_consensus_and_lists_the_rest():
    x, y = _split()
    members = ("peerA", "peerB", "peerC")
    models = {"peerC": (40, _model(3)), "peerA": (120, _model(1))}  # peerB never arrived
    net = build_model("mlp", 4, [8], 0)
    row = evaluate_row(net, x, y, "peerA", members, models)
    assert row["evaluator"] == "peerA" and row["evaluated_on"] == "validation"
    assert row["rows"] == 60 and row["missing"] == ["peerB"]
    assert list(row["models"]) == ["peerA", "peerC"]  # the members' order
    for peer, (_, params) in models.items():
        reference = build_model("mlp", 4, [8], 9)
        load_params(reference, params)
        result = evaluate(reference, x, y)
        assert row["models"][peer] == {"accuracy": result.accuracy, "auc": result.auc}
    agreed = build_model("mlp", 4, [8], 9)
    load_params(agreed, consensus([models["peerA"], models["peerC"]]))
    result = evaluate(agreed, x, y)
    assert row["consensus"] == {"accuracy": result.accuracy, "auc": result.auc}


def test_one_class_gives_no_auc_and_the_row_still_has_a_digest():
    x, _ = _split()
    row = evaluate_row(build_model("mlp", 4, [8], 0), x, np.ones(60, np.int64), "p", ("p",),
                       {"p": (5, _model(1))})  # fmt: skip
    assert row["models"]["p"]["auc"] is None and row["consensus"]["auc"] is None
    assert json.loads(canonical_json(row)) == row


def test_the_canonical_json_is_one_byte_string_whatever_the_key_order():
    a, b = {"accuracy": 1.0, "auc": None}, {"auc": 0.5, "accuracy": 0.75}
    row = {"models": {"b": b, "a": a}, "rows": 3, "missing": []}
    shuffled = {"missing": [], "rows": 3, "models": {"a": dict(reversed(a.items())), "b": b}}
    text = canonical_json(row)
    assert text == canonical_json(shuffled)
    assert text == (
        b'{"missing":[],"models":{"a":{"accuracy":1.0,"auc":null},'
        b'"b":{"accuracy":0.75,"auc":0.5}},"rows":3}'
    )
    assert row_digest(row) == hashlib.sha256(text).hexdigest()
    # What a reader of the file computes again from the JSON it parsed.
    assert row_digest(json.loads(json.dumps(row, indent=1))) == row_digest(row)
    with pytest.raises(ValueError):
        canonical_json({"auc": float("nan")})


def _edited(row: dict, edit) -> dict:  # type: ignore[no-untyped-def]
    copy = json.loads(json.dumps(row))
    edit(copy)
    return copy


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: r["models"]["q"].update(accuracy=np.nextafter(r["models"]["q"]["accuracy"], 2)),
        lambda r: r["models"]["p"].update(auc=None),
        lambda r: r["consensus"].update(auc=r["consensus"]["auc"] / 2),
        lambda r: r.update(rows=r["rows"] + 1),
        lambda r: r.update(missing=["q"]),
    ],
)
def test_the_digest_changes_when_any_number_changes(edit):
    x, y = _split()
    row = evaluate_row(build_model("mlp", 4, [8], 0), x, y, "p", ("p", "q"),
                       {"p": (5, _model(1)), "q": (6, _model(2))})  # fmt: skip
    assert row_digest(_edited(row, edit)) != row_digest(row)
    assert row_digest(_edited(row, lambda r: None)) == row_digest(row)


def test_the_document_holds_the_row_and_its_digest_or_why_there_is_none():
    row = {"rows": 3, "models": {}, "missing": ["q"]}
    doc = document("cleveland", "p", row)
    assert doc == {"node": "cleveland", "peer_id": "p", "row": row, "digest": row_digest(row)}
    skipped = document("va", "q", None, "no validation split")
    assert skipped["row"] is None and skipped["digest"] is None
    assert skipped["skipped"] == "no validation split"
