"""Record-level differential privacy for a node's local training: DP-SGD and its accounting.

Pure and synchronous, like `node.training`; Opacus does the privacy work. `plan_privacy` turns
the config's `[privacy]` section and the node's training shape into a `DPPlan` (noise
calibrated with Opacus when only a target epsilon is given); `train_private` runs one round of
DP-SGD with it (Poisson sampling, per-record clipping, Gaussian noise); a `PrivacyAccountant`
adds up what the rounds spent, refuses a round the budget cannot pay for, and goes into the
node's checkpoint so that a restarted node resumes its budget exactly.

One round of the plan is ``steps_per_round`` steps of the sampled Gaussian mechanism with
sample rate ``q`` and ``noise_multiplier``; the accountant's history holds
``(noise_multiplier, q, steps)`` as Opacus' own accountants do.
"""

from __future__ import annotations

import contextlib
import functools
import math
import secrets
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.accountants import IAccountant, RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from node.config import PrivacySection
from node.errors import CheckpointError, ConfigError
from node.models import SeededDropout
from node.training import TrainSettings, _mean_loss, _optimizer, _tensors

AccountantName = Literal["rdp", "prv", "gdp"]
ACCOUNTANT_NAMES: tuple[str, ...] = get_args(AccountantName)
# Opacus' calibration stops within this of the target (from below).
EPSILON_TOLERANCE = 0.01
# Attributes Opacus' GradSampleModule and DPOptimizer leave on modules and parameters.
_MODULE_LEFTOVERS = ("activations", "max_batch_len", "autograd_grad_sample_hooks")
_PARAM_LEFTOVERS = ("grad_sample", "summed_grad", "_forward_counter", "_current_grad_sample")


class PrivacyConfigError(ConfigError):
    """The `[privacy]` settings cannot be honoured with this node's data and training shape."""


@dataclass(frozen=True)
class DPPlan:
    """One node's DP-SGD settings for a run: what every round does and what it may spend.

    ``sample_rate`` is the Poisson sampling probability of a record in a step; a round is
    ``steps_per_round`` steps. ``budget`` is the run's epsilon at ``delta`` (None: unbounded,
    only accounted). ``n_train``, ``batch_size``, ``epochs`` and ``rounds`` are what the plan
    was made for (`train_private` checks the first three against its arguments).
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps_per_round: int
    delta: float
    accountant: AccountantName
    budget: float | None
    n_train: int
    batch_size: int
    epochs: int
    rounds: int

    @property
    def expected_batch_size(self) -> int:
        """q * n: what DP-SGD divides the noisy gradient sum by."""
        return min(self.batch_size, self.n_train)


def plan_privacy(
    section: PrivacySection, n_train: int, batch_size: int, epochs: int, rounds: int
) -> DPPlan:
    """The DP-SGD plan for ``rounds`` rounds of ``epochs`` epochs over ``n_train`` records.

    ``section`` must have DP on (`PrivacySection.dp`). With only ``target_epsilon`` the noise
    is calibrated (Opacus' `get_noise_multiplier`) so that the ``rounds`` rounds spend the
    target, within `EPSILON_TOLERANCE` below it. Raises `PrivacyConfigError` when epochs is 0,
    when delta is at least 1/n_train, when the target cannot be reached, or when a given
    noise_multiplier overspends the target in the first round already.
    """
    if not section.dp:
        raise ValueError("plan_privacy needs privacy.target_epsilon or privacy.noise_multiplier")
    if n_train < 1 or batch_size < 1 or rounds < 1 or epochs < 0:
        raise ValueError(
            f"expected n_train, batch_size, rounds >= 1 and epochs >= 0: n_train={n_train} "
            f"batch_size={batch_size} epochs={epochs} rounds={rounds}"
        )
    if epochs == 0:
        raise PrivacyConfigError(
            "training.epochs = 0 with DP-SGD on (privacy.target_epsilon or "
            "privacy.noise_multiplier set): a node that does not train on its records has "
            "nothing to privatize; set training.epochs >= 1, or turn DP-SGD off"
        )
    delta = _delta(section.delta, n_train)
    sample_rate = min(1.0, batch_size / n_train)
    steps_per_round = epochs * -(-n_train // batch_size)  # epochs * ceil(1/q)
    shape = (
        f"sample rate q = min(1, training.batch_size / n) = {batch_size}/{n_train} = "
        f"{sample_rate:.4g}, {rounds} rounds x {steps_per_round} steps = "
        f"{rounds * steps_per_round} steps (privacy.accountant = {section.accountant!r})"
    )
    if section.noise_multiplier is None:
        assert section.target_epsilon is not None  # section.dp
        noise = _calibrate(
            section.target_epsilon,
            delta,
            sample_rate,
            rounds * steps_per_round,
            section.accountant,
            shape,
        )
    else:
        noise = section.noise_multiplier
    plan = DPPlan(
        noise_multiplier=noise,
        max_grad_norm=section.max_grad_norm,
        sample_rate=sample_rate,
        steps_per_round=steps_per_round,
        delta=delta,
        accountant=section.accountant,
        budget=section.target_epsilon,
        n_train=n_train,
        batch_size=batch_size,
        epochs=epochs,
        rounds=rounds,
    )
    if section.noise_multiplier is not None and plan.budget is not None:
        first = PrivacyAccountant(plan.accountant, delta).after_round(plan)
        if first > plan.budget:
            raise PrivacyConfigError(
                f"privacy.noise_multiplier = {noise} spends epsilon {first:.4g} at delta "
                f"{delta:.3g} in the first round already, more than privacy.target_epsilon = "
                f"{plan.budget} ({shape}); use a larger noise_multiplier or target_epsilon, "
                "or leave noise_multiplier out to have it calibrated to the target"
            )
    return plan


def _delta(given: float | None, n_train: int) -> float:
    default = 1.0 / (10 * n_train)
    if given is None:
        return default
    if given >= 1.0 / n_train:
        raise PrivacyConfigError(
            f"privacy.delta = {given} is not below 1/n = 1/{n_train} = {1.0 / n_train:.4g} "
            f"(n = this node's training records): a delta that large allows leaking a whole "
            f"record outright (publishing one random record in full meets delta = 1/n); leave "
            f"privacy.delta unset for the default 1/(10 n) = {default:.4g}, or set one well "
            "below 1/n"
        )
    return given


def _calibrate(
    target: float, delta: float, sample_rate: float, steps: int, accountant: str, shape: str
) -> float:
    try:
        with _quiet_prv():
            noise = get_noise_multiplier(
                target_epsilon=target,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                epsilon_tolerance=EPSILON_TOLERANCE,
            )
        return float(noise)
    except ValueError as exc:  # "The privacy budget is too low." (or a numerical failure)
        raise PrivacyConfigError(
            f"privacy.target_epsilon = {target} cannot be reached at delta = {delta:.3g} with "
            f"{shape}: no noise multiplier is large enough ({exc}); use a larger "
            "privacy.target_epsilon or privacy.delta, fewer swarm.rounds or training.epochs, "
            "or a larger data set or smaller training.batch_size"
        ) from None


def _quiet_prv() -> contextlib.AbstractContextManager[Any]:
    # Opacus' PRV takes log(1 - q), -inf at q = 1, which it then masks out: a correct result
    # with numpy's divide-by-zero warning on every call. (numpy's error state is per thread.)
    return np.errstate(divide="ignore")


History = list[tuple[float, float, int]]


class PrivacyAccountant:
    """What the rounds have spent: an Opacus accountant of one kind at a fixed delta.

    Its history holds one ``(noise_multiplier, sample_rate, steps)`` entry per run of rounds
    with the same noise and sample rate (a round merges into the last entry when they match).
    One thread at a time: computing `after_round` briefly swaps the Opacus accountant's history.
    """

    def __init__(self, accountant: AccountantName, delta: float) -> None:
        if accountant not in ACCOUNTANT_NAMES:
            raise ValueError(f"unknown accountant {accountant!r}; one of {ACCOUNTANT_NAMES}")
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.accountant: AccountantName = accountant
        self.delta = delta
        self._opacus: IAccountant = create_accountant(mechanism=accountant)
        self._cache: tuple[tuple[tuple[float, float, int], ...], float] | None = None

    @classmethod
    def for_plan(cls, plan: DPPlan) -> PrivacyAccountant:
        return cls(plan.accountant, plan.delta)

    @property
    def history(self) -> tuple[tuple[float, float, int], ...]:
        return tuple(self._opacus.history)

    @property
    def steps(self) -> int:
        """Steps recorded so far."""
        return sum(steps for _, _, steps in self._opacus.history)

    def spent(self) -> float:
        """Epsilon at `delta` of the rounds recorded so far (0.0 before any)."""
        return self._epsilon(self._opacus.history)

    def after_round(self, plan: DPPlan) -> float:
        """Epsilon at `delta` if one more round of ``plan`` were recorded (none is)."""
        return self._epsilon(self._with_round(plan))

    def can_afford(self, plan: DPPlan) -> bool:
        """Whether one more round of ``plan`` stays within ``plan.budget`` (True without one)."""
        return plan.budget is None or self.after_round(plan) <= plan.budget

    def record_round(self, plan: DPPlan) -> None:
        """Add one round of ``plan``'s steps to the history."""
        self._opacus.history = self._with_round(plan)

    def to_state(self) -> dict[str, Any]:
        """A JSON-serializable state for the node's checkpoint (see `from_state`)."""
        return {
            "accountant": self.accountant,
            "delta": self.delta,
            "history": [[float(s), float(q), int(n)] for s, q, n in self._opacus.history],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PrivacyAccountant:
        """The accountant `to_state` saved; raises `CheckpointError` if it is malformed."""
        try:
            accountant, delta, raw = state["accountant"], state["delta"], state["history"]
            history = [_history_entry(entry) for entry in raw]
            if accountant not in ACCOUNTANT_NAMES or not isinstance(delta, float):
                raise ValueError(f"accountant {accountant!r}, delta {delta!r}")
            restored = cls(accountant, delta)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid privacy accountant state: {exc}") from None
        if accountant == "gdp" and len(history) > 1:
            raise CheckpointError("invalid privacy accountant state: gdp has one history entry")
        restored._opacus.history = history
        return restored

    def _with_round(self, plan: DPPlan) -> History:
        if (plan.accountant, plan.delta) != (self.accountant, self.delta):
            raise PrivacyConfigError(
                f"the privacy spent so far was accounted with privacy.accountant = "
                f"{self.accountant!r} at delta = {self.delta:.6g}, but this run's plan uses "
                f"{plan.accountant!r} at delta = {plan.delta:.6g} (a changed config or data "
                "set); restore the earlier privacy settings and data, or start the node afresh"
            )
        history: History = list(self._opacus.history)
        entry = (plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)
        if history and history[-1][:2] == entry[:2]:
            history[-1] = (entry[0], entry[1], history[-1][2] + entry[2])
        elif history and self.accountant == "gdp":
            raise PrivacyConfigError(
                "privacy.accountant = 'gdp' cannot compose rounds of different noise "
                f"multiplier or sample rate ({history[-1][:2]} then {entry[:2]}, e.g. after "
                "a change of config or data set); use 'rdp' or 'prv'"
            )
        else:
            history.append(entry)
        return history

    def _epsilon(self, history: Sequence[tuple[float, float, int]]) -> float:
        if not history:
            return 0.0
        key = tuple(history)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        if self.accountant == "rdp":
            epsilon = _rdp_epsilon(history, self.delta)
        else:
            saved = self._opacus.history
            self._opacus.history = list(history)
            try:
                with _quiet_prv():
                    epsilon = float(self._opacus.get_epsilon(delta=self.delta))
            finally:
                self._opacus.history = saved
        self._cache = (key, epsilon)
        return epsilon


@functools.lru_cache(maxsize=64)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """Opacus' RDP of one step at its default orders. Its RDP accountant computes
    compute_rdp(q, sigma, steps) = steps x this afresh on every call (a quarter of a second
    here), which a node asking every round would pay every round."""
    return np.asarray(
        rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
            orders=RDPAccountant.DEFAULT_ALPHAS,
        )
    )  # fmt: skip


def _rdp_epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """What Opacus' RDPAccountant.get_epsilon gives for `history`, from the cached per-step RDP
    (the same Opacus functions, composed the same way)."""
    rdp = sum(steps * _rdp_per_step(noise, rate) for noise, rate, steps in history)
    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": the bound is then looser than it could be,
        # never smaller than the truth; Opacus' own accountant says the same, once per call.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        epsilon, _ = rdp_analysis.get_privacy_spent(
            orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta
        )
    return float(epsilon)


def _history_entry(entry: Any) -> tuple[float, float, int]:
    noise, rate, steps = entry
    if not (
        isinstance(noise, float | int)
        and isinstance(rate, float | int)
        and isinstance(steps, int)
        and not isinstance(steps, bool)
        and math.isfinite(noise)
        and noise > 0
        and 0 < rate <= 1
        and steps >= 1
    ):
        raise ValueError(f"history entry {entry!r}")
    return float(noise), float(rate), steps


def train_private(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    settings: TrainSettings,
    plan: DPPlan,
    seed: int | None,
) -> float:
    """One round of DP-SGD on ``(x, y)``, in place on ``model``; the mean training loss seen.

    ``plan.steps_per_round`` steps, each on a Poisson sample of the rows (each row with
    probability ``plan.sample_rate``; an empty sample still takes a step of pure noise), with
    every record's gradient clipped to ``plan.max_grad_norm`` and Gaussian noise of std
    ``noise_multiplier * max_grad_norm`` added to the sum, divided by q * n (Opacus'
    `GradSampleModule` and `DPOptimizer`). The optimizer (SGD or Adam from ``settings``) is fresh
    each call; ``settings.epochs`` and ``batch_size`` must be the plan's. ``model`` comes back a
    plain module: same parameter objects and names, no Opacus hooks or attributes.

    Randomness (sampling, dropout masks, noise) comes from one generator seeded with ``seed``,
    so the same seed, model and data give bit-identical results; the global RNG is untouched.
    A known seed makes the noise and the sampling known, and the guarantee then holds only
    against whoever cannot learn the seed: pass ``seed=None`` outside tests and simulations
    for a seed drawn from the OS's entropy (not reproducible). Either way the generator is
    torch's Mersenne Twister, not a cryptographic one (Opacus' secure_mode is off).

    The returned loss is the mean per-record loss over the sampled batches (if no record was
    sampled at all, the model's loss on ``(x, y)`` after the round). It is computed on the raw
    records and is not private: keep it local.
    """
    xt, yt = _tensors(x, y)
    n = xt.shape[0]
    if (n, settings.batch_size, settings.epochs) != (plan.n_train, plan.batch_size, plan.epochs):
        raise ValueError(
            f"the plan is for n={plan.n_train} rows, batch_size={plan.batch_size}, "
            f"epochs={plan.epochs}; got n={n}, batch_size={settings.batch_size}, "
            f"epochs={settings.epochs}"
        )
    generator = torch.Generator().manual_seed(secrets.randbits(64) if seed is None else seed)
    sampler = UniformWithReplacementSampler(
        num_samples=n,
        sample_rate=plan.sample_rate,
        generator=generator,
        steps=plan.steps_per_round,
    )
    dropouts = [m for m in model.modules() if isinstance(m, SeededDropout)]
    was_training = model.training
    total, seen = 0.0, 0
    wrapped = GradSampleModule(model, loss_reduction="sum")
    try:
        optimizer = DPOptimizer(
            _optimizer(model, settings),
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            expected_batch_size=plan.expected_batch_size,
            generator=generator,
        )
        model.train()
        for d in dropouts:
            d.generator = generator
        for rows in sampler:
            idx = torch.tensor(rows, dtype=torch.long)
            optimizer.zero_grad(set_to_none=True)
            # The input requires grad only so that torch's full backward hooks (which compute
            # the per-sample gradients) have an input to see; else torch warns.
            xb = xt[idx].requires_grad_(True)
            # Summed: per-sample gradients are the records' own; an empty batch sums to 0.
            loss = nn.functional.binary_cross_entropy_with_logits(
                wrapped(xb), yt[idx], reduction="sum"
            )
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            seen += len(rows)
    finally:
        for d in dropouts:
            d.generator = None
        wrapped.to_standard_module()
        _strip_opacus(model)
        model.train(was_training)
    return total / seen if seen else _mean_loss(model, xt, yt)


def _strip_opacus(model: nn.Module) -> None:
    for module in model.modules():
        for attr in _MODULE_LEFTOVERS:
            if attr in module.__dict__:
                delattr(module, attr)
    for p in model.parameters():
        p.grad = None
        for attr in _PARAM_LEFTOVERS:
            if hasattr(p, attr):
                delattr(p, attr)
