"""Merge rules: how a node combines its parameters with the neighbours' that arrived.

Default, `metropolis`: Metropolis-Hastings weights whose stationary distribution is proportional
to the sample counts. With n_i samples and d_i configured neighbours,

    w_ij = min(1 / (1 + d_i), n_j / (n_i (1 + d_j)))      for each neighbour j that arrived
    w_ii = 1 - sum_j w_ij

This matrix is row-stochastic and satisfies detailed balance, n_i w_ij = n_j w_ji, so the
n-weighted mean sum_i n_i x_i / sum_i n_i is invariant under mixing, and on any connected graph
(the self-weight makes it aperiodic) every node converges to it: consensus on exactly the sample-
weighted average, as FedAvg would weigh the hospitals, with only each neighbour's own (n_j, d_j)
known locally. Why not push-sum: it needs every pushed share to arrive, and a lost message loses
mass for good; here a missing neighbour's weight just stays on the node for that round (which
breaks detailed balance for that one round only if the failure was one-sided).

`median` and `trimmed_mean` are coordinate-wise robust rules over {own} + arrived: they resist a
minority of bad neighbours but give up the exact weighted average.

Every rule has one signature, `rule(own, neighbours, settings)`, and is found by name in
`MERGE_RULES`: the config's choices, the templates and the docs follow that table.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from node.params import Neighbour, Params


@dataclass(frozen=True)
class MergeSettings:
    """What the rules may need beyond the parameters (each reads only its own)."""

    trim_fraction: float = 0.2  # trimmed_mean: the share dropped at each end per coordinate


MergeRule = Callable[[Neighbour, Sequence[Neighbour], MergeSettings], Params]


def metropolis_weight(samples: int, degree: int, their_samples: int, their_degree: int) -> float:
    """w_ij of node i (samples, degree) for neighbour j. Secure aggregation has j weigh its own
    model with this very function, so the masked merge comes out exactly as the plain one."""
    return min(1.0 / (1 + degree), their_samples / (samples * (1 + their_degree)))


def metropolis_weights(
    samples: int, degree: int, neighbours: Sequence[Neighbour]
) -> tuple[float, list[float]]:
    """(self weight, one weight per neighbour that arrived)."""
    if samples < 1 or degree < 0:
        raise ValueError(f"samples must be >= 1 and degree >= 0, got {samples}, {degree}")
    weights = [metropolis_weight(samples, degree, nb.samples, nb.degree) for nb in neighbours]
    return 1.0 - sum(weights), weights


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
    """`own.degree` is the node's configured neighbour count this round, arrived or not."""
    self_weight, weights = metropolis_weights(own.samples, own.degree, neighbours)
    parts = [(self_weight, own.params)] + [
        (w, nb.params) for w, nb in zip(weights, neighbours, strict=True)
    ]
    return weighted_sum(parts)


def merge_secure_sum(own: Params, self_weight: float, weighted_sum: np.ndarray) -> Params:
    """Metropolis with the neighbours' part as one vector (secure aggregation's result, in
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
    "metropolis": merge_metropolis,
    "median": merge_median,
    "trimmed_mean": merge_trimmed_mean,
}


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
