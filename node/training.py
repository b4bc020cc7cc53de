"""Local training and evaluation of a binary classifier on standardized features.

Pure and synchronous: the node runs `train_local` in a worker thread. Thread count
(`torch.set_num_threads`) is the caller's business.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from node.direct_sgd import DirectSGD, linear_layers
from node.models import SeededDropout
from node.params import load_params


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: Literal["sgd", "adam"] = "sgd"
    # FedProx: mu / 2 * ||w - w_start||^2 added to each minibatch's loss, w_start the model the
    # call began from (the round's merge), so a site's update cannot drift far from it.
    prox_mu: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not self.prox_mu >= 0:
            raise ValueError(f"prox_mu must be >= 0, got {self.prox_mu}")


@dataclass(frozen=True)
class EvalResult:
    """Accuracy at logit 0 (probability 0.5), ROC AUC (None with one class), mean BCE loss."""

    accuracy: float
    auc: float | None
    loss: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_seed(seed: int, round_index: int) -> int:
    """The seed for `train_local` in round ``round_index`` of a run seeded with ``seed``."""
    return seed * 100_003 + round_index


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    xa = np.asarray(x, dtype=np.float32)
    ya = np.asarray(y)
    if xa.ndim != 2 or ya.shape != (xa.shape[0],):
        raise ValueError(f"expected x of shape (n, d) and y of shape (n,): {xa.shape} {ya.shape}")
    if xa.shape[0] == 0:
        raise ValueError("no rows")
    if not np.isfinite(xa).all():
        raise ValueError("x has NaN or infinite values; transform it with the Scaler first")
    if not ((ya == 0) | (ya == 1)).all():  # np.isin sorts: a visible cost every round
        raise ValueError("y must be 0/1")
    return torch.from_numpy(xa), torch.from_numpy(ya.astype(np.float32))


def _optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


class PlainSGD:
    """torch.optim.SGD's update (weight decay, then momentum without dampening or Nesterov)
    for `train_local`. Why not torch.optim: its first use imports torch._dynamo and sympy,
    about 80 MB and most of a second in every process that trains, which is most of a node's
    start-up and of a shared simulation process's memory. A unit test holds it equal to
    torch.optim.SGD; Adam, and DP-SGD's optimizer (Opacus wraps a torch.optim one), still
    use torch.optim."""

    def __init__(self, model: nn.Module, settings: TrainSettings) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.lr, self.momentum, self.decay = settings.lr, settings.momentum, settings.weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad.add(p, alpha=self.decay) if self.decay else p.grad
            if self.momentum:
                buffer = self.buffers[i]
                if buffer is None:
                    buffer = self.buffers[i] = grad.clone()
                else:
                    buffer.mul_(self.momentum).add_(grad)
                grad = buffer
            p.add_(grad, alpha=-self.lr)


def _mean_loss(model: nn.Module, xt: torch.Tensor, yt: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float(nn.functional.binary_cross_entropy_with_logits(model(xt), yt))
    finally:
        model.train(was_training)


def _proximal_term(model: nn.Module, mu: float) -> Callable[[], torch.Tensor] | None:
    """FedProx's mu / 2 * ||w - w_start||^2 over the trainable parameters, w_start their values
    now (None for mu = 0: no term, the same steps bit for bit as without it)."""
    if mu == 0:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]

    def term() -> torch.Tensor:
        squared = torch.stack([((p - s) ** 2).sum() for p, s in zip(params, start, strict=True)])
        return (mu / 2) * squared.sum()

    return term


def train_local(
    model: nn.Module, x: np.ndarray, y: np.ndarray, settings: TrainSettings, seed: int
) -> float:
    """Train in place for ``settings.epochs`` epochs of shuffled minibatches; mean train loss.

    The returned loss is the sample-weighted mean of the minibatch losses seen while training.
    With ``epochs = 0`` nothing changes and the current loss on ``(x, y)`` is returned. Each
    call makes a fresh optimizer (no momentum or Adam state carries over between rounds).
    Shuffling and dropout masks come from a generator seeded with ``seed``. With
    ``settings.prox_mu > 0`` each step also pulls towards the parameters the call began with
    (FedProx's proximal term); the returned loss is still the data's alone.
    """
    xt, yt = _tensors(x, y)
    if settings.epochs == 0:
        return _mean_loss(model, xt, yt)
    generator = torch.Generator().manual_seed(seed)
    # The written-out backward has no proximal term: FedProx keeps autograd.
    plain = settings.optimizer == "sgd" and not settings.prox_mu
    layers = linear_layers(model) if plain else None
    direct = layers and DirectSGD(layers, settings.lr, settings.momentum, settings.weight_decay)
    dropouts = [m for m in model.modules() if isinstance(m, SeededDropout)]
    optimizer: PlainSGD | torch.optim.Optimizer = (
        PlainSGD(model, settings) if settings.optimizer == "sgd" else _optimizer(model, settings)
    )
    loss_fn = nn.BCEWithLogitsLoss()
    proximal = _proximal_term(model, settings.prox_mu)
    n = xt.shape[0]
    total, seen = torch.zeros((), dtype=torch.float64), 0
    was_training = model.training
    model.train()
    for d in dropouts:
        d.generator = generator
    try:
        for _ in range(settings.epochs):
            # One gather per epoch, then each minibatch is a view: the same rows in the same
            # order as indexing per batch, at a fraction of the per-step cost.
            order = torch.randperm(n, generator=generator)
            xs, ys = xt[order], yt[order]
            for start in range(0, n, settings.batch_size):
                xb, yb = (
                    xs[start : start + settings.batch_size],
                    ys[start : start + settings.batch_size],
                )
                if direct:
                    total += direct.step(xb, yb)
                else:
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(model(xb), yb)
                    (loss if proximal is None else loss + proximal()).backward()
                    optimizer.step()
                    total += loss.detach() * len(yb)
                seen += len(yb)
    finally:
        for d in dropouts:
            d.generator = None
        model.train(was_training)
    return float(total) / seen


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None with a single class."""
    y = np.asarray(y)
    score = np.asarray(score, dtype=np.float64)
    n_pos = int((y == 1).sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    # Average 1-based ranks over runs of tied scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(score)]
    ranks = np.empty(len(score))
    ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


EVAL_ROWS = 4096  # rows per forward pass when scoring


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> EvalResult:
    """Accuracy, ROC AUC and mean BCE loss of ``model`` on ``(x, y)``, in eval mode."""
    xt, yt = _tensors(x, y)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # In slices: a common test set of 20,000 rows would otherwise take a fresh 5 MB
            # of activations per layer, per node, per round.
            logits = torch.cat([model(part) for part in torch.split(xt, EVAL_ROWS)])
            loss = float(nn.functional.binary_cross_entropy_with_logits(logits, yt))
    finally:
        model.train(was_training)
    scores = logits.numpy().astype(np.float64)
    labels = np.asarray(y).astype(np.int64)
    accuracy = float(((scores > 0).astype(np.int64) == labels).mean())
    return EvalResult(accuracy=accuracy, auc=roc_auc(labels, scores), loss=loss, n=len(labels))


def loss_meter(
    model: nn.Module, x: np.ndarray, y: np.ndarray, seed: int = 0
) -> Callable[[dict[str, np.ndarray]], float]:
    """A model's mean BCE loss on up to EVAL_ROWS of ``(x, y)`` (a seeded sample when there
    are more), for given parameters: what the `ubar` merge screens a neighbour's model with.
    Works on its own copy of ``model``, which the caller's training never sees."""
    if len(y) > EVAL_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(len(y), EVAL_ROWS, replace=False))
        x, y = x[rows], y[rows]
    scratch = copy.deepcopy(model)
    xt, yt = _tensors(x, y)

    def loss(params: dict[str, np.ndarray]) -> float:
        load_params(scratch, params)
        return _mean_loss(scratch, xt, yt)

    return loss
