"""Misbehaving nodes for simulations: what a free rider publishes instead of a trained model.

Never enabled by default; the simulator turns it on through a node's config (`[adversary]`) to
show that such nodes gain nothing. Each mode skips local training:

- replay: republish the merged model of the previous round (the average it received);
- stale: resend the round-0 model every round;
- zeros: all-zero parameters;
- noise: Gaussian noise with `noise_std`.
"""

import numpy as np

Params = dict[str, np.ndarray]


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
