"""A model's parameters as numpy arrays, and what a node knows of a neighbour's.

The one shape shared by the runner (what arrived), the contribution scorer (the players) and
the merge rules (what is combined).
"""

from dataclasses import dataclass

import numpy as np
import torch

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class Neighbour:
    """A neighbour's parameters for a round and the facts it claims with them."""

    peer: str
    params: Params
    samples: int  # its training rows (the merge and the scorer weigh by them)
    degree: int  # its configured neighbour count this round (the weights need it)
    # Its closed neighbourhood's sample count this round, n_j + its partners' n (the
    # `neighbourhood` weights need it); 0 while it does not know all its partners' counts yet.
    mass: int = 0


def model_params(model: torch.nn.Module) -> Params:
    """A copy of the model's state as numpy arrays (the model may keep training)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_params(model: torch.nn.Module, params: Params) -> None:
    """Load numpy parameters into the model (copied: read-only arrays, e.g. off the wire, are
    fine)."""
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})


def flatten(params: Params) -> np.ndarray:
    """Every tensor's values, in the model's tensor order, as one float64 vector: what secure
    aggregation masks (both ends share the model, hence the order)."""
    return np.concatenate([np.asarray(t, np.float64).ravel() for t in params.values()])


def unflatten(values: np.ndarray, like: Params) -> Params:
    """`flatten`'s inverse: `values` cut into `like`'s tensors (names, shapes, dtypes, order)."""
    if values.size != size_of(like):
        raise ValueError(f"{values.size} values for a model of {size_of(like)}")
    out, start = {}, 0
    for name, tensor in like.items():
        shape = np.shape(tensor)
        end = start + int(np.prod(shape, dtype=np.int64))
        out[name] = values[start:end].reshape(shape).astype(np.asarray(tensor).dtype)
        start = end
    return out


def size_of(params: Params) -> int:
    return sum(int(np.asarray(t).size) for t in params.values())
