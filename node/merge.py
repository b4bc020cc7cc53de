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

Every rule has one signature, `rule(own, neighbours, settings)`, and is found by name in
`MERGE_RULES`: the config's choices, the templates and the docs follow that table. The weighted
rules' pairwise weights are in `PAIR_WEIGHTS`: secure aggregation has each neighbour weigh its
own model with the same function, so the masked merge comes out exactly as the plain one.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from node.params import Neighbour, Params


@dataclass(frozen=True)
class MergeSettings:
    """What the rules may need beyond the parameters (each reads only its own)."""

    trim_fraction: float = 0.2  # trimmed_mean: the share dropped at each end per coordinate


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


# The rules by name, the first the default. Add a rule here and to node/config.py's MergeRule
# (a unit test keeps the two equal).
MERGE_RULES: dict[str, MergeRule] = {
    "neighbourhood": merge_neighbourhood,
    "metropolis": merge_metropolis,
    "median": merge_median,
    "trimmed_mean": merge_trimmed_mean,
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
