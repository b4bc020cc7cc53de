"""Model zoo: small binary classifiers with a deterministic, seed-driven initialisation.

Every model maps a float32 batch of shape ``[N, n_features]`` to one logit per row, shape
``[N]``. Parameter names are stable because peers match tensors by name: ``linear.weight`` and
``linear.bias`` for ``logreg``; ``layers.<3k>.weight`` and ``layers.<3k>.bias`` for ``mlp``
(k = 0 .. number of hidden layers), whatever the dropout.
Initialisation uses a private `torch.Generator`, never the global RNG, so the same arguments
give a bit-identical ``state_dict`` in any thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

MODEL_NAMES = ("logreg", "mlp")


class SeededDropout(nn.Module):
    """Dropout that draws its mask from ``self.generator`` when set (see `train_local`).

    `torch.nn.Dropout` only uses the global RNG; this one lets training be reproducible from a
    seed without touching global state. With no generator it falls back to the global RNG.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _linear(n_in: int, n_out: int) -> nn.Linear:
    """An nn.Linear whose values `build_model` then draws from its own generator. Its default
    initialisation draws from the global RNG, whose state fork_rng puts back. (Not
    nn.utils.skip_init: its first use loads torch's Python reference ops, about 2 s of every
    node's start-up.)"""
    with torch.random.fork_rng(devices=[]):
        return nn.Linear(n_in, n_out)


class LogisticRegression(nn.Module):
    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = _linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class MLP(nn.Module):
    """ReLU hidden layers (optionally with dropout), then one output logit."""

    def __init__(self, n_features: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            # Dropout is always present (identity at p = 0) so names do not depend on it.
            layers += [_linear(width, h), nn.ReLU(), SeededDropout(dropout)]
            width = h
        layers.append(_linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    # PyTorch's default for nn.Linear, drawn from our generator: U(-1/sqrt(fan_in), +...).
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)


def build_model(
    name: str,
    n_features: int,
    hidden: Sequence[int] = (32,),
    seed: int = 0,
    dropout: float = 0.0,
) -> nn.Module:
    """Build model ``name`` (one of `MODEL_NAMES`); ``hidden`` and ``dropout`` are for ``mlp``."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if n_features < 1:
        raise ValueError(f"n_features must be at least 1, got {n_features}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    model: nn.Module
    if name == "logreg":
        model = LogisticRegression(n_features)
    else:
        hidden = tuple(hidden)
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"mlp needs at least one hidden layer of width >= 1, got {hidden}")
        model = MLP(n_features, hidden, dropout)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            _init_linear(module, generator)
    return model


def parameter_count(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
