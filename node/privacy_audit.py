"""Membership inference against a published model: how well can a curious neighbour tell a
hospital's training records from its held-out ones, given the model it received?

- `loss` (Yeom et al., 2018): a record the model was trained on tends to have a lower loss.
  The attack's score is minus the record's loss; its AUC over members and non-members is the
  attack's success over every threshold (0.5: no better than a coin).
- `calibrated` (Watson et al., 2022, difficulty calibration): minus the record's loss under
  the target model plus its loss under a reference model the attacker holds and that was not
  trained on the record (the neighbour's own model of the same round), which removes how hard
  a record is anyway and leaves what training on it changed.

`membership_attack` is pure: parameters and rows in, numbers out. `audit_node` reads a node's
output folder as the simulator leaves it (its published models, its scaler) and its records,
split as the node split them.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file
from torch import nn

from node.config import NodeConfig
from node.dataset import load_schema, load_table, split_validation
from node.models import build_model
from node.params import Params, load_params
from node.scaling import Scaler
from node.training import roc_auc


@dataclass(frozen=True)
class AttackResult:
    auc: float | None  # the loss-threshold attack (None: no members or no non-members)
    calibrated_auc: float | None  # with the reference model (None without one)
    members: int
    non_members: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_losses(
    model_name: str, hidden: list[int], params: Params, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Per-record binary cross-entropy of the model with `params` on standardized rows."""
    model = build_model(model_name, x.shape[1], hidden)
    load_params(model, params)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.asarray(x, np.float32)))
        target = torch.from_numpy(np.asarray(y, np.float32))
        losses = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return losses.numpy().astype(np.float64)


def membership_attack(
    model_name: str,
    hidden: list[int],
    target: Params,
    members: tuple[np.ndarray, np.ndarray],
    non_members: tuple[np.ndarray, np.ndarray],
    reference: Params | None = None,
) -> AttackResult:
    """Both attacks on `target`: `members` are (x, y) of the training records, `non_members`
    the held-out ones (standardized as the model saw them)."""
    (xm, ym), (xn, yn) = members, non_members
    labels = np.concatenate([np.ones(len(ym)), np.zeros(len(yn))]).astype(np.int64)
    losses = np.concatenate([
        record_losses(model_name, hidden, target, xm, ym),
        record_losses(model_name, hidden, target, xn, yn),
    ])  # fmt: skip
    calibrated = None
    if reference is not None:
        baseline = np.concatenate([
            record_losses(model_name, hidden, reference, xm, ym),
            record_losses(model_name, hidden, reference, xn, yn),
        ])  # fmt: skip
        calibrated = roc_auc(labels, baseline - losses)
    return AttackResult(roc_auc(labels, -losses), calibrated, len(ym), len(yn))


def published_models(output_dir: Path) -> dict[int, Path]:
    """The model files a node published, by round (node.keep_models)."""
    found = {}
    for path in (output_dir / "models").glob("round-*.safetensors"):
        found[int(path.stem.split("-")[1])] = path
    return found


# Why there is no attack on a node that holds no records out (validation_fraction = 0). The
# common test set is no stand-in: it is not drawn from the node's own records, so the attack
# would tell the two distributions apart rather than members from non-members.
NO_HELD_OUT = (
    "no validation split (data.validation_fraction = 0): no held-out records of this hospital "
    "to tell its training records from"
)


def audit_node(target: NodeConfig, neighbour: NodeConfig | None) -> dict[str, Any] | None:
    """The attacks on the last model `target` published, by `neighbour` (which holds it and,
    as reference, its own model of that round): None if the node kept no models; with no
    AUCs and `skipped` saying why if it held no records out."""
    models = published_models(target.node.output_dir)
    if not models:
        return None
    last = max(models)
    if target.data.validation_fraction == 0:
        return {"round": last, "auc": None, "calibrated_auc": None, "skipped": NO_HELD_OUT}
    split = split_validation(
        load_table(target.data.path, load_schema(target.data.schema_file)),
        target.data.validation_fraction,
        target.data.split_seed,
    )
    scaler = Scaler.from_dict(json.loads((target.node.output_dir / "scaler.json").read_text()))
    reference = None
    if neighbour is not None:
        theirs = published_models(neighbour.node.output_dir)
        if last in theirs:
            reference = load_file(str(theirs[last]))
    result = membership_attack(
        target.model.name,
        list(target.model.hidden),
        load_file(str(models[last])),
        (scaler.transform(split.train_x), split.train_y),
        (scaler.transform(split.val_x), split.val_y),
        reference,
    )
    return {"round": last, **result.to_dict()}
