"""Model zoo: names, shapes, and initialisation that depends only on the seed."""

from __future__ import annotations

import pytest
import torch

from node.models import MODEL_NAMES, build_model, parameter_count


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_gives_bit_identical_parameters(name):
    a = build_model(name, 15, hidden=(16, 8), seed=42)
    torch.rand(100)  # global RNG activity in between must not matter
    b = build_model(name, 15, hidden=(16, 8), seed=42)
    c = build_model(name, 15, hidden=(16, 8), seed=43)
    assert _same_state(a, b)
    assert not _same_state(a, c)


def test_building_does_not_touch_the_global_rng():
    before = torch.random.get_rng_state()
    build_model("mlp", 15, hidden=(32,), seed=1)
    build_model("logreg", 15, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_logit_per_row(name):
    model = build_model(name, 7, hidden=(5,))
    out = model(torch.randn(9, 7))
    assert out.shape == (9,)
    assert out.dtype == torch.float32


def test_parameter_names_and_counts_are_stable():
    logreg = build_model("logreg", 15)
    assert list(logreg.state_dict()) == ["linear.weight", "linear.bias"]
    assert parameter_count(logreg) == 16
    mlp = build_model("mlp", 15, hidden=(32, 8))
    names = ["layers.0.weight", "layers.0.bias", "layers.3.weight", "layers.3.bias"]
    names += ["layers.6.weight", "layers.6.bias"]
    assert list(mlp.state_dict()) == names
    assert parameter_count(mlp) == 15 * 32 + 32 + 32 * 8 + 8 + 8 + 1
    # Dropout does not shift names: peers with and without it still match tensors by name.
    assert list(build_model("mlp", 15, hidden=(32, 8), dropout=0.3).state_dict()) == names


def test_init_follows_pytorch_default_bounds():
    model = build_model("mlp", 16, hidden=(64,), seed=3)
    first = model.state_dict()["layers.0.weight"]
    assert first.abs().max() <= 1 / 16**0.5
    assert first.std() > 0.5 / (3 * 16) ** 0.5  # not degenerate: U(-b, b) has std b/sqrt(3)


def test_dropout_is_identity_in_eval_mode():
    model = build_model("mlp", 4, hidden=(8,), dropout=0.5).eval()
    x = torch.randn(3, 4)
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"name": "resnet"}, "unknown model 'resnet'; valid models: logreg, mlp"),
        ({"name": "mlp", "hidden": ()}, "at least one hidden layer"),
        ({"name": "mlp", "hidden": (0,)}, "at least one hidden layer"),
        ({"name": "logreg", "n_features": 0}, "n_features"),
        ({"name": "mlp", "dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_arguments(kwargs, pattern):
    args = {"n_features": 3} | kwargs
    with pytest.raises(ValueError, match=pattern):
        build_model(**args)
