"""Baselines for the comparison table: each hospital alone, all data pooled centrally, and
server-based FedAvg.

All use `split_validation` with the same fraction and seed as the nodes, so every site's
validation rows are exactly the rows its node validates on, and the same training schedule as
the node: ``rounds`` calls of `train_local` (each ``settings.epochs`` epochs, a fresh
optimizer, seed ``training_seed(model_seed, round)``).

Given a common test set, each also scores its model(s) on it after every round; with no
validation split (``val_fraction = 0``) the final models are scored on it instead, as the nodes
then are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch import nn

from node.dataset import CleanTable, Split, split_validation
from node.merge import weighted_sum
from node.models import build_model
from node.params import Params, load_params, model_params
from node.scaling import Scaler, local_stats
from node.training import EvalResult, TrainSettings, evaluate, train_local, training_seed


@dataclass(frozen=True)
class Recipe:
    """What every baseline shares with the nodes: model, training schedule, split and seeds."""

    model: str
    hidden: Sequence[int]
    settings: TrainSettings
    rounds: int
    val_fraction: float
    split_seed: int
    model_seed: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recipe:
        """The inverse of `dataclasses.asdict` (how a recipe travels to other processes)."""
        settings = TrainSettings(**d["settings"])
        return cls(**{**d, "hidden": tuple(d["hidden"]), "settings": settings})


def _splits(tables: Mapping[str, CleanTable], recipe: Recipe) -> dict[str, Split]:
    if not tables:
        raise ValueError("no sites given")
    columns = {tuple(t.columns) for t in tables.values()}
    if len(columns) != 1:
        raise ValueError(f"sites have different feature columns: {sorted(columns)}")
    return {
        site: split_validation(t, recipe.val_fraction, recipe.split_seed)
        for site, t in tables.items()
    }


def scored_rows(split: Split, test: CleanTable | None) -> tuple[np.ndarray, np.ndarray]:
    """The (unscaled) rows a site's final model is scored on: its validation split, or the
    common test set when none was held out (``val_fraction = 0``)."""
    if len(split.val_y):
        return split.val_x, split.val_y
    if test is None:
        raise ValueError("no validation rows held out (val_fraction = 0) and no common test set")
    return test.features, test.target


# What a baseline's model scores on the common test set after each round, in order.
Curve = list[EvalResult]


def _fit(
    x: np.ndarray, y: np.ndarray, recipe: Recipe, after_round: Callable[[nn.Module], None]
) -> nn.Module:
    net = build_model(recipe.model, x.shape[1], recipe.hidden, seed=recipe.model_seed)
    # FedProx pulls an update towards the model a round received; a model trained alone (one
    # site, or all data pooled) receives none, so it trains without the term.
    settings = replace(recipe.settings, prox_mu=0.0)
    for r in range(recipe.rounds):
        train_local(net, x, y, settings, seed=training_seed(recipe.model_seed, r))
        after_round(net)
    return net


def _on_test(test: CleanTable | None, scaler: Scaler, curve: Curve) -> Callable[[nn.Module], None]:
    """What `_fit` calls after each round: the model on the common test set (scaled as the
    model's training rows were) appended to `curve`; nothing without a test set."""
    if test is None:
        return lambda _net: None
    x = scaler.transform(test.features)
    return lambda net: curve.append(evaluate(net, x, test.target))


def _local_models(
    splits: Mapping[str, Split], recipe: Recipe, test: CleanTable | None = None
) -> Iterator[tuple[str, Scaler, nn.Module, Curve]]:
    """Each site's model trained on its own records alone, with its own scaler, and its curve
    on the common test set."""
    for site, split in splits.items():
        scaler = Scaler.from_stats(local_stats(split.train_x))
        curve: Curve = []
        x = scaler.transform(split.train_x)
        yield site, scaler, _fit(x, split.train_y, recipe, _on_test(test, scaler, curve)), curve


def local_only(
    tables: Mapping[str, CleanTable], recipe: Recipe, test: CleanTable | None = None
) -> tuple[dict[str, EvalResult], dict[str, Curve]]:
    """Each site alone: its own scaler, its own training split, its own validation split.
    With a common `test` set, also each site's model on it after every round (empty without)."""
    splits = _splits(tables, recipe)
    scores, curves = {}, {}
    for site, scaler, net, curve in _local_models(splits, recipe, test):
        x, y = scored_rows(splits[site], test)
        scores[site], curves[site] = evaluate(net, scaler.transform(x), y), curve
    return scores, curves


def local_only_matrix(
    tables: Mapping[str, CleanTable], recipe: Recipe
) -> dict[str, dict[str, EvalResult]]:
    """Each site's model trained alone (its own scaler), scored on every site's validation
    split: model site -> validation site -> scores."""
    splits = _splits(tables, recipe)
    return {
        site: {
            other: evaluate(net, scaler.transform(s.val_x), s.val_y) for other, s in splits.items()
        }
        for site, scaler, net, _ in _local_models(splits, recipe)
    }


def models_at_every_site(
    models: Mapping[str, tuple[Params, Scaler]],
    tables: Mapping[str, CleanTable],
    recipe: Recipe,
) -> dict[str, dict[str, EvalResult]]:
    """Given models (a site's parameters and the scaling it trained with), each scored on
    every site's validation split: model site -> validation site -> scores."""
    splits = _splits(tables, recipe)
    return {
        site: {
            other: fedavg_evaluate(params, recipe, scaler.transform(s.val_x), s.val_y)
            for other, s in splits.items()
        }
        for site, (params, scaler) in models.items()
    }


def local_only_cross_site(
    tables: Mapping[str, CleanTable], recipe: Recipe
) -> dict[str, EvalResult]:
    """Each site alone, scored on every site's validation split (FLamby's protocol for local
    models): the mean of the per-site metrics, i.e. how well a model trained on one hospital's
    records serves the consortium's patients."""
    results = {}
    for site, row in local_only_matrix(tables, recipe).items():
        scores = list(row.values())
        aucs = [e.auc for e in scores if e.auc is not None]
        results[site] = EvalResult(
            accuracy=float(np.mean([e.accuracy for e in scores])),
            auc=float(np.mean(aucs)) if aucs else None,
            loss=float(np.mean([e.loss for e in scores])),
            n=sum(e.n for e in scores),
        )
    return results


def pooled(
    tables: Mapping[str, CleanTable], recipe: Recipe, test: CleanTable | None = None
) -> tuple[dict[str, EvalResult], Curve]:
    """One model on the union of all training splits (pooled scaler), scored on each site.
    With a common `test` set, also the model on it after every round (empty without)."""
    splits = _splits(tables, recipe)
    train_x = np.concatenate([s.train_x for s in splits.values()])
    train_y = np.concatenate([s.train_y for s in splits.values()])
    scaler = Scaler.from_stats(local_stats(train_x))
    curve: Curve = []
    net = _fit(scaler.transform(train_x), train_y, recipe, _on_test(test, scaler, curve))
    scores = {}
    for site, split in splits.items():
        x, y = scored_rows(split, test)
        scores[site] = evaluate(net, scaler.transform(x), y)
    return scores, curve


def fedavg(
    tables: Mapping[str, CleanTable], recipe: Recipe, test: CleanTable | None = None
) -> tuple[dict[str, EvalResult], list[dict[str, float]]]:
    """Server-based FedAvg: what the swarm would be with a central server doing the averaging.

    Features are standardized with the pooled statistics, which is what the swarm agrees on by
    gossip. Each round every site trains a copy of the global model (the nodes' schedule and
    seed) and the server averages the copies weighted by training-row counts. The steps are the
    functions below, which `sim.fedavg_network` runs as a server and client processes.

    Returns the final global model scored on each site's validation split (on the common
    `test` set when none was held out), and one entry per
    round: ``round`` (1-based, like the nodes' metrics), ``mean_accuracy`` and ``mean_auc`` over
    sites (``mean_auc`` is NaN if no site's validation split has both classes), and ``seconds``,
    the wall-clock of that round's training and averaging with the sites run one after another,
    as one server machine would (the per-round scoring is left out). With a common `test` set,
    each entry also holds the global model's ``test_accuracy``, ``test_auc`` (NaN with one
    class) and ``test_loss`` on it, scaled like the sites' records.
    """
    splits = _splits(tables, recipe)
    scaler = pooled_scaler([site_stats(s.train_x) for s in splits.values()])
    train = [(scaler.transform(s.train_x), s.train_y) for s in splits.values()]
    val = {site: _scaled(scaler, *scored_rows(s, test)) for site, s in splits.items()}
    test_xy = None if test is None else (scaler.transform(test.features), test.target)
    params = fedavg_start(recipe, scaler.n_features)
    scores = {site: fedavg_evaluate(params, recipe, x, y) for site, (x, y) in val.items()}
    history: list[dict[str, float]] = []
    for r in range(recipe.rounds):
        began = time.perf_counter()
        updates = [(len(y), fedavg_local_update(params, x, y, recipe, r)) for x, y in train]
        params = fedavg_average(updates)
        seconds = time.perf_counter() - began
        scores = {site: fedavg_evaluate(params, recipe, x, y) for site, (x, y) in val.items()}
        aucs = [e.auc for e in scores.values() if e.auc is not None]
        entry = {
            "round": r + 1,
            "mean_accuracy": float(np.mean([e.accuracy for e in scores.values()])),
            "mean_auc": float(np.mean(aucs)) if aucs else float("nan"),
            "seconds": seconds,
        }
        if test_xy is not None:
            on_test = fedavg_evaluate(params, recipe, *test_xy)
            entry["test_accuracy"] = on_test.accuracy
            entry["test_auc"] = float("nan") if on_test.auc is None else on_test.auc
            entry["test_loss"] = on_test.loss
        history.append(entry)
    return scores, history


def _scaled(scaler: Scaler, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return scaler.transform(x), y


def consensus_on_test(
    finals: Sequence[tuple[int, Params]],
    scaler: Mapping[str, Any],
    recipe: Recipe,
    test: CleanTable,
) -> EvalResult:
    """The swarm's consensus model, the average of the nodes' final models weighted by their
    training rows (`finals`: (rows, parameters) each), on the common test set scaled by the
    swarm's agreed scaler (`scaler`: as a node's scaler.json holds it)."""
    x = Scaler.from_dict(dict(scaler)).transform(test.features)
    return fedavg_evaluate(fedavg_average(finals), recipe, x, test.target)


# -- FedAvg's steps, shared by the one-process baseline and the networked one ------------------


def site_stats(train_x: np.ndarray) -> np.ndarray:
    """What a site sends the server for scaling: counts, sums and sums of squares per column."""
    return local_stats(train_x)


def pooled_scaler(stats: Sequence[np.ndarray]) -> Scaler:
    """The sites' statistics add up to the pooled data's: the scaler the swarm agrees on."""
    return Scaler.from_stats(np.sum(stats, axis=0))


def fedavg_start(recipe: Recipe, n_features: int) -> Params:
    """The global model before round 1."""
    return model_params(
        build_model(recipe.model, n_features, recipe.hidden, seed=recipe.model_seed)
    )


def fedavg_local_update(
    params: Params, x: np.ndarray, y: np.ndarray, recipe: Recipe, round_index: int
) -> Params:
    """One site's round (0-based `round_index`): the global model trained on its rows with the
    nodes' schedule and seed."""
    net = _net(params, recipe, x.shape[1])
    train_local(net, x, y, recipe.settings, seed=training_seed(recipe.model_seed, round_index))
    return model_params(net)


def fedavg_average(updates: Sequence[tuple[int, Params]]) -> Params:
    """The server's step: the sites' models weighted by their training rows, in the given
    order (float sums depend on it)."""
    total = sum(rows for rows, _ in updates)
    return weighted_sum([(rows / total, params) for rows, params in updates])


def fedavg_evaluate(params: Params, recipe: Recipe, x: np.ndarray, y: np.ndarray) -> EvalResult:
    return evaluate(_net(params, recipe, x.shape[1]), x, y)


def _net(params: Params, recipe: Recipe, n_features: int) -> nn.Module:
    net = build_model(recipe.model, n_features, recipe.hidden, seed=recipe.model_seed)
    load_params(net, params)
    return net
