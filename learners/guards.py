"""Numerical-stability guards (docs/numerics.md#guards), each a named function or class that counts its actions.

- `nonfinite_check`: a non-finite loss or gradient norm zeroes the gradients and vetoes
  the optimizer step, so parameters and optimizer state stay bitwise unchanged.
- `clip_grad_norm`: global float32 norm, g <- g * min(1, c / (|g| + 1e-6)); returns the
  pre-clip norm.
- `SpikeDetector`: flags a value far above the robust scale of a window of recent finite
  values (a robust variant of Megatron-LM's spike check, see the class docstring).
- `RollbackGuard`: after too many skipped steps in a row, restore the model and optimizer state
  from `rollback_steps` (N) to 2N - 1 applied steps back and shrink the lr; after too many rollbacks,
  raise `TrainingDivergedError`.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable

import torch

from .trainable import trainable_state

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """Raised when rollbacks to an earlier state no longer help."""


def nonfinite_check(loss: float, grad_norm: float, params: Iterable[torch.nn.Parameter]) -> bool:
    """Return True (skip the step) when `loss` or `grad_norm` is NaN/Inf, after zeroing every gradient.

    The caller must then not call `optimizer.step()`: AdamW would still move the
    parameters (momentum, weight decay) even with zero gradients.
    """
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return False
    for p in params:
        if p.grad is not None:
            p.grad.zero_()
    log.warning("non-finite loss (%s) or grad norm (%s): step skipped", loss, grad_norm)
    return True


def grad_norm(params: Iterable[torch.nn.Parameter]) -> float:
    """Global L2 norm of the gradients, reduced in float32 in parameter order."""
    norms = [p.grad.detach().float().norm(2) for p in params if p.grad is not None]
    if not norms:
        return 0.0
    return float(torch.stack(norms).norm(2))


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float) -> float:
    """Scale gradients by min(1, max_norm / (norm + 1e-6)) and return the pre-clip norm.

    A non-finite norm leaves the gradients alone (the non-finite guard deals with it);
    `max_norm <= 0` disables clipping.
    """
    params = [p for p in params if p.grad is not None]
    total = grad_norm(params)
    if max_norm > 0 and math.isfinite(total):
        coef = min(1.0, max_norm / (total + 1e-6))
        if coef < 1.0:
            for p in params:
                p.grad.mul_(coef)
    return total


class SpikeDetector:
    """Robust spike test over the last `window` finite values.

    Rule: with at least `min_history` values in the window, x is a spike when
    |x| > factor * max(|median|, 1.4826 * MAD, floor) (lower medians, as torch.median; MAD = median absolute
    deviation, so
    1.4826 * MAD estimates a standard deviation). The |median| term makes it Megatron's
    "10x the usual size" test for positive quantities (grad norm); the MAD term keeps a loss
    that fluctuates around 0 from being flagged for ordinary noise. Every finite value,
    flagged or not, enters the window; the median and MAD ignore one outlier, so a single
    spike is flagged exactly once.
    """

    def __init__(self, window: int, factor: float, min_history: int = 5, floor: float = 1e-6) -> None:
        """Empty window."""
        self.window, self.factor, self.min_history, self.floor = window, factor, min_history, floor
        self.values: list[float] = []
        self.flagged = 0

    def threshold(self) -> float:
        """Current threshold on |x| (inf while the window is too short)."""
        if len(self.values) < self.min_history:
            return math.inf
        v = torch.tensor(self.values, dtype=torch.float64)
        med = v.median()
        mad = (v - med).abs().median()
        return self.factor * max(abs(float(med)), 1.4826 * float(mad), self.floor)

    def check(self, x: float) -> bool:
        """True when `x` is a spike; finite values are then added to the window."""
        if not math.isfinite(x):
            return False
        spike = abs(x) > self.threshold()
        if spike:
            self.flagged += 1
            log.warning("spike: %.6g above threshold %.6g", x, self.threshold())
        self.values = (self.values + [float(x)])[-self.window :]
        return spike

    def state_dict(self) -> dict:
        """Window values and the flag count."""
        return {"values": list(self.values), "flagged": int(self.flagged)}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`."""
        self.values = [float(x) for x in state["values"]]
        self.flagged = int(state["flagged"])


class RollbackGuard:
    """Roll back the model + optimizer state `steps` (N) or more applied steps after repeated skipped steps.

    It keeps the state at its start and after every N-th applied step since, the newest two (`older`,
    `newer`; `since` counts applied steps after `newer`). After `max_consecutive_skips` skips in a row it
    restores `older`: the state before the last n applied steps, N <= n <= 2N - 1 (n = N + since). When
    fewer than N steps were applied since the start there is no `older`, and it restores the start (n < N).
    The restored state becomes the new start, so a later rollback never goes past it. Skipped steps change
    nothing and count for nothing. Each rollback multiplies `lr_scale` by `lr_factor` and restarts the
    streak; at most `max_rollbacks` happen, the next one that would be needed raises `TrainingDivergedError`.

    Only model and optimizer state go back: the step counter (so the lr schedule), the spike windows and
    the objective's state do not. Cost: two copies of model + optimizer state held (and checkpointed: a
    rollback after a resume must equal one without), one copy made every N applied steps.

    `max_rollbacks` 0 keeps no snapshot at all (a streak of skips stops the run at once): a large model's
    checkpoints then hold its weights and AdamW state only, not three copies of them.

    Call `start(model, optimizer)` once before training, `good(...)` after every applied step and
    `skipped(...)` after every skipped one.
    """

    def __init__(self, max_consecutive_skips: int, max_rollbacks: int, lr_factor: float, steps: int = 1) -> None:
        """No snapshot yet; call `start` once before training."""
        if steps < 1:
            raise ValueError(f"rollback steps: expected a positive integer, got {steps}")
        self.max_consecutive_skips, self.max_rollbacks, self.lr_factor = max_consecutive_skips, max_rollbacks, lr_factor
        self.steps = int(steps)
        self.consecutive = 0
        self.rollbacks = 0
        self.lr_scale = 1.0
        self.since = 0
        self.newer: dict | None = None
        self.older: dict | None = None

    @staticmethod
    def _copy(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """Detached copies of the optimizer's state dict and of what training changes in the model (its whole
        state dict, or a LoRA model's adapter alone: `trainable_state`)."""
        return {"model": {k: v.clone() for k, v in trainable_state(model).items()},
                "optimizer": copy.deepcopy(optimizer.state_dict())}

    def start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Record the starting state (the oldest a rollback can restore); nothing when no rollback may happen."""
        if self.max_rollbacks == 0:
            return
        self.newer, self.older, self.since = self._copy(model, optimizer), None, 0

    def good(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Record an applied step: reset the streak; every N-th applied step, the current state becomes `newer`."""
        self.consecutive = 0
        if self.max_rollbacks == 0:  # no rollback may happen: no snapshot to keep
            return
        if self.newer is None:  # no start recorded: this state is the start
            self.start(model, optimizer)
            return
        self.since += 1
        if self.since >= self.steps:
            self.older, self.newer, self.since = self.newer, self._copy(model, optimizer), 0

    def skipped(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        """Record a skipped step; returns True when it triggered a rollback."""
        self.consecutive += 1
        if self.consecutive < self.max_consecutive_skips:
            return False
        if self.rollbacks >= self.max_rollbacks:
            raise TrainingDivergedError(
                f"training diverged: {self.consecutive} consecutive skipped steps "
                f"(non-finite or spiking loss/grad norm) "
                f"after {self.rollbacks} rollbacks to an earlier state (max_rollbacks={self.max_rollbacks}, "
                f"lr scale now {self.lr_scale:g}); lower the learning rate or inspect the last rollouts"
            )
        if self.newer is None:
            raise TrainingDivergedError("rollback needed but no good state was ever recorded")
        target = self.older if self.older is not None else self.newer
        back = self.since + (self.steps if self.older is not None else 0)
        with torch.no_grad():
            own = model.state_dict()
            for k, v in target["model"].items():
                own[k].copy_(v)
        optimizer.load_state_dict(copy.deepcopy(target["optimizer"]))
        self.newer, self.older, self.since = target, None, 0  # never mutated in place: sharing is safe
        self.rollbacks += 1
        self.lr_scale *= self.lr_factor
        self.consecutive = 0
        log.warning("rollback %d/%d to the state %d applied steps back; lr scale %g", self.rollbacks,
                    self.max_rollbacks, back, self.lr_scale)
        return True

    def state_dict(self) -> dict:
        """Counters, lr scale, applied steps since `newer`, and both snapshots (tensors and optimizer state dicts)."""
        return {"consecutive": self.consecutive, "rollbacks": self.rollbacks, "lr_scale": float(self.lr_scale),
                "since": self.since, "newer": self.newer, "older": self.older}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` (snapshots copied, not aliased). A state saved before `rollback_steps`
        existed holds one `snapshot` (the state after its last applied step): it becomes the start."""
        self.consecutive = int(state["consecutive"])
        self.rollbacks = int(state["rollbacks"])
        self.lr_scale = float(state["lr_scale"])
        if "newer" not in state:
            self.newer, self.older, self.since = _copied(state["snapshot"]), None, 0
            return
        self.since = int(state["since"])
        self.newer, self.older = _copied(state["newer"]), _copied(state["older"])


def _copied(snap: dict | None) -> dict | None:
    """A snapshot's copy (tensors cloned, optimizer state deep-copied), or None."""
    if snap is None:
        return None
    return {"model": {k: v.detach().clone() for k, v in snap["model"].items()},
            "optimizer": copy.deepcopy(snap["optimizer"])}
