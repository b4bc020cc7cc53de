"""Personalization: which parameters stay at the node, and a round that keeps them there."""

import numpy as np
import pytest
import trio

from gossip.identity import create_key_file, peer_id_of
from node.checkpoint import load_checkpoint
from node.config import PERSONALIZE_MODES, load_config
from node.errors import ConfigError
from node.init import init_node
from node.models import build_model
from node.params import model_params
from node.personalize import joined, local_names, local_part, shared_part
from node.runner import NodeRunner
from node.scaling import Scaler, local_stats
from tests.unit.node.test_round import DATA, FakeExchange, shifted


@pytest.mark.parametrize(
    ("model", "hidden", "mode", "names"),
    [
        ("mlp", [8], "none", ()),
        ("mlp", [8], "bias", ("layers.3.bias",)),
        ("mlp", [8, 4], "head", ("layers.6.weight", "layers.6.bias")),
        ("logreg", [], "bias", ("linear.bias",)),
    ],
)
def test_the_local_names_are_the_output_layer_s(model, hidden, mode, names):
    assert local_names(build_model(model, 5, hidden), mode) == names


def test_a_model_split_and_joined_again_is_the_model_in_its_order():
    params = model_params(build_model("mlp", 5, [8]))
    local = local_names(build_model("mlp", 5, [8]), "bias")
    shared = shared_part(params, local)
    assert "layers.3.bias" not in shared and "layers.3.weight" in shared
    whole = joined(shared, local_part(params, local), params)
    assert list(whole) == list(params)
    assert all(whole[k] is params[k] for k in params)
    assert shared_part(params, ()) is params and joined(params, {}, params) is params


def _cleveland(folder, neighbours):
    """A node config for the Cleveland site's records."""
    path, _ = init_node(
        folder,
        "cleveland",
        str(DATA / "processed.cleveland.data"),
        str(DATA / "schema.toml"),
        "/ip4/127.0.0.1/tcp/0",
        neighbours,
    )
    return path


def _runner(tmp_path, *overrides):
    peers = [peer_id_of(create_key_file(tmp_path / f"nb{i}.key")) for i in range(2)]
    neighbours = [f"/ip4/127.0.0.1/tcp/{4001 + i}/p2p/{p}" for i, p in enumerate(peers)]
    cfg = load_config(_cleveland(tmp_path / "node", neighbours), ["node.fsync=false", *overrides])
    runner = NodeRunner(cfg)
    runner.out.mkdir(parents=True)
    runner.membership = None
    split = runner._load_data()
    runner.samples = len(split.train_y)
    return runner, split


def test_a_personalized_round_publishes_and_merges_only_the_shared_part(tmp_path):
    runner, split = _runner(tmp_path, "swarm.personalize=bias", "contribution.enabled=true")
    run = runner._start(split, Scaler.from_stats(local_stats(split.train_x)), None)
    assert run.local == ("layers.3.bias",)
    assert [s.name for s in run.specs] == ["layers.0.weight", "layers.0.bias", "layers.3.weight"]
    peers = sorted(info.peer_id.to_base58() for info in runner.neighbours)
    # The neighbours serve the shared part only (their own bias is theirs).
    served = {p: shifted(shared_part(run.initial, run.local), 1.0) for p in peers}
    runner.exchange = FakeExchange(served)

    record = trio.run(runner._round, run, 1)

    published = runner.exchange.store.published[0].tensors
    assert set(published) == {"layers.0.weight", "layers.0.bias", "layers.3.weight"}
    bias = run.kept["layers.3.bias"]
    assert not np.array_equal(bias, run.initial["layers.3.bias"])  # trained here
    np.testing.assert_array_equal(run.current["layers.3.bias"], bias)  # and not merged
    np.testing.assert_array_equal(model_params(run.model)["layers.3.bias"], bias)
    # The shared part is the merge: every neighbour's shifted copy pulled it off the own one.
    assert not np.allclose(run.current["layers.3.weight"], published["layers.3.weight"])
    assert record["contribution"]["scores"].keys() == set(peers)
    # The checkpoint keeps the local part: a restarted node resumes with its own bias.
    saved = load_checkpoint(runner.out / "checkpoint")
    assert saved is not None
    np.testing.assert_array_equal(saved.params["layers.3.bias"], bias)
    resumed = runner._start(split, Scaler.from_stats(local_stats(split.train_x)), saved)
    np.testing.assert_array_equal(model_params(resumed.model)["layers.3.bias"], bias)


def test_without_personalization_the_whole_model_is_published(tmp_path):
    runner, split = _runner(tmp_path)
    run = runner._start(split, Scaler.from_stats(local_stats(split.train_x)), None)
    peers = sorted(info.peer_id.to_base58() for info in runner.neighbours)
    runner.exchange = FakeExchange({p: shifted(run.initial, 1.0) for p in peers})
    trio.run(runner._round, run, 1)
    assert set(runner.exchange.store.published[0].tensors) == set(run.initial)
    assert run.local == () and run.kept == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.name=logreg", "swarm.personalize=head"], "output layer is the whole model"),
        (["swarm.personalize=bias", "evaluation.cross_site=true"], "evaluation.cross_site"),
        (["swarm.personalize=bias", "adversary.mode=ipm"], "adversary.mode = 'ipm'"),
        (["training.prox_mu=0.1", "privacy.target_epsilon=8.0"], "training.prox_mu = 0.1"),
        (["training.prox_mu=-1"], "training.prox_mu"),
        (["swarm.personalize=all"], "swarm.personalize"),
    ],
)
def test_combinations_that_cannot_run_are_refused_naming_the_keys(tmp_path, overrides, message):
    path = _cleveland(tmp_path, [])
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)


def test_prox_mu_reaches_the_training_settings(tmp_path):
    path = _cleveland(tmp_path, [])
    assert load_config(path, ["training.prox_mu=0.5"]).training.settings().prox_mu == 0.5
    assert load_config(path).training.settings().prox_mu == 0.0


def test_every_mode_the_config_takes_is_one_the_node_knows():
    model = build_model("mlp", 5, [8])
    assert PERSONALIZE_MODES == ("none", "bias", "head")
    assert all(isinstance(local_names(model, mode), tuple) for mode in PERSONALIZE_MODES)
    with pytest.raises(ValueError, match="personalize"):
        local_names(model, "all")
