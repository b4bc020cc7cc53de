"""Local training and evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from torch import nn

from node.models import build_model
from node.params import model_params
from node.training import (
    EvalResult,
    PlainSGD,
    TrainSettings,
    evaluate,
    loss_meter,
    roc_auc,
    train_local,
)


def _separable(n: int = 200, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d)
    y = (x @ w > 0).astype(np.int64)
    return x, y


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("logreg", TrainSettings(epochs=10, lr=0.5)),
        ("mlp", TrainSettings(epochs=10, lr=0.1, momentum=0.9)),
        ("mlp", TrainSettings(epochs=10, lr=0.01, optimizer="adam", weight_decay=1e-4)),
    ],
)
def test_training_reduces_loss_on_separable_data(name, settings):
    x, y = _separable()
    model = build_model(name, x.shape[1], hidden=(16,), seed=0)
    before = evaluate(model, x, y)
    first = train_local(model, x, y, settings, seed=0)
    later = train_local(model, x, y, settings, seed=1)
    after = evaluate(model, x, y)
    assert later < first
    assert after.loss < 0.5 * before.loss
    assert after.accuracy >= 0.95


def test_same_seed_same_result_including_dropout():
    x, y = _separable()
    settings = TrainSettings(epochs=2, batch_size=16)
    runs = []
    for _ in range(2):
        model = build_model("mlp", 5, hidden=(8,), seed=3, dropout=0.5)
        loss = train_local(model, x, y, settings, seed=11)
        runs.append((loss, _state(model)))
    other = build_model("mlp", 5, hidden=(8,), seed=3, dropout=0.5)
    train_local(other, x, y, settings, seed=12)
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    assert not all(torch.equal(runs[0][1][k], v) for k, v in other.state_dict().items())


def test_training_does_not_touch_the_global_rng():
    x, y = _separable()
    model = build_model("mlp", 5, hidden=(8,), dropout=0.2)
    before = torch.random.get_rng_state()
    train_local(model, x, y, TrainSettings(), seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_zero_epochs_is_a_no_op_returning_the_current_loss():
    x, y = _separable()
    model = build_model("logreg", 5, seed=0)
    state = _state(model)
    loss = train_local(model, x, y, TrainSettings(epochs=0), seed=0)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert loss == pytest.approx(evaluate(model, x, y).loss, rel=1e-6)


def test_mode_is_restored():
    x, y = _separable(n=20)
    model = build_model("mlp", 5, hidden=(4,)).eval()
    train_local(model, x, y, TrainSettings(), seed=0)
    assert not model.training
    model.train()
    evaluate(model, x, y)
    assert model.training


def test_evaluate_matches_sklearn_on_a_fixed_model():
    model = build_model("logreg", 2)
    model.load_state_dict(
        {"linear.weight": torch.tensor([[1.0, -2.0]]), "linear.bias": torch.tensor([0.25])}
    )
    x = np.array(
        [[0, 0], [1, 1], [2, 0], [0, 1], [1, 0], [3, 1], [0, 0], [-1, 0.5]], dtype=np.float32
    )
    y = np.array([1, 0, 1, 0, 0, 1, 0, 1])
    logits = x.astype(np.float64) @ np.array([1.0, -2.0]) + 0.25  # has ties: rows 0 and 6
    prob = 1 / (1 + np.exp(-logits))

    result = evaluate(model, x, y)

    assert result.n == 8
    assert result.accuracy == pytest.approx(accuracy_score(y, prob > 0.5))
    assert result.auc == pytest.approx(roc_auc_score(y, logits))
    assert result.loss == pytest.approx(log_loss(y, prob), rel=1e-5)
    assert result.to_dict() == {
        "accuracy": result.accuracy,
        "auc": result.auc,
        "loss": result.loss,
        "n": 8,
    }


def test_evaluate_scores_every_row_of_a_set_larger_than_one_slice():
    from node.training import EVAL_ROWS

    model = build_model("mlp", 5, [8], 3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * EVAL_ROWS + 17, 5)).astype(np.float32)  # a short last slice
    y = rng.integers(0, 2, size=len(x))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).squeeze(-1).double().numpy()
    prob = 1 / (1 + np.exp(-logits))

    result = evaluate(model, x, y)

    assert result.n == len(x)
    assert result.accuracy == pytest.approx(accuracy_score(y, logits > 0))
    assert result.auc == pytest.approx(roc_auc_score(y, logits))
    assert result.loss == pytest.approx(log_loss(y, prob), rel=1e-5)


def test_roc_auc_matches_sklearn_with_many_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    score = rng.integers(0, 5, 300).astype(np.float64) + y
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score))


def test_auc_is_none_with_one_class():
    x, _ = _separable(n=10)
    result = evaluate(build_model("logreg", 5), x, np.ones(10, dtype=np.int64))
    assert isinstance(result, EvalResult)
    assert result.auc is None
    assert 0.0 <= result.accuracy <= 1.0


@pytest.mark.parametrize(
    ("x", "y", "pattern"),
    [
        (np.full((3, 2), np.nan), np.zeros(3), "Scaler"),
        (np.zeros((3, 2)), np.array([0, 1, 2]), "0/1"),
        (np.zeros((3, 2)), np.zeros(4), "shape"),
        (np.zeros((0, 2)), np.zeros(0), "no rows"),
    ],
)
def test_bad_inputs_are_rejected(x, y, pattern):
    model = build_model("logreg", 2)
    with pytest.raises(ValueError, match=pattern):
        train_local(model, x, y, TrainSettings(), seed=0)
    with pytest.raises(ValueError, match=pattern):
        evaluate(model, x, y)


@pytest.mark.parametrize(
    "kwargs",
    [{"epochs": -1}, {"batch_size": 0}, {"lr": 0.0}, {"momentum": 1.0}, {"optimizer": "rmsprop"}],
)
def test_settings_are_validated(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TrainSettings(**kwargs)


@pytest.mark.parametrize(
    "momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01), (0.5, 0.001)]
)
def test_plain_sgd_matches_torch_optim_sgd(momentum, weight_decay):
    settings = TrainSettings(lr=0.1, momentum=momentum, weight_decay=weight_decay)
    ours, theirs = build_model("mlp", 4, [8], seed=3), build_model("mlp", 4, [8], seed=3)
    plain = PlainSGD(ours, settings)
    reference = torch.optim.SGD(
        theirs.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay
    )
    x, y = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), torch.ones(16)
    for _ in range(5):
        for model, optimizer in ((ours, plain), (theirs, reference)):
            optimizer.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
            optimizer.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-7)
    assert not torch.allclose(a, build_model("mlp", 4, [8], seed=3).layers[-1].bias)


@pytest.mark.parametrize(
    ("name", "hidden", "momentum", "weight_decay"),
    [
        ("logreg", (), 0.0, 0.0),
        ("mlp", (16,), 0.0, 0.0),
        ("mlp", (16, 8), 0.9, 0.0),
        ("mlp", (16,), 0.0, 0.01),
        ("mlp", (16, 8), 0.5, 0.001),
    ],
)
def test_the_written_out_backward_trains_exactly_as_autograd(
    monkeypatch, name, hidden, momentum, weight_decay
):
    """`train_local` takes node.direct_sgd's path for plain SGD on these models; with it turned
    off (autograd and PlainSGD) the same seed gives the same weights and the same loss."""
    import node.training

    x, y = _separable(n=203, d=6)  # a short last batch
    settings = TrainSettings(epochs=2, batch_size=32, lr=0.1, momentum=momentum,
                             weight_decay=weight_decay)  # fmt: skip
    direct, reference = (build_model(name, 6, hidden or (1,), seed=4) for _ in range(2))
    assert node.training.linear_layers(direct) is not None
    direct_loss = train_local(direct, x, y, settings, seed=5)
    monkeypatch.setattr(node.training, "linear_layers", lambda model: None)
    reference_loss = train_local(reference, x, y, settings, seed=5)
    assert direct_loss == pytest.approx(reference_loss, rel=1e-6)
    expected = reference.state_dict()
    for key, value in direct.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-7, msg=key)
    untrained = build_model(name, 6, hidden or (1,), seed=4)
    assert not torch.equal(next(direct.parameters()), next(untrained.parameters()))


def test_dropout_keeps_autograd():
    from node.direct_sgd import linear_layers

    assert linear_layers(build_model("mlp", 4, (8,), dropout=0.2)) is None
    assert linear_layers(build_model("mlp", 4, (8,))) is not None


def _distance(model: torch.nn.Module, start: dict[str, torch.Tensor]) -> float:
    return float(sum(((v - start[k]) ** 2).sum() for k, v in model.state_dict().items()) ** 0.5)


def test_the_proximal_term_keeps_the_update_near_where_the_round_began():
    x, y = _separable()
    distances = {}
    for mu in (0.0, 0.1, 10.0):
        model = build_model("mlp", 5, hidden=(8,), seed=3)
        start = _state(model)
        train_local(model, x, y, TrainSettings(epochs=5, lr=0.05, prox_mu=mu), seed=7)
        distances[mu] = _distance(model, start)
    assert distances[10.0] < 0.5 * distances[0.1] < 0.5 * distances[0.0]


def test_prox_mu_zero_takes_the_plain_steps_bit_for_bit():
    """mu = 0 is the loop without the term: the same SGD steps on the same shuffles."""
    x, y = _separable()
    settings = TrainSettings(epochs=2, batch_size=16, lr=0.1, momentum=0.5, prox_mu=0.0)
    ours = build_model("mlp", 5, hidden=(8,), seed=3)
    loss = train_local(ours, x, y, settings, seed=11)

    plain = build_model("mlp", 5, hidden=(8,), seed=3)
    optimizer, generator = PlainSGD(plain, settings), torch.Generator().manual_seed(11)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    total = 0.0
    for _ in range(settings.epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            optimizer.zero_grad()
            step = nn.functional.binary_cross_entropy_with_logits(plain(xt[rows]), yt[rows])
            step.backward()
            optimizer.step()
            total += float(step.detach()) * len(rows)
    assert loss == total / (settings.epochs * len(y))
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in ours.state_dict().items())


def test_prox_mu_must_not_be_negative():
    with pytest.raises(ValueError, match="prox_mu"):
        TrainSettings(prox_mu=-0.1)


def test_the_loss_meter_scores_given_parameters_and_leaves_the_model_alone():
    x, y = _separable(300)
    model = build_model("mlp", x.shape[1], [8], seed=0)
    before = model_params(model)
    other = build_model("mlp", x.shape[1], [8], seed=1)
    train_local(other, x, y, TrainSettings(epochs=3, lr=0.1), seed=0)
    meter = loss_meter(model, x, y)
    assert meter(model_params(other)) == pytest.approx(evaluate(other, x, y).loss, rel=1e-6)
    assert meter(before) == pytest.approx(evaluate(model, x, y).loss, rel=1e-6)
    assert all(np.array_equal(v, model_params(model)[k]) for k, v in before.items())


def test_the_loss_meter_samples_a_large_set_by_its_seed(monkeypatch):
    import node.training as training

    monkeypatch.setattr(training, "EVAL_ROWS", 50)
    x, y = _separable(300)
    model = build_model("logreg", x.shape[1], [], seed=0)
    params = model_params(model)
    same, again, other = (loss_meter(model, x, y, seed)(params) for seed in (3, 3, 4))
    assert same == again and same != other
