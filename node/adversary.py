"""Misbehaving nodes for simulations: free riders and poisoners.

Never enabled by default; the simulator turns it on through a node's config (`[adversary]`) to
measure what such nodes do to the swarm and what they earn. A free rider's `mode` skips local
training and publishes instead:

- replay: republish the merged model of the previous round (the average it received);
- stale: resend the round-0 model every round;
- zeros: all-zero parameters;
- noise: Gaussian noise with `noise_std`.

Poisoners train, but on flipped labels (`flip_labels`) or publish a tampered update
(`tamper_update`: sign flip, Gaussian noise).

Crafted models, made from what the attacker received and nothing more: its neighbours' published
models of the previous round, as they arrived over the wire (a real attacker cannot see the
current round's before it publishes its own). With nothing received yet (its first round, or
the first after a restart) it republishes what it holds.

- alie (A Little Is Enough, Baruch et al. 2019): mean - z std of the received models,
  coordinate-wise; z by the paper's formula for n and f (`alie_z`; the runner's n: the models
  it crafts from plus the attackers, as a victim on a complete graph merges), or given.
- ipm (inner-product manipulation, Xie et al. 2020): its model plus -epsilon times the mean of
  the received models' updates, each update measured from what the attacker held when that
  round began (its estimate of where they started).
"""

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from node.params import Params

CRAFTED = frozenset({"alie", "ipm"})  # the modes that craft from the received models


def forged_params(
    mode: str, previous: Params, initial: Params, rng: np.random.Generator, noise_std: float
) -> Params:
    if mode == "replay":
        return {k: v.copy() for k, v in previous.items()}
    if mode == "stale":
        return {k: v.copy() for k, v in initial.items()}
    if mode == "zeros":
        return {k: np.zeros_like(v) for k, v in previous.items()}
    if mode == "noise":
        return {k: rng.normal(0.0, noise_std, v.shape).astype(v.dtype) for k, v in previous.items()}
    raise ValueError(f"unknown adversary mode {mode!r}: expected replay, stale, zeros or noise")


def flip_labels(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Binary labels with a random `fraction` of them flipped (a label-flipping attacker)."""
    flipped = y.copy()
    chosen = rng.choice(len(y), size=round(fraction * len(y)), replace=False)
    flipped[chosen] = 1 - flipped[chosen]
    return flipped


def tamper_update(
    previous: Params, trained: Params, sign_flip: bool, noise_std: float, rng: np.random.Generator
) -> Params:
    """previous + the update, negated (sign flip) and/or with Gaussian noise added."""
    tampered = {}
    for k, before in previous.items():
        update = trained[k] - before
        if sign_flip:
            update = -update
        if noise_std > 0:
            update = update + rng.normal(0.0, noise_std, update.shape)
        tampered[k] = (before + update).astype(before.dtype)
    return tampered


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s z_max: s = floor(n/2 + 1) - f honest models the attacker needs on its
    side, z = Phi^-1((n - s) / n). `n`: the models a victim merges, `f`: the attackers among
    them. s is kept at least 1 (a majority of attackers needs no stealth)."""
    s = max(math.floor(n / 2 + 1) - f, 1)
    return NormalDist().inv_cdf((n - s) / n) if n > s else 0.0


def alie(received: Sequence[Params], z: float) -> Params:
    """mean - z std (population std) of the received models, per coordinate."""
    out = {}
    for name, first in received[0].items():
        stack = np.stack([np.asarray(p[name], np.float64) for p in received])
        out[name] = (stack.mean(axis=0) - z * stack.std(axis=0)).astype(first.dtype)
    return out


def ipm(current: Params, received: Sequence[Params], base: Params, epsilon: float) -> Params:
    """current - epsilon * mean(received - base), per tensor."""
    out = {}
    for name, tensor in current.items():
        stack = np.stack([np.asarray(p[name], np.float64) for p in received])
        update = stack.mean(axis=0) - np.asarray(base[name], np.float64)
        out[name] = (tensor - epsilon * update).astype(tensor.dtype)
    return out
