"""SGD on the model zoo's MLP and logistic regression with the backward pass written out.

Why: at the sizes hospitals and the simulator train (a 64-64 MLP, batches of 32), a step of
torch's eager autograd is about 160 us, almost all of it per-op dispatch and graph bookkeeping;
the same step as a dozen plain tensor ops is about 60 us. Training is most of a simulated
round, so this is most of what a swarm of 20 sites on 2 cores waits for.

Only for what it computes exactly: ReLU layers, no dropout, BCE-with-logits, SGD with
optional momentum and weight decay (torch.optim.SGD's update, as `PlainSGD`). `train_local`
uses it when `applies` says so and autograd otherwise; a unit test holds the two equal.
"""

from __future__ import annotations

import torch
from torch import nn

from node.models import MLP, LogisticRegression, SeededDropout


def linear_layers(model: nn.Module) -> list[nn.Linear] | None:
    """The model's linear layers in order, when it is one this module trains; else None."""
    if isinstance(model, LogisticRegression):
        return [model.linear]
    if not isinstance(model, MLP):
        return None
    if any(isinstance(m, SeededDropout) and m.p > 0 for m in model.modules()):
        return None
    layers = [m for m in model.layers if isinstance(m, nn.Linear)]
    return layers if all(p.requires_grad for p in model.parameters()) else None


class DirectSGD:
    """One minibatch step at a time: forward, the written-out backward, the SGD update."""

    def __init__(
        self, layers: list[nn.Linear], lr: float, momentum: float, weight_decay: float
    ) -> None:
        self.weights = [layer.weight.detach() for layer in layers]
        self.biases = [layer.bias.detach() for layer in layers]
        self.params = [p for pair in zip(self.weights, self.biases, strict=True) for p in pair]
        self.lr, self.momentum, self.decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor] | None = None

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Train on one minibatch; its summed BCE loss (a 0-d tensor, not synced)."""
        inputs = [x]  # each layer's input: x, then the ReLU outputs
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            inputs.append(torch.addmm(b, inputs[-1], w.t()).relu_())
        logits = torch.addmm(self.biases[-1], inputs[-1], self.weights[-1].t()).squeeze(1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
        # d(mean loss)/d(logit) = (sigmoid(logit) - y) / batch
        grad = logits.sigmoid().sub_(y).div_(len(y)).unsqueeze(1)
        grads: list[torch.Tensor] = []
        for i in range(len(self.weights) - 1, -1, -1):
            grads += [grad.sum(0), grad.t().mm(inputs[i])]  # bias, weight (reversed below)
            if i:  # through the ReLU: its output is positive exactly where its input was
                grad = torch.ops.aten.threshold_backward(grad.mm(self.weights[i]), inputs[i], 0)
        grads.reverse()
        self._update(grads)
        return loss

    def _update(self, grads: list[torch.Tensor]) -> None:
        # torch.optim.SGD's order: weight decay into the gradient, then momentum, then the step.
        if self.decay:
            torch._foreach_add_(grads, self.params, alpha=self.decay)
        if self.momentum:
            if self.buffers is None:
                self.buffers = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads)
            grads = self.buffers
        torch._foreach_add_(self.params, grads, alpha=-self.lr)
