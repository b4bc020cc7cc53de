"""Local-only and pooled baselines on the four heart-disease hospitals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from node.baselines import Recipe, local_only, pooled
from node.dataset import CleanTable, load_schema, load_table, split_validation
from node.training import EvalResult, TrainSettings

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
    return {"local_only": local_only(tables, RECIPE), "pooled": pooled(tables, RECIPE)}


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
    assert pooled(tables, RECIPE) == results["pooled"]
    two = {site: tables[site] for site in ("hungarian", "switzerland")}
    again = local_only(two, RECIPE)
    assert again == {site: results["local_only"][site] for site in two}


def test_sites_must_share_columns(tables):
    other = replace(tables["va"], columns=[*tables["va"].columns[:-1], "renamed"])
    with pytest.raises(ValueError, match="different feature columns"):
        pooled({"cleveland": tables["cleveland"], "va": other}, RECIPE)
    with pytest.raises(ValueError, match="no sites"):
        local_only({}, RECIPE)
