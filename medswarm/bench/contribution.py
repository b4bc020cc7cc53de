"""`medswarm bench contribution`: cost and accuracy of contribution scoring on real models.

For each neighbourhood size n, a full-topology swarm of 1 + n hospitals trains the heart-disease
MLP for a few rounds (each hospital a bootstrap sample of one site's training split, so sample
counts and data differ; merges as the node does them, Metropolis weights). Hospital 0 scores its
n neighbours every round with the default `ScoringSettings`, on its own validation split
(Cleveland's). Reported per size: the path taken (exact or sampled), distinct coalition
evaluations and seconds per round, honest neighbours wrongly flagged as replays, and, where
exact is feasible, how the default sampling estimate of the last round compares with the exact
Shapley values (Spearman, and the L1 error relative to the L1 norm of the exact values).

A second table adds free riders to the last round: a neighbour's merged model (did not train),
last round's model resent, a mix of three of this round's models, an exact copy of a neighbour
under a second identity, zeros and noise.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from medswarm.bench.tables import bench_table
from node.contribution import (
    ContributionScorer,
    RoundScores,
    ScoringSettings,
    validation_value,
)
from node.dataset import Split, load_schema, load_table, split_validation
from node.merge import MergeSettings, merge_metropolis
from node.models import build_model
from node.params import Neighbour, Params, load_params, model_params
from node.scaling import Scaler, local_stats
from node.training import TrainSettings, train_local, training_seed

DATA = Path(__file__).resolve().parents[2] / "data" / "heart-disease"
SIZES = (4, 8, 16, 32)


@dataclass(frozen=True)
class RoundModels:
    previous: list[Params]  # each hospital's merged model of the round before
    own: list[Params]  # each hospital's trained round-r model


def _splits() -> list[Split]:
    schema = load_schema(DATA / "schema.toml")
    files = sorted(DATA.glob("processed.*.data"))  # cleveland, hungarian, switzerland, va
    return [split_validation(load_table(f, schema), 0.25, seed=0) for f in files]


def simulate(
    splits: Sequence[Split], scaler: Scaler, hospitals: int, rounds: int, seed: int = 0
) -> tuple[torch.nn.Module, list[int], list[RoundModels]]:
    """(model template, sample counts, every round's models) of a full-topology swarm."""
    rng = np.random.default_rng(seed)
    data = []
    for i in range(hospitals):
        split = splits[i % len(splits)]
        rows = rng.integers(0, len(split.train_y), int(rng.integers(30, len(split.train_y) + 1)))
        data.append((scaler.transform(split.train_x[rows]), split.train_y[rows]))
    samples = [len(y) for _, y in data]
    net = build_model("mlp", scaler.n_features, (32,), seed=seed)
    start = model_params(net)
    merged = [start] * hospitals
    history = []
    for r in range(1, rounds + 1):
        own = []
        for i, (x, y) in enumerate(data):
            load_params(net, merged[i])
            train_local(net, x, y, TrainSettings(), seed=training_seed(seed * 1000 + i, r))
            own.append(model_params(net))
        degree = hospitals - 1
        history.append(RoundModels(previous=merged, own=own))
        merged = [
            merge_metropolis(
                Neighbour(f"h{i}", own[i], samples[i], degree),
                [
                    Neighbour(f"h{j}", own[j], samples[j], degree)
                    for j in range(hospitals)
                    if j != i
                ],
                MergeSettings(),
            )
            for i in range(hospitals)
        ]
    return net, samples, history


def _honest(models: RoundModels, samples: Sequence[int]) -> list[Neighbour]:
    degree = len(samples) - 1  # full topology
    return [Neighbour(f"h{j}", models.own[j], samples[j], degree) for j in range(1, len(samples))]


def _attackers(history: list[RoundModels], samples: Sequence[int]) -> list[Neighbour]:
    last, before = history[-1], history[-2]
    mix = {k: np.mean([last.own[j][k] for j in (1, 2, 3)], axis=0) for k in last.own[1]}
    noise = np.random.default_rng(1)
    degree = len(samples) - 1  # full topology
    return [
        Neighbour("replays-merge", last.previous[2], samples[2], degree),
        Neighbour("resends-old", before.own[3], samples[3], degree),
        Neighbour("mixes-three", mix, samples[1], degree),
        Neighbour("sybil-of-h1", last.own[1], samples[1], degree),
        Neighbour("zeros", {k: np.zeros_like(v) for k, v in last.own[1].items()}, 100, degree),
        Neighbour(
            "noise",
            {k: v + noise.normal(0, 0.5, v.shape).astype(v.dtype) for k, v in last.own[1].items()},
            100,
            degree,
        ),
    ]


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _compare(exact: RoundScores, sampled: RoundScores) -> dict[str, float]:
    peers = list(exact.scores)
    a = np.array([exact.scores[p] for p in peers])
    b = np.array([sampled.scores[p] for p in peers])
    return {
        "spearman": spearman(a, b),
        "relative_l1_error": float(np.abs(a - b).sum() / np.abs(a).sum()),
        "exact_evaluations": exact.evaluations,
        "exact_seconds": exact.seconds,
    }


def bench_size(
    splits: Sequence[Split], scaler: Scaler, neighbours: int, rounds: int, exact_up_to: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(per-size row, free-rider row) for one neighbourhood size."""
    net, samples, history = simulate(splits, scaler, neighbours + 1, rounds)
    val = splits[0]
    settings = ScoringSettings()
    value_of = validation_value(net, scaler.transform(val.val_x), val.val_y, settings.metric)
    scorer = ContributionScorer(settings, value_of)
    results: list[RoundScores] = []
    attack_scorer = scorer
    for r, models in enumerate(history, start=1):
        if r == rounds:
            attack_scorer = copy.deepcopy(scorer)  # same memory of round r - 1
        results.append(scorer.score(r, models.previous[0], models.own[0], _honest(models, samples)))
    last = history[-1]
    row: dict[str, Any] = {
        "neighbours": neighbours,
        "path": "exact" if results[-1].exact else "sampled",
        "evaluations_per_round": float(np.mean([x.evaluations for x in results])),
        "seconds_per_round": float(np.mean([x.seconds for x in results])),
        "honest_flagged": sum(len(x.replays) for x in results),
        "grouped": sum(len(g) for x in results for g in x.duplicate_groups),
    }
    if 2**neighbours - 1 <= settings.budget:
        row["sampling"] = "budget covers every coalition: sampling is exact"
    elif neighbours <= exact_up_to:
        # Fresh scorers see the same inputs, so they play the same game.
        def scored(s: ScoringSettings) -> RoundScores:
            fresh = ContributionScorer(s, value_of)
            return fresh.score(rounds, last.previous[0], last.own[0], _honest(last, samples))

        exact = scored(replace(settings, exact_max_players=neighbours))
        sampled = scored(replace(settings, exact_max_players=0))
        row["sampling"] = _compare(exact, sampled)
    attack = attack_scorer.score(
        rounds, last.previous[0], last.own[0], _honest(last, samples) + _attackers(history, samples)
    )
    attackers = [c.peer for c in _attackers(history, samples)]
    attack_row = {
        "neighbours": neighbours,
        "replays": attack.replays,
        "duplicate_groups": attack.duplicate_groups,
        "honest_flagged": [p for p in attack.replays if p not in attackers],
        "scores": attack.scores,
        "evaluations": attack.evaluations,
        "seconds": attack.seconds,
    }
    return row, attack_row


def run_contribution_bench(
    console: Console, sizes: Sequence[int] = SIZES, rounds: int = 3, exact_up_to: int = 16
) -> dict[str, Any]:
    if rounds < 2:
        raise ValueError("rounds must be >= 2 (free riders replay the round before)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster, and the timing is steadier
    started = time.perf_counter()
    try:
        splits = _splits()
        scaler = Scaler.from_stats(np.sum([local_stats(s.train_x) for s in splits], axis=0))
        rows, attacks = [], []
        for n in sizes:
            console.print(f"scoring {n} neighbours ...")
            row, attack = bench_size(splits, scaler, n, rounds, exact_up_to)
            rows.append(row)
            attacks.append(attack)
    finally:
        torch.set_num_threads(threads)
    bench = {
        "settings": ScoringSettings().__dict__,
        "rounds": rounds,
        "validation_rows": len(splits[0].val_y),
        "sizes": rows,
        "free_riders": attacks,
        "wall_seconds": time.perf_counter() - started,
    }
    console.print(_size_table(bench))
    console.print(_attack_table(bench))
    return bench


def _size_table(bench: dict[str, Any]) -> Table:
    table = bench_table(
        f"contribution scoring, one evaluator, {bench['rounds']} rounds",
        ("neighbours", "path", "evals", "s/round", "flagged", "spearman", "L1 err"),
        caption="evals: distinct coalition evaluations per round. flagged: honest neighbours "
        "judged replays (should be 0). spearman / L1 err: default sampling (budget "
        f"{bench['settings']['budget']}) against exact Shapley, last round.",
    )
    for row in bench["sizes"]:
        sampling = row.get("sampling")
        if isinstance(sampling, dict):
            rho, err = f"{sampling['spearman']:.3f}", f"{sampling['relative_l1_error']:.3f}"
        else:
            rho, err = ("1 (exact)", "0") if sampling else ("-", "-")
        table.add_row(
            str(row["neighbours"]),
            row["path"],
            f"{row['evaluations_per_round']:.0f}",
            f"{row['seconds_per_round']:.3f}",
            str(row["honest_flagged"]),
            rho,
            err,
        )
    return table


def _attack_table(bench: dict[str, Any]) -> Table:
    table = bench_table(
        "free riders added to the last round",
        ("neighbours", "replays", "groups", "honest flagged", "zeros", "noise"),
        caption="replays: peers zeroed. sybil: exact copy of h1, grouped with it. "
        "zeros / noise: their scores (negative is right).",
    )
    for row in bench["free_riders"]:
        table.add_row(
            str(row["neighbours"]),
            ", ".join(row["replays"]),
            "; ".join("+".join(g) for g in row["duplicate_groups"]),
            str(len(row["honest_flagged"])),
            f"{row['scores']['zeros']:.4f}",
            f"{row['scores']['noise']:.4f}",
        )
    return table
