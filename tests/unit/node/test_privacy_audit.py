"""The membership-inference attacks can tell a model that memorized its training records (so
a low AUC in the audit means something), and DP-SGD takes that away."""

from pathlib import Path

import numpy as np

from node.config import PrivacySection
from node.models import build_model
from node.params import model_params
from node.privacy import plan_privacy, train_private
from node.privacy_audit import membership_attack
from node.training import TrainSettings, roc_auc, train_local

RNG = np.random.default_rng(0)
X = RNG.normal(size=(80, 10)).astype(np.float32)
Y = RNG.integers(0, 2, 80)  # random labels: only memorizing fits them
MEMBERS, NON_MEMBERS = (X[:40], Y[:40]), (X[40:], Y[40:])
SETTINGS = TrainSettings(epochs=300, batch_size=40, lr=0.5)


def test_a_model_that_memorized_its_records_is_caught():
    model = build_model("mlp", 10, [64], seed=0)
    train_local(model, *MEMBERS, SETTINGS, seed=0)
    result = membership_attack("mlp", [64], model_params(model), MEMBERS, NON_MEMBERS)
    assert result.auc is not None and result.auc > 0.75
    assert (result.members, result.non_members) == (40, 40)


def test_the_calibrated_attack_uses_the_reference_model():
    target, reference = build_model("mlp", 10, [64], seed=0), build_model("mlp", 10, [64], seed=0)
    train_local(target, *MEMBERS, SETTINGS, seed=0)
    train_local(reference, *NON_MEMBERS, SETTINGS, seed=1)  # trained on the other half
    result = membership_attack(
        "mlp", [64], model_params(target), MEMBERS, NON_MEMBERS, model_params(reference)
    )
    assert result.calibrated_auc is not None and result.calibrated_auc > max(0.9, result.auc)


def test_dp_sgd_leaves_the_attack_near_a_coin_toss():
    model = build_model("mlp", 10, [64], seed=0)
    plan = plan_privacy(PrivacySection(target_epsilon=1.0, delta=1e-3), 40, 40, 300, 1)
    train_private(model, *MEMBERS, SETTINGS, plan, seed=0)
    result = membership_attack("mlp", [64], model_params(model), MEMBERS, NON_MEMBERS)
    assert result.auc is not None and abs(result.auc - 0.5) < 0.15


def test_the_attack_score_is_minus_the_loss():
    """A sanity anchor: the AUC equals roc_auc of -loss computed by hand."""
    model = build_model("logreg", 10, (), seed=0)
    train_local(model, *MEMBERS, TrainSettings(epochs=5, batch_size=8), seed=0)
    params = model_params(model)
    w, b = params["linear.weight"].ravel(), params["linear.bias"][0]

    def losses(x, y):
        z = x @ w + b
        return np.logaddexp(0, z) - y * z

    labels = np.r_[np.ones(40), np.zeros(40)].astype(int)
    expected = roc_auc(labels, -np.r_[losses(*MEMBERS), losses(*NON_MEMBERS)])
    result = membership_attack("logreg", [], params, MEMBERS, NON_MEMBERS)
    assert result.auc is not None and abs(result.auc - expected) < 1e-6


def test_a_node_that_held_no_records_out_is_not_attacked_and_the_audit_says_why(tmp_path):
    from node.checkpoint import save_params
    from node.config import load_config
    from node.init import init_node
    from node.privacy_audit import NO_HELD_OUT, audit_node

    data = Path(__file__).resolve().parents[3] / "data" / "heart-disease"
    path, _ = init_node(
        tmp_path, "va", str(data / "processed.va.data"), str(data / "schema.toml"),
        "/ip4/127.0.0.1/tcp/0", [],
    )  # fmt: skip
    test = f'data.test_path="{data / "processed.cleveland.data"}"'
    cfg = load_config(path, ["data.validation_fraction=0", test])
    (cfg.node.output_dir / "models").mkdir(parents=True)
    save_params(cfg.node.output_dir / "models" / "round-3.safetensors", model_params(
        build_model("logreg", 20, [])
    ))  # fmt: skip
    found = audit_node(cfg, None)
    assert found == {"round": 3, "auc": None, "calibrated_auc": None, "skipped": NO_HELD_OUT}
    assert "validation_fraction = 0" in NO_HELD_OUT
