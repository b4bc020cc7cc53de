"""Personalization (`swarm.personalize`): the part of the model a hospital keeps to itself.

A personalized node trains its whole model on its own rows, as every node does, but publishes
and merges only the shared part; the local part, the output layer's bias (`bias`) or the whole
output layer (`head`), is never sent and stays what the node's own training made it. Under
label shift (one hospital's patients mostly sick, another's mostly not) a site's own bias moves
its decision threshold to its prevalence, which the shared features cannot (docs/heterogeneity.md).
"""

from collections.abc import Mapping

from torch import nn

from node.params import Params


def local_names(model: nn.Module, mode: str) -> tuple[str, ...]:
    """The names of the parameters `mode` keeps local: none, the last linear layer's bias, or
    its weight and bias."""
    if mode == "none":
        return ()
    if mode not in ("bias", "head"):
        raise ValueError(f"personalize must be 'none', 'bias' or 'head', got {mode!r}")
    output = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]
    return (f"{output}.bias",) if mode == "bias" else (f"{output}.weight", f"{output}.bias")


def shared_part(params: Params, local: tuple[str, ...]) -> Params:
    """What the node publishes: `params` without the local names (`params` itself with none)."""
    if not local:
        return params
    return {k: v for k, v in params.items() if k not in local}


def local_part(params: Params, local: tuple[str, ...]) -> Params:
    """The local names' tensors of `params`."""
    return {k: params[k] for k in local}


def joined(shared: Params, kept: Params, like: Mapping[str, object]) -> Params:
    """The whole model from its shared part and the local part `kept`, in `like`'s tensor order
    (`shared` itself without a local part)."""
    if not kept:
        return shared
    return {k: kept[k] if k in kept else shared[k] for k in like}
