"""DP-SGD for local training: the plan, the accountant and one private round."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import create_accountant
from pydantic import ValidationError

from gossip.identity import create_key_file
from node.config import PrivacySection, load_config
from node.errors import CheckpointError, ConfigError
from node.models import build_model
from node.privacy import (
    DPPlan,
    PrivacyAccountant,
    PrivacyConfigError,
    plan_privacy,
    train_private,
)
from node.training import TrainSettings, evaluate, train_local

DATA = Path(__file__).resolve().parents[3] / "data" / "heart-disease"

pytestmark = pytest.mark.filterwarnings(
    # Opacus' own caveats: GDP may underestimate; RDP's best order is at the edge of its grid.
    "ignore:GDP accounting is experimental",
    "ignore:Optimal order is the largest alpha",
)


def _plan(noise: float, q: float, steps: int, **changes: Any) -> DPPlan:
    """A plan for the accountant alone (its data shape is not consulted there)."""
    base = DPPlan(
        noise_multiplier=noise,
        max_grad_norm=1.0,
        sample_rate=q,
        steps_per_round=steps,
        delta=1e-5,
        accountant="rdp",
        budget=None,
        n_train=100,
        batch_size=10,
        epochs=1,
        rounds=10,
    )
    return dataclasses.replace(base, **changes)


def _library_epsilon(
    accountant: str, steps: list[tuple[float, float, int]], delta: float = 1e-5
) -> float:
    """Opacus' own epsilon after stepping its accountant one step at a time."""
    library = create_accountant(mechanism=accountant)
    for noise, q, n in steps:
        for _ in range(n):
            library.step(noise_multiplier=noise, sample_rate=q)
    with np.errstate(divide="ignore"):  # PRV's log(1 - q) at q = 1, masked out by Opacus
        return float(library.get_epsilon(delta=delta))


def _separable(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = np.random.default_rng(1234).normal(size=d)  # one rule for every split
    return x, (x @ w > 0).astype(np.int64)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten() for v in state.values()])


# -- the accountant ----------------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize(
    ("noise", "q", "steps", "rounds"),
    [(1.0, 0.01, 20, 5), (2.0, 32 / 85, 3, 4), (0.8, 1.0, 10, 3), (4.0, 0.1, 7, 2)],
)
def test_accountant_spends_what_opacus_computes(accountant, noise, q, steps, rounds):
    plan = _plan(noise, q, steps, accountant=accountant)
    ours = PrivacyAccountant.for_plan(plan)
    assert ours.spent() == 0.0
    for _ in range(rounds):
        ours.record_round(plan)
    expected = _library_epsilon(accountant, [(noise, q, steps * rounds)])
    assert ours.spent() == pytest.approx(expected, rel=1e-12)
    assert ours.history == ((noise, q, steps * rounds),)  # one entry: the rounds merged
    restored = PrivacyAccountant.from_state(json.loads(json.dumps(ours.to_state())))
    assert restored.spent() == pytest.approx(expected, rel=1e-12)
    assert restored.after_round(plan) == pytest.approx(ours.after_round(plan), rel=1e-12)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_a_changed_plan_composes_as_opacus_does(accountant):
    first, second = _plan(1.5, 0.05, 20, accountant=accountant), _plan(1.0, 0.1, 10)
    second = dataclasses.replace(second, accountant=accountant)
    ours = PrivacyAccountant(accountant, 1e-5)
    for plan in (first, first, second):
        ours.record_round(plan)
    assert ours.history == ((1.5, 0.05, 40), (1.0, 0.1, 10))
    expected = _library_epsilon(accountant, [(1.5, 0.05, 40), (1.0, 0.1, 10)])
    assert ours.spent() == pytest.approx(expected, rel=1e-12)
    restored = PrivacyAccountant.from_state(json.loads(json.dumps(ours.to_state())))
    assert restored.spent() == pytest.approx(expected, rel=1e-12)


def test_gdp_accounts_like_opacus_and_refuses_a_changed_plan():
    plan = _plan(1.2, 0.05, 30, accountant="gdp")
    ours = PrivacyAccountant.for_plan(plan)
    ours.record_round(plan)
    ours.record_round(plan)
    assert ours.spent() == pytest.approx(_library_epsilon("gdp", [(1.2, 0.05, 60)]), rel=1e-12)
    with pytest.raises(PrivacyConfigError, match="'gdp' cannot compose"):
        ours.record_round(dataclasses.replace(plan, noise_multiplier=2.0))


def test_after_round_takes_no_step_and_record_round_takes_exactly_that():
    plan = _plan(1.1, 0.02, 50)
    ours = PrivacyAccountant.for_plan(plan)
    ours.record_round(plan)
    spent = ours.spent()
    coming = ours.after_round(plan)
    assert ours.spent() == spent
    assert ours.steps == 50
    assert coming > spent
    ours.record_round(plan)
    assert ours.spent() == coming
    assert ours.steps == 100


def test_a_plan_at_another_delta_or_accountant_is_refused():
    ours = PrivacyAccountant("rdp", 1e-5)
    ours.record_round(_plan(1.0, 0.1, 5))
    with pytest.raises(PrivacyConfigError, match=r"delta = 1e-05.*delta = 1e-06"):
        ours.record_round(_plan(1.0, 0.1, 5, delta=1e-6))
    with pytest.raises(PrivacyConfigError, match="'rdp'.*'prv'"):
        ours.after_round(_plan(1.0, 0.1, 5, accountant="prv"))
    assert ours.steps == 5


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"accountant": "rdp", "delta": 1e-5},
        {"accountant": "moments", "delta": 1e-5, "history": []},
        {"accountant": "rdp", "delta": 2.0, "history": []},
        {"accountant": "rdp", "delta": 1e-5, "history": [[1.0, 0.1]]},
        {"accountant": "rdp", "delta": 1e-5, "history": [[1.0, 0.1, 0]]},
        {"accountant": "rdp", "delta": 1e-5, "history": [[-1.0, 0.1, 3]]},
        {"accountant": "rdp", "delta": 1e-5, "history": [[1.0, 1.5, 3]]},
        {"accountant": "rdp", "delta": 1e-5, "history": [[1.0, 0.1, 2.5]]},
        {"accountant": "rdp", "delta": 1e-5, "history": [[1.0, 0.1, True]]},
        {"accountant": "gdp", "delta": 1e-5, "history": [[1.0, 0.1, 2], [2.0, 0.1, 2]]},
    ],
)
def test_a_malformed_state_is_a_checkpoint_error(state):
    with pytest.raises(CheckpointError, match="invalid privacy accountant state"):
        PrivacyAccountant.from_state(state)


@settings(max_examples=15, deadline=None)
@given(
    plans=st.lists(
        st.tuples(
            st.floats(0.7, 8.0),
            st.sampled_from([0.001, 0.01, 0.05, 0.2, 1.0]),
            st.integers(1, 40),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_spent_never_decreases_and_survives_a_restart(plans):
    ours = PrivacyAccountant("rdp", 1e-5)
    spent = [ours.spent()]
    for noise, q, steps in plans:
        plan = _plan(noise, q, steps)
        coming = ours.after_round(plan)
        ours.record_round(plan)
        spent.append(ours.spent())
        assert spent[-1] == coming
        ours = PrivacyAccountant.from_state(json.loads(json.dumps(ours.to_state())))
        assert ours.spent() == spent[-1]
    assert all(a <= b for a, b in zip(spent, spent[1:], strict=False))
    assert spent[-1] > 0


# -- the plan ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accountant", "target", "n", "batch", "epochs", "rounds"),
    [
        ("rdp", 2.0, 1000, 50, 1, 5),
        ("rdp", 3.0, 32, 32, 40, 1),  # q = 1, 40 full-batch steps
        ("prv", 1.0, 1000, 50, 2, 3),
    ],
)
def test_calibrated_noise_spends_the_target_over_the_rounds(
    accountant, target, n, batch, epochs, rounds
):
    section = PrivacySection(target_epsilon=target, accountant=accountant)
    plan = plan_privacy(section, n_train=n, batch_size=batch, epochs=epochs, rounds=rounds)
    assert plan.sample_rate == min(1.0, batch / n)
    assert plan.steps_per_round == epochs * math.ceil(n / batch)
    assert plan.delta == 1 / (10 * n)
    assert plan.budget == target
    total = rounds * plan.steps_per_round
    library = _library_epsilon(
        accountant, [(plan.noise_multiplier, plan.sample_rate, total)], delta=plan.delta
    )
    assert target - 0.01 <= library <= target
    ours = PrivacyAccountant.for_plan(plan)
    for _ in range(rounds):
        assert ours.can_afford(plan)
        ours.record_round(plan)
    assert not ours.can_afford(plan)
    assert ours.spent() == pytest.approx(library, rel=1e-12)


def test_a_restarted_node_resumes_its_budget_exactly():
    section = PrivacySection(target_epsilon=3.0, delta=1e-5)
    shape = {"n_train": 32, "batch_size": 32, "epochs": 4, "rounds": 6}
    plan = plan_privacy(section, **shape)
    uninterrupted = PrivacyAccountant.for_plan(plan)
    resumed = PrivacyAccountant.for_plan(plan)
    for _ in range(2):
        uninterrupted.record_round(plan)
        resumed.record_round(plan)
    saved = json.dumps(resumed.to_state())
    # The restarted process plans again from the same config and data, and loads the state.
    replanned = plan_privacy(section, **shape)
    assert replanned == plan
    resumed = PrivacyAccountant.from_state(json.loads(saved))
    while resumed.can_afford(replanned):
        resumed.record_round(replanned)
        uninterrupted.record_round(plan)
    assert resumed.history == uninterrupted.history == ((plan.noise_multiplier, 1.0, 24),)
    assert resumed.spent() == uninterrupted.spent() <= 3.0


@pytest.mark.parametrize("k", [1, 3])
def test_a_budget_for_k_rounds_affords_exactly_k(k):
    noise, n, batch = 1.3, 400, 40
    q, steps = batch / n, 10
    eps = [_library_epsilon("rdp", [(noise, q, steps * r)], delta=1e-5) for r in (k, k + 1)]
    section = PrivacySection(noise_multiplier=noise, target_epsilon=sum(eps) / 2, delta=1e-5)
    plan = plan_privacy(section, n_train=n, batch_size=batch, epochs=1, rounds=10)
    assert plan.noise_multiplier == noise  # given, not calibrated
    ours = PrivacyAccountant.for_plan(plan)
    rounds = 0
    while ours.can_afford(plan):
        ours.record_round(plan)
        rounds += 1
        assert rounds <= k + 1
    assert rounds == k
    assert ours.spent() == pytest.approx(eps[0], rel=1e-12)


def test_noise_alone_has_no_budget():
    plan = plan_privacy(PrivacySection(noise_multiplier=0.9), 50, 10, 2, 3)
    assert plan.budget is None
    assert plan.noise_multiplier == 0.9
    assert plan.steps_per_round == 10
    ours = PrivacyAccountant.for_plan(plan)
    for _ in range(50):
        ours.record_round(plan)
    assert ours.spent() > 30  # no budget stops it
    assert ours.can_afford(plan)


def test_an_unreachable_target_names_the_settings_and_the_way_out():
    section = PrivacySection(target_epsilon=0.01, delta=1e-5)
    with pytest.raises(PrivacyConfigError) as caught:
        plan_privacy(section, n_train=1000, batch_size=10, epochs=1, rounds=10)
    message = str(caught.value)
    assert "privacy.target_epsilon = 0.01" in message
    assert "delta = 1e-05" in message
    assert "10/1000 = 0.01" in message
    assert "1000 steps" in message
    assert "larger privacy.target_epsilon" in message
    assert isinstance(caught.value, ConfigError)


@pytest.mark.parametrize("delta", [0.02, 0.5])
def test_a_delta_of_one_record_or_more_is_refused(delta):
    section = PrivacySection(noise_multiplier=1.0, delta=delta)
    with pytest.raises(PrivacyConfigError) as caught:
        plan_privacy(section, n_train=50, batch_size=10, epochs=1, rounds=1)
    message = str(caught.value)
    assert f"privacy.delta = {delta}" in message
    assert "1/50" in message
    assert "whole record" in message
    assert "0.002" in message  # the default, 1/(10 n)
    just_below = section.model_copy(update={"delta": 0.019})
    assert plan_privacy(just_below, n_train=50, batch_size=10, epochs=1, rounds=1).delta == 0.019


def test_zero_epochs_with_dp_is_refused():
    with pytest.raises(PrivacyConfigError, match=r"training.epochs = 0.*nothing to privatize"):
        plan_privacy(
            PrivacySection(target_epsilon=1.0), n_train=100, batch_size=10, epochs=0, rounds=5
        )


def test_a_given_noise_that_overspends_the_first_round_is_refused():
    section = PrivacySection(noise_multiplier=0.5, target_epsilon=0.5)
    with pytest.raises(PrivacyConfigError) as caught:
        plan_privacy(section, n_train=100, batch_size=10, epochs=1, rounds=5)
    message = str(caught.value)
    assert "privacy.noise_multiplier = 0.5" in message
    assert "privacy.target_epsilon = 0.5" in message
    assert "first round" in message


def test_dp_must_be_on_to_plan():
    with pytest.raises(ValueError, match="target_epsilon or privacy.noise_multiplier"):
        plan_privacy(PrivacySection(), 100, 10, 1, 1)


# -- the config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"delta": 1e-5}, "privacy.delta = 1e-05 is set"),
        ({"accountant": "prv"}, "privacy.accountant = 'prv' is set"),
        ({"max_grad_norm": 2.0, "delta": 1e-6}, "privacy.delta = 1e-06, privacy.max_grad_norm"),
    ],
)
def test_dp_settings_without_dp_are_refused(given, named):
    with pytest.raises(ValidationError, match="DP-SGD is off") as caught:
        PrivacySection(**given)
    assert named in str(caught.value)
    assert PrivacySection(**given, target_epsilon=1.0).dp
    assert PrivacySection(**given, noise_multiplier=1.0).dp


def test_the_config_file_reports_a_dp_setting_without_dp(tmp_path):
    create_key_file(tmp_path / "identity.key")
    path = tmp_path / "node.toml"
    path.write_text(
        f'[node]\nname = "a"\nkey_file = "identity.key"\n'
        f'[data]\npath = "{DATA / "processed.cleveland.data"}"\nschema = "{DATA / "schema.toml"}"\n'
        "[privacy]\ndelta = 1e-5\n"
    )
    with pytest.raises(ConfigError, match=r"privacy: .*privacy.delta = 1e-05 is set"):
        load_config(path)
    cfg = load_config(path, ["privacy.target_epsilon=3.0"])
    assert cfg.privacy.dp and cfg.privacy.delta == 1e-5


# -- one private round -------------------------------------------------------------------------


def _settings_for(plan: DPPlan, **changes: Any) -> TrainSettings:
    return TrainSettings(epochs=plan.epochs, batch_size=plan.batch_size, **changes)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_private_round_trains_in_place_and_leaves_a_plain_model(optimizer):
    x, y = _separable(120, 6, seed=0)
    plan = plan_privacy(PrivacySection(noise_multiplier=1.0), 120, 16, 2, 1)
    settings_ = _settings_for(
        plan, lr=0.1, momentum=0.5 if optimizer == "sgd" else 0.0, optimizer=optimizer
    )
    model = build_model("mlp", 6, hidden=(8,), seed=0, dropout=0.3).eval()
    params = {name: p for name, p in model.named_parameters()}
    before = _state(model)
    rng = torch.random.get_rng_state()
    loss = train_private(model, x, y, settings_, plan, seed=5)
    assert math.isfinite(loss) and loss > 0
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert not model.training  # mode restored
    after = _state(model)
    assert list(after) == list(before)
    assert all(after[k].shape == before[k].shape for k in before)
    assert all(not torch.equal(after[k], before[k]) for k in before)
    # The same parameter objects hold the trained values; nothing of Opacus stays behind.
    assert {name: p for name, p in model.named_parameters()} == params
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks
        assert not module._forward_pre_hooks and not module._backward_pre_hooks
        assert not {"activations", "autograd_grad_sample_hooks"} & set(vars(module))
    for p in model.parameters():
        assert p.grad is None
        assert not [a for a in ("grad_sample", "summed_grad", "_forward_counter") if hasattr(p, a)]
    # Plain evaluation and plain training behave exactly as on a model that never saw Opacus.
    twin = build_model("mlp", 6, hidden=(8,), seed=0, dropout=0.3)
    twin.load_state_dict(after)
    assert evaluate(model, x, y) == evaluate(twin, x, y)
    plain = TrainSettings(epochs=1, batch_size=16, lr=0.1)
    assert train_local(model, x, y, plain, seed=3) == train_local(twin, x, y, plain, seed=3)
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in model.state_dict().items())
    # And a second private round works on it.
    train_private(model, x, y, settings_, plan, seed=6)


def test_each_record_is_clipped_before_the_sum():
    # Two records, full batch (q = 1), almost no noise: one SGD step with lr = 1 moves the
    # parameters by -(clip(g_a) + g_b) / 2, where a's gradient is huge and b's is small.
    # Without clipping the step is ~100x larger; clipping the sum instead of each record
    # would drop most of b's part.
    x = np.array([[60.0, -80.0, 40.0], [0.1, 0.2, -0.1]], dtype=np.float32)
    y = np.array([1, 0])
    clip = 1.0
    section = PrivacySection(noise_multiplier=1e-7, max_grad_norm=clip)
    plan = plan_privacy(section, n_train=2, batch_size=2, epochs=1, rounds=1)
    assert plan.sample_rate == 1.0 and plan.steps_per_round == 1
    model = build_model("logreg", 3, seed=0)
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor([[-1.0, 1.0, -1.0]]))
        model.linear.bias.fill_(0.0)
    start = _flat(_state(model))
    grads = []
    for i in range(2):
        model.zero_grad()
        logit = model(torch.from_numpy(x[i : i + 1]))
        torch.nn.functional.binary_cross_entropy_with_logits(
            logit, torch.tensor([float(y[i])])
        ).backward()
        grads.append(torch.cat([model.linear.weight.grad.flatten(), model.linear.bias.grad]))
    model.zero_grad(set_to_none=True)
    g_a, g_b = grads
    assert g_a.norm() > 100 * clip and g_b.norm() < clip
    train_private(model, x, y, TrainSettings(epochs=1, batch_size=2, lr=1.0), plan, seed=0)
    step = _flat(_state(model)) - start
    expected = -(g_a * clip / g_a.norm() + g_b) / 2
    assert torch.allclose(step, expected, atol=1e-5)
    assert step.norm() <= clip + 1e-5  # lr * C: no record moves it further


def test_the_noise_has_the_planned_scale_and_comes_from_the_seed():
    # Full batch (q = 1), no dropout, one step: the clipped mean gradient is the same for
    # every seed, so two seeds differ only by their noise, lr * sigma * C / n per coordinate
    # each.
    x, y = _separable(64, 30, seed=2)
    sigma, clip, lr = 2.0, 0.7, 0.1
    section = PrivacySection(noise_multiplier=sigma, max_grad_norm=clip)
    plan = plan_privacy(section, n_train=64, batch_size=64, epochs=1, rounds=1)
    settings_ = TrainSettings(epochs=1, batch_size=64, lr=lr)
    runs = {}
    for seed in (1, 1, 2):
        model = build_model("mlp", 30, hidden=(32,), seed=0)
        loss = train_private(model, x, y, settings_, plan, seed=seed)
        runs.setdefault(seed, []).append((loss, _flat(_state(model))))
    (loss_1, params_1), (loss_1b, params_1b) = runs[1]
    assert loss_1 == loss_1b and torch.equal(params_1, params_1b)  # reproducible
    diff = runs[2][0][1] - params_1
    expected_std = math.sqrt(2) * lr * sigma * clip / 64
    assert diff.numel() > 1000
    assert 0.9 < float(diff.std()) / expected_std < 1.1


def test_without_a_seed_the_noise_is_not_reproducible():
    x, y = _separable(20, 3, seed=0)
    plan = plan_privacy(PrivacySection(noise_multiplier=1.0), 20, 20, 1, 1)
    results = []
    for _ in range(2):
        model = build_model("logreg", 3, seed=0)
        train_private(model, x, y, TrainSettings(epochs=1, batch_size=20), plan, seed=None)
        results.append(_flat(_state(model)))
    assert not torch.equal(*results)


def test_an_empty_poisson_sample_still_takes_a_noise_step():
    x, y = _separable(50, 4, seed=0)
    plan = dataclasses.replace(
        plan_privacy(PrivacySection(noise_multiplier=1.0), 50, 5, 1, 1),
        sample_rate=1e-12,  # every sample is empty
        steps_per_round=4,
    )
    model = build_model("logreg", 4, seed=0)
    start = _flat(_state(model))
    loss = train_private(model, x, y, TrainSettings(epochs=1, batch_size=5, lr=1.0), plan, 0)
    assert loss == pytest.approx(evaluate(model, x, y).loss)  # none seen: the loss now
    moved = _flat(_state(model)) - start
    # Four steps of pure noise, each lr * sigma * C / (q n) = 1/5 per coordinate.
    assert float(moved.abs().max()) > 0
    assert 0.1 < float(moved.norm()) / (0.2 * math.sqrt(4 * moved.numel())) < 3


def test_settings_that_are_not_the_plans_are_refused():
    x, y = _separable(40, 3, seed=0)
    plan = plan_privacy(PrivacySection(noise_multiplier=1.0), 40, 8, 1, 1)
    model = build_model("logreg", 3)
    for settings_, rows in [
        (TrainSettings(epochs=1, batch_size=16), 40),
        (TrainSettings(epochs=2, batch_size=8), 40),
        (TrainSettings(epochs=1, batch_size=8), 39),
    ]:
        with pytest.raises(ValueError, match="the plan is for n=40 rows, batch_size=8"):
            train_private(model, x[:rows], y[:rows], settings_, plan, 0)


@pytest.mark.parametrize("name", ["logreg", "mlp"])
def test_a_privately_trained_model_still_learns(name):
    x, y = _separable(600, 8, seed=0)
    test_x, test_y = _separable(1000, 8, seed=1)
    plan = plan_privacy(PrivacySection(target_epsilon=1.0), 600, 60, 1, 5)
    model = build_model(name, 8, hidden=(16,), seed=0)
    assert evaluate(model, test_x, test_y).accuracy < 0.6
    ours = PrivacyAccountant.for_plan(plan)
    rounds = 0
    while ours.can_afford(plan):
        train_private(model, x, y, _settings_for(plan, lr=0.5), plan, seed=rounds)
        ours.record_round(plan)
        rounds += 1
    assert rounds == 5
    assert ours.spent() <= 1.0
    assert evaluate(model, test_x, test_y).accuracy > 0.85
