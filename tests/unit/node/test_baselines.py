"""Local-only, pooled and FedAvg baselines, on the four heart-disease hospitals and on
synthetic sites."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from node.baselines import Recipe, fedavg, local_only, pooled
from node.dataset import CleaningReport, CleanTable, load_schema, load_table, split_validation
from node.models import build_model
from node.scaling import Scaler, local_stats
from node.training import EvalResult, TrainSettings, evaluate, train_local, training_seed

DATA = Path(__file__).resolve().parents[3] / "data" / "heart-disease"
SITES = ["cleveland", "hungarian", "switzerland", "va"]
RECIPE = Recipe(
    model="logreg",
    hidden=(),
    settings=TrainSettings(epochs=1, batch_size=32, lr=0.05),
    rounds=10,
    val_fraction=0.25,
    split_seed=0,
    model_seed=0,
)


@pytest.fixture(scope="module")
def tables() -> dict[str, CleanTable]:
    schema = load_schema(DATA / "schema.toml")
    return {site: load_table(DATA / f"processed.{site}.data", schema) for site in SITES}


@pytest.fixture(scope="module")
def results(tables) -> dict[str, dict[str, EvalResult]]:
    return {"local_only": local_only(tables, RECIPE)[0], "pooled": pooled(tables, RECIPE)[0]}


@pytest.mark.parametrize("baseline", ["local_only", "pooled"])
def test_one_result_per_site_on_the_nodes_validation_split(tables, results, baseline):
    assert list(results[baseline]) == SITES
    for site, result in results[baseline].items():
        split = split_validation(tables[site], RECIPE.val_fraction, RECIPE.split_seed)
        assert result.n == len(split.val_y)
        assert 0.0 <= result.accuracy <= 1.0
        assert np.isfinite(result.loss)


def test_pooled_beats_chance(results):
    # Every site has both classes in validation, so AUC is defined; 0.5 is chance.
    aucs = [r.auc for r in results["pooled"].values() if r.auc is not None]
    assert len(aucs) == len(SITES)
    assert np.mean(aucs) > 0.7
    pooled_results = results["pooled"].values()
    total = sum(r.n for r in pooled_results)
    assert sum(r.accuracy * r.n for r in pooled_results) / total > 0.7


def test_baselines_are_reproducible(tables, results):
    assert pooled(tables, RECIPE)[0] == results["pooled"]
    two = {site: tables[site] for site in ("hungarian", "switzerland")}
    again, _ = local_only(two, RECIPE)
    assert again == {site: results["local_only"][site] for site in two}


def test_sites_must_share_columns(tables):
    other = replace(tables["va"], columns=[*tables["va"].columns[:-1], "renamed"])
    with pytest.raises(ValueError, match="different feature columns"):
        pooled({"cleveland": tables["cleveland"], "va": other}, RECIPE)
    with pytest.raises(ValueError, match="no sites"):
        local_only({}, RECIPE)


# --------------------------------------------------------------------------- FedAvg


def synthetic_site(n: int, shift: float, seed: int) -> CleanTable:
    """Rows from one shared logistic model; sites differ in size and feature means."""
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, size=(n, 4)) * [1.0, 3.0, 0.5, 10.0] + [0.0, 50.0, 0.0, 100.0]
    z = (x - [0.0, 50.0, 0.0, 100.0]) / [1.0, 3.0, 0.5, 10.0]
    p = 1 / (1 + np.exp(-(1.5 * z[:, 0] - z[:, 1] + 0.5 * z[:, 2])))
    y = (rng.random(n) < p).astype(np.int64)
    report = CleaningReport(file=f"site{seed}.csv", rows_in=n, dropped={}, examples={}, rows_out=n)
    return CleanTable(features=x, target=y, columns=["a", "b", "c", "d"], report=report)


@pytest.fixture(scope="module")
def synthetic() -> dict[str, CleanTable]:
    sizes_shifts = [(400, -0.5), (200, 0.0), (100, 0.8)]
    return {
        f"site{i}": synthetic_site(n, shift, seed=i) for i, (n, shift) in enumerate(sizes_shifts)
    }


def mean_accuracy(results: dict[str, EvalResult]) -> float:
    return float(np.mean([r.accuracy for r in results.values()]))


def test_fedavg_gets_within_a_few_points_of_pooled(synthetic):
    recipe = replace(RECIPE, rounds=20)
    final, history = fedavg(synthetic, recipe)
    assert list(final) == list(synthetic)
    assert abs(mean_accuracy(final) - mean_accuracy(pooled(synthetic, recipe)[0])) < 0.04
    assert mean_accuracy(final) > 0.7
    assert history[-1]["mean_accuracy"] == pytest.approx(mean_accuracy(final))


def test_fedavg_history_has_one_entry_per_round(synthetic):
    _, history = fedavg(synthetic, replace(RECIPE, rounds=3))
    assert [h["round"] for h in history] == [1, 2, 3]
    for h in history:
        assert set(h) == {"round", "mean_accuracy", "mean_auc", "seconds"}
        assert 0.0 <= h["mean_accuracy"] <= 1.0 and 0.0 <= h["mean_auc"] <= 1.0
        assert h["seconds"] >= 0.0


def test_fedavg_scores_its_global_model_on_the_common_test_set_each_round(synthetic):
    test = synthetic_site(300, 0.0, seed=9)
    flipped = replace(test, target=1 - test.target)
    recipe = replace(RECIPE, rounds=4)
    _, history = fedavg(synthetic, recipe, test)
    _, on_flipped = fedavg(synthetic, recipe, flipped)
    assert [h["round"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["test_accuracy"] > 0.55  # better than chance: the sites' model
    for h, f in zip(history, on_flipped, strict=True):
        # The same global model each round, scored against the test labels given.
        assert f["test_accuracy"] == pytest.approx(1 - h["test_accuracy"])
        assert f["test_auc"] == pytest.approx(1 - h["test_auc"])
        assert h["mean_accuracy"] == f["mean_accuracy"]


def test_fedavg_of_one_site_is_local_training(synthetic):
    one = {"site1": synthetic["site1"]}
    recipe = replace(RECIPE, rounds=4, settings=replace(RECIPE.settings, epochs=3))
    final, _ = fedavg(one, recipe)
    assert final == local_only(one, recipe)[0]


def test_fedavg_averages_weighted_by_training_rows(synthetic):
    # One round by hand: two sites of different sizes, pooled scaler, row-weighted average.
    sites = {k: synthetic[k] for k in ("site0", "site2")}
    recipe = replace(RECIPE, rounds=1)
    splits = {
        k: split_validation(t, recipe.val_fraction, recipe.split_seed) for k, t in sites.items()
    }
    scaler = Scaler.from_stats(local_stats(np.concatenate([s.train_x for s in splits.values()])))
    start = build_model("logreg", 4, (), seed=recipe.model_seed)
    states, sizes = [], []
    for s in splits.values():
        net = copy.deepcopy(start)
        train_local(
            net, scaler.transform(s.train_x), s.train_y, recipe.settings, seed=training_seed(0, 0)
        )
        states.append(net.state_dict())
        sizes.append(len(s.train_y))
    assert sizes[0] > 2 * sizes[1]  # so a plain mean would differ
    start.load_state_dict(
        {
            k: (
                sum(n * st[k].double() for n, st in zip(sizes, states, strict=True)) / sum(sizes)
            ).float()
            for k in states[0]
        }
    )
    final, _ = fedavg(sites, recipe)
    for site, s in splits.items():
        expected = evaluate(start, scaler.transform(s.val_x), s.val_y)
        assert final[site].loss == pytest.approx(expected.loss, rel=1e-5)
        assert final[site].accuracy == expected.accuracy


def test_fedavg_is_deterministic(synthetic):
    recipe = replace(RECIPE, rounds=3)
    (a, ha), (b, hb) = fedavg(synthetic, recipe), fedavg(synthetic, recipe)
    assert a == b
    drop = [{k: v for k, v in h.items() if k != "seconds"} for h in ha + hb]
    assert drop[:3] == drop[3:]


def test_the_sites_statistics_add_up_to_the_pooled_scaler():
    from node.baselines import pooled_scaler, site_stats

    rng = np.random.default_rng(0)
    parts = [rng.normal(i, 1 + i, size=(20 + 7 * i, 3)) for i in range(3)]
    pooled = Scaler.from_stats(local_stats(np.concatenate(parts)))
    summed = pooled_scaler([site_stats(p) for p in parts])
    x = rng.normal(size=(5, 3))
    np.testing.assert_allclose(summed.transform(x), pooled.transform(x), rtol=1e-12)


def test_a_recipe_survives_the_trip_to_another_process():
    import dataclasses
    import json

    recipe = Recipe("mlp", (8, 4), TrainSettings(epochs=2), 3, 0.25, 1, 2)
    assert Recipe.from_dict(json.loads(json.dumps(dataclasses.asdict(recipe)))) == recipe


# --------------------------------------------------------------------------- common test set


def test_centralized_on_the_common_test_set_is_the_model_scored_by_sklearn(tables):
    """Three hospitals train, the fourth is the common test set. The centralized model is
    trained again here by hand, round by round (pooled training rows, their scaler, the nodes'
    seeds), and its predictions on the test rows scored by scikit-learn."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    sites = {s: tables[s] for s in ("cleveland", "hungarian", "switzerland")}
    test = tables["va"]
    recipe = replace(RECIPE, rounds=4)
    _, curve = pooled(sites, recipe, test)

    splits = [split_validation(t, recipe.val_fraction, recipe.split_seed) for t in sites.values()]
    train_x = np.concatenate([s.train_x for s in splits])
    train_y = np.concatenate([s.train_y for s in splits])
    # Standardized by the pooled training rows; a missing value is the mean, a constant column
    # (std 0) is left unscaled, as the scaler does.
    mean, std = np.nanmean(train_x, axis=0), np.nanstd(train_x, axis=0)
    std[std < 1e-8] = 1.0
    x, rows = (np.nan_to_num((a - mean) / std) for a in (train_x, test.features))
    net = build_model("logreg", train_x.shape[1], (), seed=recipe.model_seed)
    assert len(curve) == recipe.rounds
    for r, on_test in enumerate(curve):
        train_local(net, x, train_y, recipe.settings, seed=training_seed(recipe.model_seed, r))
        with torch.no_grad():
            logits = net(torch.from_numpy(rows.astype(np.float32))).numpy()
        assert on_test.n == len(test.target) == 200 - test.report.dropped.get("duplicate", 0)
        assert on_test.accuracy == pytest.approx(accuracy_score(test.target, logits > 0))
        assert on_test.auc == pytest.approx(roc_auc_score(test.target, logits))
    assert 0.5 < curve[-1].accuracy < 1.0  # a model, not a constant


def test_local_only_and_fedavg_score_their_models_on_the_common_test_set_each_round(tables):
    sites = {s: tables[s] for s in ("cleveland", "hungarian")}
    test = tables["va"]
    recipe = replace(RECIPE, rounds=3)
    scores, curves = local_only(sites, recipe, test)
    assert list(curves) == list(sites)
    for site, curve in curves.items():
        assert len(curve) == 3 and all(e.n == len(test.target) for e in curve)
        assert scores[site].n != len(test.target)  # the final model: on the validation split
    _, history = fedavg(sites, recipe, test)
    assert all({"test_accuracy", "test_auc", "test_loss"} <= set(h) for h in history)
    assert local_only(sites, recipe)[1] == {s: [] for s in sites}  # no test set: no curve
    assert pooled(sites, recipe)[1] == []


def test_with_no_validation_split_every_baseline_scores_on_the_common_test_set(tables):
    sites = {s: tables[s] for s in ("cleveland", "hungarian")}
    test = tables["va"]
    recipe = replace(RECIPE, rounds=2, val_fraction=0.0)
    local, curves = local_only(sites, recipe, test)
    central, curve = pooled(sites, recipe, test)
    final, history = fedavg(sites, recipe, test)
    for site in sites:
        assert local[site] == curves[site][-1]  # the final model, on the test set
        assert central[site] == curve[-1]
        assert final[site].n == len(test.target)
        assert final[site].accuracy == pytest.approx(history[-1]["test_accuracy"])
    for baseline in (local_only, pooled, fedavg):
        with pytest.raises(ValueError, match="no validation rows held out"):
            baseline(sites, recipe)


def test_the_consensus_is_the_row_weighted_average_of_the_final_models_on_the_test_set(tables):
    from node.baselines import consensus_on_test
    from node.params import model_params

    test = tables["va"]
    a = build_model("logreg", test.features.shape[1], (), seed=1)
    b = build_model("logreg", test.features.shape[1], (), seed=2)
    scaler = Scaler.from_stats(local_stats(tables["cleveland"].features))
    got = consensus_on_test(
        [(30, model_params(a)), (10, model_params(b))], scaler.to_dict(), RECIPE, test
    )
    with torch.no_grad():
        for mine, theirs in zip(a.parameters(), b.parameters(), strict=True):
            mine.copy_(0.75 * mine + 0.25 * theirs)
    assert got == evaluate(a, scaler.transform(test.features), test.target)
