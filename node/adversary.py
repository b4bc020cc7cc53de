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
"""

import numpy as np

from node.params import Params


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
