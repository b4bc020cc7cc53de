"""Contribution scoring: Shapley values of the neighbours' round-r models, on the node's own data.

The game (docs/design.md, "Contribution and rewards"): the players are the neighbours whose round-r
models arrived; the value of a coalition S is ``metric(merge of S) - metric(previous)``, where
the merge is the average of S's parameters weighted by their claimed sample counts and
``previous`` is the node's merged model of the previous round; ``v(empty) = 0``. The metric is
higher-is-better: ``auc`` (the default: it ignores where a model puts its decision threshold,
so a hospital whose prevalence differs from the evaluator's is valued for how well its model
ranks the evaluator's patients, not for its label prior), ``loss`` (minus the validation
cross-entropy) or ``accuracy``. The node never scores itself.

Up to ``exact_max_players`` players the Shapley value is exact (2^n - 1 evaluations); beyond,
`sampled_shapley` estimates it within a hard budget of distinct coalition evaluations.

Free riders and duplicates. The node trusts nothing a peer sends, so before the game:

- Duplicates: candidates within ``duplicate_tolerance`` relative distance of each other
  (transitively) are one player: their average model with their mean sample count. The player's
  value is split equally among the members, so a hospital registered twice earns together what
  it would alone.
- Replays: a candidate whose model is, within ``replay_tolerance`` relative residual, an affine
  combination of models the evaluator already knew is a null player (score 0, not in the game).
  Known: the evaluator's own round-r snapshot, its previous merged model, its own previous-round
  snapshot and every model it received in the previous round. This catches replaying the
  average received last round (a merged model is such a combination), resending last round's
  model, and sending the evaluator's own model back.
- Mixes of this round's models: a candidate explained by the known models plus a combination of
  the OTHER candidates of this round is a replay too, but here the other candidates enter with
  non-negative weights only. With free (affine) weights the test is symmetric: if F is the mean
  of A, B and C then A = 3F - B - C, and one lazy free rider would zero the three honest models
  it averaged. A non-negative mix is inside the cone of its parts; the parts are not.
- Near-copies: for the same reason two candidates whose new parts (what the known models leave
  unexplained) are parallel within ``replay_tolerance`` explain each other; nothing tells the
  original from the copy, so they are joined into one player like duplicates rather than both
  zeroed.

Zero and noise models are not replays; they are scored like any model. Noise has negative
value; zeros usually too, but a zero model shrinks every merge it joins, and where shrinkage
helps the evaluator's validation loss it earns a little (the bench sees this with 4 and 8
neighbours early in training). The chain pays only positive scores combined by median over
evaluators. The tests run on sketches: a seeded random subset of at most
``sketch_size`` coordinates of the flattened parameters, in float64; the scorer keeps one
round's sketches for the next.

Limits:

- Replay detection needs the evaluator to have seen what the free rider saw, i.e. a full or
  dense topology. In a ring a neighbour's merged model mixes models the evaluator never
  received, so a relaying node cannot be told from an honest one. Memory is one round deep.
- The tests need the sketch to have at least 4 coordinates per basis model; below that (a tiny
  model, or very many neighbours) every model is in the span and the tests are skipped.
- A Sybil that adds noise above the tolerances is neither grouped nor zeroed: it competes with
  its twin as a nearly redundant player and Shapley splits their joint gain. Identities are
  admitted by the consortium's admins on chain; the scorer only removes the exact and
  near-exact gain.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from node.merge import weighted_sum
from node.params import Neighbour, Params, load_params
from node.training import evaluate

Game = Callable[[frozenset[str]], float]
METRICS = ("loss", "accuracy", "auc")
# A model so broken that its loss is not finite counts as having this loss: keeps sums finite.
LOSS_CAP = 1e6
_TINY = 1e-12
_RANK_TOL = 1e-9  # singular values below this fraction of the largest are rounding, not span


@dataclass(frozen=True)
class ScoringSettings:
    metric: Literal["loss", "accuracy", "auc"] = "auc"  # the node's default, see node/config.py
    exact_max_players: int = 8  # exact Shapley up to this many players, sampling beyond
    budget: int = 128  # max distinct coalition evaluations per round when sampling
    truncation: float = 0.01  # stop a permutation when |v(N) - v(S)| < truncation * |v(N)|
    seed: int = 0
    # Relative residual below which a model counts as a replay. Not 0.05: updates follow last
    # round's directions, so honest models are largely explained by known ones (on the
    # heart-disease MLP with 32 neighbours, residuals down to 0.015; 0.05 zeroed 24 of 32
    # honest hospitals), while exact replays sit at float32 rounding, about 2e-6.
    replay_tolerance: float = 1e-3
    duplicate_tolerance: float = 1e-3  # relative distance below which two models are one player
    sketch_size: int = 65536  # coordinates kept (seeded random subset) for replay/duplicates

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.exact_max_players < 0 or self.budget < 1 or self.sketch_size < 1:
            raise ValueError("exact_max_players must be >= 0, budget and sketch_size >= 1")
        if min(self.truncation, self.replay_tolerance, self.duplicate_tolerance) < 0:
            raise ValueError("truncation and the tolerances must be >= 0")


@dataclass(frozen=True)
class RoundScores:
    scores: dict[str, float]  # every candidate's peer -> its Shapley value this round
    replays: list[str]  # peers judged replays (null players, score 0)
    duplicate_groups: list[list[str]]  # groups of >= 2 peers treated as one player
    evaluations: int  # distinct coalition evaluations (the baseline excluded)
    exact: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "scores": dict(self.scores),
            "replays": list(self.replays),
            "duplicate_groups": [list(g) for g in self.duplicate_groups],
            "evaluations": self.evaluations,
            "exact": self.exact,
            "seconds": self.seconds,
        }


# --------------------------------------------------------------------------- Shapley values


class CountingGame:
    """Wraps a game: caches v(S) by coalition and counts distinct evaluations.

    The empty coalition is worth 0 by the definition of the contribution game (value relative to
    the previous model), so it is never passed to ``value`` and never counted.
    """

    def __init__(self, value: Game) -> None:
        self._value = value
        self._cache: dict[frozenset[str], float] = {frozenset(): 0.0}

    @property
    def evaluations(self) -> int:
        return len(self._cache) - 1

    def __contains__(self, coalition: frozenset[str]) -> bool:
        return coalition in self._cache

    def __call__(self, coalition: frozenset[str]) -> float:
        if coalition not in self._cache:
            self._cache[coalition] = float(self._value(coalition))
        return self._cache[coalition]


def exact_shapley(players: Sequence[str], value: Game) -> dict[str, float]:
    """phi_i = sum over S not holding i of |S|! (n - |S| - 1)! / n! (v(S + i) - v(S)).

    Calls ``value`` once on each of the 2^n coalitions, the empty one included.
    """
    n = len(players)
    if len(set(players)) != n:
        raise ValueError(f"players must be distinct: {list(players)}")
    v = [
        value(frozenset(p for j, p in enumerate(players) if mask >> j & 1)) for mask in range(2**n)
    ]
    weight = [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)]
    phi = dict.fromkeys(players, 0.0)
    for mask in range(2**n):
        size = mask.bit_count()
        for j, p in enumerate(players):
            if not mask >> j & 1:
                phi[p] += weight[size] * (v[mask | 1 << j] - v[mask])
    return phi


def sampled_shapley(
    players: Sequence[str], value: Game, *, budget: int, truncation: float, seed: int
) -> dict[str, float]:
    """Permutation-sampling estimate of the Shapley values, in the spirit of GTG-Shapley.

    ``value`` is called on at most ``budget`` distinct non-empty coalitions (v(empty) = 0, see
    `CountingGame`); when that covers all 2^n - 1 of them the exact value is returned instead.

    Permutations come in cycles of n, a random Latin square: each player takes every position,
    the first included, exactly once per cycle (GTG's guided first position: in saturating games
    the first positions carry most of the value), plus each permutation reversed (antithetic).
    A cycle's prefixes are evaluated breadth first, all singletons, then all pairs, and so on,
    so a budget that runs out mid-cycle still leaves every player's early marginals balanced.
    Before that, the n leave-one-out coalitions N - {i} are evaluated: they give the last
    position's marginal exactly and a fill-in for the positions a permutation never reached.

    A permutation stops at the budget, or (within-permutation truncation) once its prefix S has
    ``|v(N) - v(S)| < truncation * |v(N)|``. The players it did not reach share the remainder
    ``v(N) - v(S)``: each gets its leave-one-out marginal ``v(N) - v(N - {i})`` (late marginals
    are the ones it estimates), plus an equal share of what those leave unexplained; with the
    leave-one-out values not all known, plain equal shares. So every permutation's marginals sum
    to v(N) and the estimates are efficient, and a player never reached at all (a budget below
    n + 1) gets an equal share of the remainder rather than an undefined value. Deterministic
    for the same players (in the same order), game, budget and seed.
    """
    n = len(players)
    if len(set(players)) != n:
        raise ValueError(f"players must be distinct: {list(players)}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    game = value if isinstance(value, CountingGame) else CountingGame(value)
    if n == 0:
        return {}
    if 2**n - 1 - game.evaluations <= budget:
        return exact_shapley(players, game)
    start = game.evaluations
    rng = np.random.default_rng(seed)
    names = list(players)
    full = frozenset(names)

    def affordable(coalition: frozenset[str]) -> bool:
        return coalition in game or game.evaluations - start < budget

    v_full = game(full)
    loo = np.full(n, np.nan)  # leave-one-out marginals v(N) - v(N - {i})
    for i, p in enumerate(names):
        if affordable(full - {p}):
            loo[i] = v_full - game(full - {p})
    totals = np.zeros(n)
    permutations = 0
    exhausted = False
    while not exhausted:
        before = game.evaluations
        order = rng.permutation(n)
        shifts = np.concatenate([[0], 1 + rng.permutation(n - 1)])
        cycle = [order[(t + shifts) % n] for t in range(n)]
        cycle += [perm[::-1] for perm in cycle]
        depth = [0] * len(cycle)
        reached = [0.0] * len(cycle)  # v(prefix of length depth)
        for size in range(1, n):
            for t, perm in enumerate(cycle):
                if depth[t] < size - 1 or abs(v_full - reached[t]) < truncation * abs(v_full):
                    continue
                coalition = frozenset(names[j] for j in perm[:size])
                if not affordable(coalition):
                    exhausted = True
                    break
                v = game(coalition)
                totals[perm[size - 1]] += v - reached[t]
                depth[t], reached[t] = size, v
            if exhausted:
                break
        for t, perm in enumerate(cycle):
            totals[perm[depth[t] :]] += _shares(v_full - reached[t], perm[depth[t] :], loo)
        permutations += len(cycle)
        if game.evaluations == before:  # a whole cycle from the cache: nothing left to learn
            break
    return dict(zip(names, (totals / permutations).tolist(), strict=True))


def _shares(remainder: float, rest: np.ndarray, loo: np.ndarray) -> np.ndarray:
    """Split what a permutation did not reach among its remaining players (see above)."""
    known = loo[rest]
    if np.isnan(known).any():
        return np.full(len(rest), remainder / len(rest))
    return known + (remainder - known.sum()) / len(rest)


# --------------------------------------------------------------------------- the value


def validation_value(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, metric: str
) -> Callable[[Params], float]:
    """``params -> metric`` of those parameters on ``(x, y)``, higher is better.

    The parameters are loaded into a private copy of ``model``, so the caller's model is never
    touched. ``loss`` is minus the mean cross-entropy; a non-finite loss counts as `LOSS_CAP`.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if metric == "auc" and len(np.unique(y)) < 2:
        raise ValueError("auc needs both classes in the validation split")
    private = copy.deepcopy(model)

    def value_of(params: Params) -> float:
        load_params(private, params)
        result = evaluate(private, x, y)
        if metric == "accuracy":
            return result.accuracy
        if metric == "auc":
            assert result.auc is not None  # both classes present, checked above
            return result.auc
        return -result.loss if math.isfinite(result.loss) else -LOSS_CAP

    return value_of


# --------------------------------------------------------------------------- the scorer


@dataclass
class _Memory:
    """What the scorer keeps of one round for the next: sketches of its own and received."""

    round: int
    dimension: int
    sketches: list[np.ndarray] = field(default_factory=list)


class ContributionScorer:
    """Scores one node's neighbours, round after round (it keeps one round's sketches)."""

    def __init__(self, settings: ScoringSettings, value_of: Callable[[Params], float]) -> None:
        self.settings = settings
        self.value_of = value_of
        self._memory: dict[int, _Memory] = {}
        self._coords: dict[int, np.ndarray] = {}

    def score(
        self, round_: int, previous: Params, own: Params, candidates: Sequence[Neighbour]
    ) -> RoundScores:
        """Shapley values of ``candidates`` in the game relative to ``previous``.

        ``previous`` is this node's merged model of the previous round (the initial model in
        round 1), ``own`` its own round-r snapshot (never a player). Raises `ValueError` naming
        the peer for a candidate whose tensors do not match ``previous`` or are not finite, or
        whose sample count is below 1.
        """
        started = time.perf_counter()
        _check(previous, own, candidates)
        s = self.settings
        names = list(previous)
        dimension = sum(int(np.size(previous[k])) for k in names)
        sketch = lambda params: self._sketch(params, names, dimension)  # noqa: E731
        base, own_sketch = sketch(previous), sketch(own)
        sketches = [sketch(c.params) for c in candidates]
        known = [own_sketch] + self._remembered(round_, dimension)
        players, replays, groups_ = _screen(base, known, sketches, s)
        self._remember(round_, dimension, [own_sketch, *sketches])

        keys = [candidates[g[0]].peer for g in players]  # a group plays under its first peer
        models = {
            k: _average([candidates[i] for i in g]) for k, g in zip(keys, players, strict=True)
        }
        baseline = self.value_of(dict(previous))

        def value(coalition: frozenset[str]) -> float:
            parts = [models[k] for k in keys if k in coalition]
            total = sum(samples for samples, _ in parts)
            merged = weighted_sum([(samples / total, params) for samples, params in parts])
            v = self.value_of(merged) - baseline
            if not math.isfinite(v):
                raise ValueError(f"value_of returned {v} for the merge of {sorted(coalition)}")
            return v

        game = CountingGame(value)
        exact = len(keys) <= s.exact_max_players
        if exact:
            phi = exact_shapley(keys, game)
        else:
            phi = sampled_shapley(
                keys, game, budget=s.budget, truncation=s.truncation, seed=s.seed + round_
            )
        scores = dict.fromkeys((c.peer for c in candidates), 0.0)
        for key, group in zip(keys, players, strict=True):
            for i in group:
                scores[candidates[i].peer] = phi[key] / len(group)
        groups = [[candidates[i].peer for i in g] for g in groups_ if len(g) > 1]
        return RoundScores(
            scores=scores,
            replays=[candidates[i].peer for i in replays],
            duplicate_groups=groups,
            evaluations=game.evaluations,
            exact=exact,
            seconds=time.perf_counter() - started,
        )

    def _sketch(self, params: Mapping[str, np.ndarray], names: list[str], dim: int) -> np.ndarray:
        if dim not in self._coords:
            rng = np.random.default_rng(self.settings.seed)
            size = min(self.settings.sketch_size, dim)
            self._coords[dim] = np.sort(rng.choice(dim, size=size, replace=False))
        flat = np.concatenate([np.ravel(params[k]) for k in names])
        return flat[self._coords[dim]].astype(np.float64)

    def _remembered(self, round_: int, dimension: int) -> list[np.ndarray]:
        """Sketches kept from the latest earlier round (same model size), if any."""
        earlier = [r for r in self._memory if r < round_]
        if not earlier:
            return []
        memory = self._memory[max(earlier)]
        return memory.sketches if memory.dimension == dimension else []

    def _remember(self, round_: int, dimension: int, sketches: list[np.ndarray]) -> None:
        # Two rounds kept, so scoring the same round twice gives the same answer.
        self._memory[round_] = _Memory(round_, dimension, sketches)
        for r in sorted(self._memory)[:-2]:
            del self._memory[r]


def _check(previous: Params, own: Params, candidates: Sequence[Neighbour]) -> None:
    shapes = {k: np.shape(v) for k, v in previous.items()}
    if {k: np.shape(v) for k, v in own.items()} != shapes:
        raise ValueError("own parameters do not match previous (names or shapes)")
    peers = [c.peer for c in candidates]
    if len(set(peers)) != len(peers):
        raise ValueError(f"a peer appears twice among the candidates: {peers}")
    for c in candidates:
        if {k: np.shape(v) for k, v in c.params.items()} != shapes:
            raise ValueError(f"{c.peer}: parameters do not match the local model")
        if not all(np.isfinite(v).all() for v in c.params.values()):
            raise ValueError(f"{c.peer}: parameters are not all finite")
        if c.samples < 1:
            raise ValueError(f"{c.peer}: sample count must be >= 1, got {c.samples}")


def _average(members: Sequence[Neighbour]) -> tuple[float, Params]:
    """(mean sample count, average model) of a group of duplicates."""
    samples = sum(c.samples for c in members) / len(members)
    if len(members) == 1:
        return samples, members[0].params
    return samples, weighted_sum([(1.0 / len(members), c.params) for c in members])


# --------------------------------------------------------------------------- replays and copies


def _screen(
    base: np.ndarray, known: list[np.ndarray], sketches: list[np.ndarray], s: ScoringSettings
) -> tuple[list[list[int]], list[int], list[list[int]]]:
    """(players as lists of candidate indices, replayed indices, all groups) for one round."""
    if not sketches:
        return [], [], []
    tiny = _TINY * (1.0 + float(np.linalg.norm(base)))
    offsets = np.stack([c - base for c in sketches], axis=1)
    norms = np.linalg.norm(offsets, axis=0)

    def distance(a: int, b: int) -> float:
        scale = max(norms[a], norms[b], tiny)
        return float(np.linalg.norm(offsets[:, a] - offsets[:, b])) / scale

    groups = _union(len(sketches), lambda a, b: distance(a, b) < s.duplicate_tolerance)
    if len(base) < 4 * (len(known) + len(groups) - 1):  # everything is in the span: no test
        return groups, [], groups
    # What the known models leave unexplained (the residual of an affine fit on them), in the
    # coordinates of an orthonormal basis of those residuals: norms are kept, sizes are small.
    unexplained = _orthogonal_part(np.stack([k - base for k in known], axis=1), offsets)
    _, coords = np.linalg.qr(unexplained)

    def part(group: list[int]) -> np.ndarray:
        return coords[:, group].mean(axis=1)

    def scale(group: list[int]) -> float:
        return max(float(np.linalg.norm(offsets[:, group].mean(axis=1))), tiny)

    def explained(group: list[int], by: list[list[int]]) -> bool:
        basis = np.stack([part(g) for g in by], axis=1) if by else np.zeros((len(coords), 0))
        return _cone_residual(part(group), basis) < s.replay_tolerance * scale(group)

    old = [g for g in groups if explained(g, [])]
    alive = [g for g in groups if g not in old]
    # Near-copies explain each other, and nothing tells the original from the copy: join them.
    copies = _union(
        len(alive), lambda a, b: explained(alive[a], [alive[b]]) or explained(alive[b], [alive[a]])
    )
    joined = [sorted(i for a in c for i in alive[a]) for c in copies]
    mixes = [g for g in joined if explained(g, [h for h in joined if h is not g])]
    players = [g for g in joined if g not in mixes]
    return players, sorted(i for g in old + mixes for i in g), sorted(old + joined)


def _union(n: int, close: Callable[[int, int], bool]) -> list[list[int]]:
    """Connected components of the relation ``close`` on 0..n-1, each sorted, by first index."""
    root = list(range(n))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for a in range(n):
        for b in range(a + 1, n):
            if find(a) != find(b) and close(a, b):
                root[find(b)] = find(a)
    components: dict[int, list[int]] = {}
    for i in range(n):
        components.setdefault(find(i), []).append(i)
    return sorted(components.values())


def _orthogonal_part(basis: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``vectors`` minus their projection on the span of ``basis``'s columns."""
    u, sv, _ = np.linalg.svd(basis, full_matrices=False)
    if sv.size == 0 or sv[0] == 0:
        return vectors
    u = u[:, sv > _RANK_TOL * sv[0]]
    return vectors - u @ (u.T @ vectors)


def _cone_residual(y: np.ndarray, basis: np.ndarray) -> float:
    """min over w >= 0 of ||y - basis @ w|| (Lawson-Hanson non-negative least squares)."""
    # The cone ignores column scale. Scaled by the largest entry first: the norm of a column
    # of tiny (subnormal) values underflows to 0 otherwise, and a direction would be lost.
    peaks = np.abs(basis).max(axis=0)
    kept = peaks > 0
    basis = basis[:, kept] / peaks[kept]
    basis = basis / np.linalg.norm(basis, axis=0)
    m = basis.shape[1]
    w = np.zeros(m)
    active = np.zeros(m, dtype=bool)  # the coefficients free to be positive
    tol = 1e-12 * float(np.linalg.norm(y))
    for _ in range(3 * m):
        gradient = basis.T @ (y - basis @ w)
        entering = ~active & (gradient > tol)
        if not entering.any():
            break
        active[np.argmax(np.where(entering, gradient, -np.inf))] = True
        while True:
            z = np.zeros(m)
            z[active] = np.linalg.lstsq(basis[:, active], y, rcond=None)[0]
            if (z[active] > 0).all():
                w = z
                break
            # Step from w towards z until the first coefficient hits 0, and drop it.
            blocked = active & (z <= 0)
            step = np.min(w[blocked] / np.maximum(w[blocked] - z[blocked], _TINY))
            w = w + step * (z - w)
            active &= w > _TINY
            w[~active] = 0.0
    return float(np.linalg.norm(y - basis @ w))
