"""Merge rules: how a node combines its parameters with the neighbours' that arrived.

Default, `neighbourhood`: with n_i samples, S_i = n_i + sum of its partners' n this round (its
closed neighbourhood's sample mass) and d_i partners this round,

    w_ij = n_j / max(S_i, S_j)                             for each neighbour j that arrived
    w_ii = 1 - sum_j w_ij

The denominator is the same at both ends of a link, so n_i w_ij = n_i n_j / max(S_i, S_j) =
n_j w_ji: detailed balance with respect to the sample counts. The n-weighted mean
sum_i n_i x_i / sum_i n_i is therefore invariant under mixing, and since every row sums to at
most (S_i - n_i) / S_i, w_ii >= n_i / S_i > 0 (aperiodic): on any connected graph every node
converges to it. On a complete graph S_i is the swarm's total for every i, so w_ij = n_j / S and
one round gives every node exactly the sample-weighted average: FedAvg, with no server. On
sparse graphs neither rule's weights dominate the other's (with equal counts on a regular graph
the two coincide); docs/consensus.md has the measured curves.

S_i needs every partner's n_j, which a node learns from the headers of earlier rounds (counts
do not change during a run), so it advertises S_i only once it knows them all and advertises 0
("unknown") before. Both ends need the same denominator, so an unknown mass is replaced, on
either end, by the Metropolis bound of that end:

    D_ij = max(B_i(j), B_j(i)),   B_i(j) = S_i if known, else n_j (1 + d_i)

D_ij = D_ji, so detailed balance holds whoever knows what; D_ij >= S_i keeps a node's row sum
within (S_i - n_i) / S_i, and D_ij >= n_j (1 + d_i) keeps each weight within 1 / (1 + d_i).
With no mass known at either end it is exactly the `metropolis` rule.

`metropolis`: Metropolis-Hastings weights whose stationary distribution is proportional to the
sample counts, w_ij = min(1 / (1 + d_i), n_j / (n_i (1 + d_j))) = n_j / max(n_j (1 + d_i),
n_i (1 + d_j)), needing only each neighbour's own (n_j, d_j). Kept selectable.

A node that knows its mass caps its neighbours' total weight at (S_i - n_i) / S_i: honest
headers never reach the cap, one that claims more samples than the node counted in S_i cannot
take the node's own weight below n_i / S_i.

Why not push-sum: it needs every pushed share to arrive, and a lost message loses mass for good;
here a missing neighbour's weight just stays on the node for that round (which breaks detailed
balance for that one round only if the failure was one-sided).

`median` and `trimmed_mean` are coordinate-wise robust rules over {own} + arrived: they resist a
minority of bad neighbours but give up the exact weighted average.

The Byzantine-robust rules assume at most f = `byzantine` of the arrived neighbours lie (the
node's own model is honest), over the n = 1 + arrived models at hand:

- `krum` (Blanchard et al. 2017): the model whose n - f - 2 nearest others are closest (sum of
  squared L2 distances); needs n > 2f + 2.
- `multi_krum`: the unweighted mean of the m best-scored models (m <= n - f); the same bound.
- `bulyan` (El Mhamdi et al. 2018): theta = n - 2f models picked by Krum one at a time, then per
  coordinate the mean of the beta = theta - 2f values nearest their median; needs n >= 4f + 3.
- `clipped_gossip` (self-centred clipping, He, Karimireddy and Jaggi 2022): x_i + sum_j w_ij
  clip(x_j - x_i, tau), Metropolis weights (each at most 1 / (1 + d_i) whatever a neighbour
  claims), clip(z, tau) = z min(1, tau / |z|); tau fixed, or adaptive: the (f+1)-th largest
  distance to an arrived neighbour, so at least one honest neighbour is no nearer than tau.
- `ubar` (Guo et al. 2021, made for decentralized learning): of the d arrived, the d - f
  nearest the own model (distance); of those, every one whose loss on the node's own training
  rows is at most the own model's (performance), or else the one with the lowest loss; then
  alpha x_i + (1 - alpha) times their unweighted mean. The loss screen assumes no bound on how
  many neighbours lie; its blind spot is a bad model that happens to fit this hospital's rows
  (on rows of mostly one class, one that predicts that class firmly): docs/consensus.md.

None of them weighs by sample counts: a Byzantine neighbour could claim any. A round with fewer
arrivals than the rule's bound needs keeps the node's own model, the one input it can trust.
The bounds on the configured degree are checked at start (node/config.py `byzantine_problem`).

Every rule has one signature, `rule(own, neighbours, settings)`, and is found by name in
`MERGE_RULES`: the config's choices, the templates and the docs follow that table. The weighted
rules' pairwise weights are in `PAIR_WEIGHTS`: secure aggregation has each neighbour weigh its
own model with the same function, so the masked merge comes out exactly as the plain one.
"""

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from node.params import Neighbour, Params, flatten, unflatten

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeSettings:
    """What the rules may need beyond the parameters (each reads only its own)."""

    trim_fraction: float = 0.2  # trimmed_mean: the share dropped at each end per coordinate
    byzantine: int = 0  # f: the arrived neighbours that may lie (the robust rules)
    multi_krum_m: int = 0  # multi_krum: the models averaged; 0: n - f
    clip_radius: float = 0.0  # clipped_gossip: tau; 0: adaptive (see the module's doc)
    self_weight: float = 0.5  # ubar: alpha, the own model's share of the merge
    # ubar: a model's (shared parameters') mean loss on this node's own training rows; the
    # node supplies it (node.training.loss_meter).
    loss: Callable[[Params], float] | None = None


MergeRule = Callable[[Neighbour, Sequence[Neighbour], MergeSettings], Params]
# (samples, degree, mass, their_samples, their_degree, their_mass) -> w_ij: what node i gives
# neighbour j's model. Both ends of a link can compute it (each header carries all three).
PairWeight = Callable[[int, int, int, int, int, int], float]


def metropolis_weight(
    samples: int, degree: int, mass: int, their_samples: int, their_degree: int, their_mass: int
) -> float:
    """w_ij of node i (samples, degree) for neighbour j; the masses play no part."""
    return min(1.0 / (1 + degree), their_samples / (samples * (1 + their_degree)))


def neighbourhood_weight(
    samples: int, degree: int, mass: int, their_samples: int, their_degree: int, their_mass: int
) -> float:
    """w_ij = n_j / max(B_i(j), B_j(i)), B = the end's mass if known (> 0), else its
    Metropolis bound: the same denominator at both ends."""
    mine = mass if mass > 0 else their_samples * (1 + degree)
    theirs = their_mass if their_mass > 0 else samples * (1 + their_degree)
    return their_samples / max(mine, theirs)


def pair_weights(
    weight: PairWeight, own: Neighbour, neighbours: Sequence[Neighbour]
) -> tuple[float, list[float]]:
    """(self weight, one weight per neighbour that arrived) under `weight`, the neighbours'
    total capped at 1 - n_i / S_i once the node knows its mass S_i (see the module's doc)."""
    if own.samples < 1 or own.degree < 0 or own.mass < 0:
        raise ValueError(
            f"samples must be >= 1, degree and mass >= 0, got {own.samples}, {own.degree}, "
            f"{own.mass}"
        )
    weights = [
        weight(own.samples, own.degree, own.mass, nb.samples, nb.degree, nb.mass)
        for nb in neighbours
    ]
    scale = neighbour_scale(own.samples, own.mass, sum(weights))
    weights = [w * scale for w in weights]
    return 1.0 - sum(weights), weights


def neighbour_scale(samples: int, mass: int, total: float) -> float:
    """The factor (<= 1) that keeps the neighbours' total weight within 1 - n_i / S_i (or 1
    while S_i is unknown): 1 unless a neighbour claimed more samples than S_i counted."""
    limit = 1.0 - samples / mass if mass > 0 else 1.0
    return 1.0 if total <= limit else limit / total


def metropolis_weights(
    samples: int, degree: int, neighbours: Sequence[Neighbour]
) -> tuple[float, list[float]]:
    """(self weight, one weight per neighbour that arrived) under `metropolis`."""
    return pair_weights(metropolis_weight, Neighbour("", {}, samples, degree), neighbours)


def weighted_sum(parts: Sequence[tuple[float, Mapping[str, np.ndarray]]]) -> Params:
    """sum_k w_k x_k per tensor, accumulated in float64, returned in each tensor's dtype."""
    first = parts[0][1]
    out = {}
    for name, tensor in first.items():
        acc = np.zeros(tensor.shape, dtype=np.float64)
        for weight, params in parts:
            acc += weight * params[name]
        out[name] = acc.astype(tensor.dtype)
    return out


def merge_metropolis(
    own: Neighbour, neighbours: Sequence[Neighbour], settings: MergeSettings
) -> Params:
    """`own.degree` is the node's configured neighbour count this round, arrived or not; masses
    play no part (nor the cap that comes with them)."""
    return _merge_weighted(metropolis_weight, dataclasses.replace(own, mass=0), neighbours)


def merge_neighbourhood(
    own: Neighbour, neighbours: Sequence[Neighbour], settings: MergeSettings
) -> Params:
    """`own.mass` is the node's closed-neighbourhood sample count this round (0: unknown)."""
    return _merge_weighted(neighbourhood_weight, own, neighbours)


def _merge_weighted(weight: PairWeight, own: Neighbour, neighbours: Sequence[Neighbour]) -> Params:
    self_weight, weights = pair_weights(weight, own, neighbours)
    parts = [(self_weight, own.params)] + [
        (w, nb.params) for w, nb in zip(weights, neighbours, strict=True)
    ]
    return weighted_sum(parts)


def merge_secure_sum(own: Params, self_weight: float, weighted_sum: np.ndarray) -> Params:
    """A weighted rule with the neighbours' part as one vector (secure aggregation's result, in
    `node.params.flatten` order): self_weight * own + weighted_sum, per tensor."""
    out, offset = {}, 0
    for name, tensor in own.items():
        part = weighted_sum[offset : offset + tensor.size].reshape(tensor.shape)
        offset += tensor.size
        out[name] = (self_weight * tensor.astype(np.float64) + part).astype(tensor.dtype)
    if offset != weighted_sum.size:
        raise ValueError(f"a sum of {weighted_sum.size} values for a model of {offset}")
    return out


def merge_median(
    own: Neighbour, neighbours: Sequence[Neighbour], settings: MergeSettings
) -> Params:
    return _coordinatewise(own, neighbours, lambda stack: np.median(stack, axis=0))


def merge_trimmed_mean(
    own: Neighbour, neighbours: Sequence[Neighbour], settings: MergeSettings
) -> Params:
    """Drop the k largest and k smallest values per coordinate, k = floor(trim * count)."""

    def trimmed(stack: np.ndarray) -> np.ndarray:
        k = int(settings.trim_fraction * stack.shape[0])
        ordered = np.sort(stack, axis=0)
        return ordered[k : stack.shape[0] - k].mean(axis=0)

    return _coordinatewise(own, neighbours, trimmed)


def _coordinatewise(
    own: Neighbour, neighbours: Sequence[Neighbour], reduce: Callable[[np.ndarray], np.ndarray]
) -> Params:
    out = {}
    for name, tensor in own.params.items():
        stack = np.stack([tensor] + [nb.params[name] for nb in neighbours]).astype(np.float64)
        out[name] = np.asarray(reduce(stack)).astype(tensor.dtype)
    return out


def merge_krum(own: Neighbour, neighbours: Sequence[Neighbour], settings: MergeSettings) -> Params:
    """The one model with the best Krum score (ties: own, then by peer)."""
    models = _canonical(own, neighbours)
    f = settings.byzantine
    if not _enough(len(models), 2 * f + 3, "krum"):
        return _copy(own.params, own.params)
    scores = krum_scores(squared_distances(_vectors(models)), f)
    return _copy(models[int(np.argmin(scores))].params, own.params)


def merge_multi_krum(
    own: Neighbour, neighbours: Sequence[Neighbour], settings: MergeSettings
) -> Params:
    """The unweighted mean of the m models with the best Krum scores, m <= n - f."""
    models = _canonical(own, neighbours)
    n, f = len(models), settings.byzantine
    if not _enough(n, 2 * f + 3, "multi_krum"):
        return _copy(own.params, own.params)
    vectors = _vectors(models)
    m = min(settings.multi_krum_m or n - f, n - f)
    chosen = np.argsort(krum_scores(squared_distances(vectors), f), kind="stable")[:m]
    return unflatten(vectors[np.sort(chosen)].mean(axis=0), own.params)


def merge_bulyan(
    own: Neighbour, neighbours: Sequence[Neighbour], settings: MergeSettings
) -> Params:
    """theta = n - 2f models picked by Krum one at a time (each pick leaves the pool), then per
    coordinate the mean of the beta = theta - 2f picked values nearest their median."""
    models = _canonical(own, neighbours)
    n, f = len(models), settings.byzantine
    if not _enough(n, 4 * f + 3, "bulyan"):
        return _copy(own.params, own.params)
    vectors = _vectors(models)
    d2 = squared_distances(vectors)
    pool, picked = list(range(n)), []
    for _ in range(n - 2 * f):
        best = pool[int(np.argmin(krum_scores(d2[np.ix_(pool, pool)], f)))]
        picked.append(best)
        pool.remove(best)
    # Sorted first, so that of two values as near the median the lower is taken whatever the
    # models' order (the stable argsort keeps the sorted order among ties).
    values = np.sort(vectors[sorted(picked)], axis=0)
    median = np.median(values, axis=0)
    nearest = np.argsort(np.abs(values - median), axis=0, kind="stable")[: n - 4 * f]
    return unflatten(np.take_along_axis(values, nearest, axis=0).mean(axis=0), own.params)


def merge_clipped_gossip(
    own: Neighbour, neighbours: Sequence[Neighbour], settings: MergeSettings
) -> Params:
    """x_i + sum_j w_ij clip(x_j - x_i, tau), Metropolis weights: the node moves at most
    tau * sum_j w_ij < tau from its own model, whatever the neighbours sent."""
    arrived = sorted(neighbours, key=lambda nb: nb.peer)
    x = flatten(own.params)
    if not arrived:
        return _copy(own.params, own.params)
    _, weights = metropolis_weights(own.samples, own.degree, arrived)
    diffs = _vectors(arrived) - x
    norms = np.sqrt((diffs**2).sum(axis=1))
    tau = settings.clip_radius or adaptive_radius(norms, settings.byzantine)
    far = norms > tau
    scale = np.ones_like(norms)
    scale[far] = tau / norms[far]
    return unflatten(x + (np.array(weights) * scale) @ diffs, own.params)


def merge_ubar(own: Neighbour, neighbours: Sequence[Neighbour], settings: MergeSettings) -> Params:
    """UBAR's two stages over the arrived models, then alpha x_i + (1 - alpha) mean(picked)."""
    if settings.loss is None:
        raise ValueError("ubar needs the node's loss on its own training rows")
    arrived = sorted(neighbours, key=lambda nb: nb.peer)
    f = settings.byzantine
    if not _enough(len(arrived), f + 1, "ubar (arrived neighbours)"):
        return _copy(own.params, own.params)  # none of them need be honest
    x, vectors = flatten(own.params), _vectors(arrived)
    distances = ((vectors - x) ** 2).sum(axis=1)
    nearest = np.argsort(distances, kind="stable")[: len(arrived) - f]
    losses = {int(i): _finite(settings.loss(arrived[i].params)) for i in nearest}
    own_loss = _finite(settings.loss(own.params))
    picked = [i for i, loss in losses.items() if loss <= own_loss]
    if not picked:  # sorted by peer first: a tie goes to the lower peer ID
        picked = [min(losses, key=lambda i: (losses[i], i))]
    picked.sort()
    log.debug("ubar: own loss %.4g; merging %s (losses %s)", own_loss,
              [arrived[i].peer for i in picked], [losses[i] for i in picked])  # fmt: skip
    alpha = settings.self_weight
    return unflatten(alpha * x + (1 - alpha) * vectors[picked].mean(axis=0), own.params)


def _finite(loss: float) -> float:
    """A loss to compare: NaN (a model that outputs nonsense) as the worst."""
    return loss if loss == loss else math.inf


def adaptive_radius(distances: np.ndarray, byzantine: int) -> float:
    """The (f+1)-th largest distance to an arrived neighbour: with at most f of them Byzantine,
    one honest neighbour at least is that far, so each Byzantine pull is at most an honest one's.
    0 (keep the own model) with f or fewer arrivals, none of which need be honest."""
    if len(distances) <= byzantine:
        if len(distances):
            log.warning("clipped_gossip: %d arrived, f = %d: keeping the own model",
                        len(distances), byzantine)  # fmt: skip
        return 0.0
    return float(np.sort(distances)[::-1][byzantine])


def squared_distances(vectors: np.ndarray) -> np.ndarray:
    """The n x n squared L2 distances between rows, exactly symmetric (the same sums either way)."""
    return np.stack([((vectors - v) ** 2).sum(axis=1) for v in vectors])


def krum_scores(d2: np.ndarray, byzantine: int) -> np.ndarray:
    """Per model, the sum of its squared distances to its k = n - f - 2 nearest others (k at
    least 1: Bulyan's last picks run Krum on fewer models than Krum itself needs)."""
    n = len(d2)
    if n == 1:
        return np.zeros(1)
    k = min(max(n - byzantine - 2, 1), n - 1)
    others = np.where(np.eye(n, dtype=bool), np.inf, d2)
    return np.sort(others, axis=1)[:, :k].sum(axis=1)


def _canonical(own: Neighbour, neighbours: Sequence[Neighbour]) -> list[Neighbour]:
    """Own first, then the neighbours by peer: one order whatever the arrival order, so that
    ties and floating-point sums come out the same (and a tie goes to the own model)."""
    return [own, *sorted(neighbours, key=lambda nb: nb.peer)]


def _enough(n: int, needed: int, rule: str) -> bool:
    if n >= needed:
        return True
    log.warning("%s: %d models at hand, %d needed: keeping the own model", rule, n, needed)
    return False


def _vectors(models: Sequence[Neighbour]) -> np.ndarray:
    return np.stack([flatten(m.params) for m in models])


def _copy(params: Params, like: Params) -> Params:
    return {name: np.array(params[name], dtype=tensor.dtype) for name, tensor in like.items()}


# The rules by name, the first the default. Add a rule here and to node/config.py's MergeRule
# (a unit test keeps the two equal).
MERGE_RULES: dict[str, MergeRule] = {
    "neighbourhood": merge_neighbourhood,
    "metropolis": merge_metropolis,
    "median": merge_median,
    "trimmed_mean": merge_trimmed_mean,
    "krum": merge_krum,
    "multi_krum": merge_multi_krum,
    "bulyan": merge_bulyan,
    "clipped_gossip": merge_clipped_gossip,
    "ubar": merge_ubar,
}


# The weighted rules' pairwise weights: what secure aggregation can compute at both ends (the
# others need every neighbour's model). node/config.py's SECURE_AGGREGATION_RULES names them.
PAIR_WEIGHTS: dict[str, PairWeight] = {
    "neighbourhood": neighbourhood_weight,
    "metropolis": metropolis_weight,
}
# The rules that read the closed-neighbourhood mass: only for them does a node work it out and
# advertise it (others advertise 0, "unknown").
MASS_RULES = frozenset({"neighbourhood"})


def merge(
    rule: str, own: Neighbour, neighbours: Sequence[Neighbour], settings: MergeSettings
) -> Params:
    try:
        combine = MERGE_RULES[rule]
    except KeyError:
        raise ValueError(
            f"unknown merge rule {rule!r}: expected {' | '.join(MERGE_RULES)}"
        ) from None
    return combine(own, neighbours, settings)
