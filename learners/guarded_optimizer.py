"""AdamW behind the stability guards: the one optimizer of every `Trainer` (see docs/numerics.md#guards).

One optimizer step is: gradient reduction (`reduce_gradients`, the only place gradients are
read) -> non-finite check -> loss and grad-norm spike checks -> global grad clip -> AdamW
step; or a skip, with gradients zeroed and parameters and optimizer state untouched, and
after too many skips in a row a rollback to the state `rollback_steps` (N) to 2N - 1 applied
steps back, with a reduced learning rate. Every action is counted (reported as `guard/<name>`).
Spike checks and rollback can be switched off (warm-up SFT): then they cost nothing, not even
the snapshot taken every N applied steps.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from .guards import RollbackGuard, SpikeDetector, clip_grad_norm, grad_norm, nonfinite_check
from .reduce import Communicator, TreeReducer
from .schedule import lr_multiplier

GUARD_COUNTERS = ("nonfinite", "spike_loss", "spike_grad", "grad_clipped", "rollbacks", "bad_trajectories")
"""Counters every trainer reports as guard/<name>; an objective may add its own after these."""


class GuardedOptimizer:
    """AdamW + spike detectors + rollback guard + counters for one model.

    `cfg` needs lr, betas, weight_decay, warmup_steps, schedule, schedule_steps, grad_clip, spike_window,
    spike_factor, spike_min_history, spike_floor, max_consecutive_skips, max_rollbacks,
    rollback_lr_factor and rollback_steps (`OptimizerGuardsConfig` and its subclasses have them). `spike_guard`
    False never consults the spike windows; `rollback` False never snapshots nor rolls back
    (a skipped step is then only skipped); `min_lr_ratio` is the schedule's floor. The schedule's horizon
    is `cfg.schedule_steps` when set (> 0), else `total_steps`.
    """

    def __init__(self, model: torch.nn.Module, cfg: Any, total_steps: int, extra_counters: Sequence[str] = (), *,
                 spike_guard: bool = True, rollback: bool = True, min_lr_ratio: float = 0.0,
                 comm: Communicator | None = None) -> None:
        """AdamW over the trainable parameters; counters GUARD_COUNTERS + extra_counters; `comm` the
        data-parallel group the gradients are reduced over (None: this process alone)."""
        self.model, self.cfg, self.total_steps = model, cfg, int(total_steps)
        self.schedule_steps = int(cfg.schedule_steps) or self.total_steps
        """Horizon of the lr schedule: cfg.schedule_steps, or (0) the trainer's total steps."""
        self.spike_guard, self.rollback_on, self.min_lr_ratio = bool(spike_guard), bool(rollback), float(min_lr_ratio)
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                           betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, foreach=False)
        self.spike_loss = SpikeDetector(cfg.spike_window, cfg.spike_factor, cfg.spike_min_history, cfg.spike_floor)
        self.spike_grad = SpikeDetector(cfg.spike_window, cfg.spike_factor, cfg.spike_min_history, cfg.spike_floor)
        self.rollback = RollbackGuard(cfg.max_consecutive_skips, cfg.max_rollbacks, cfg.rollback_lr_factor,
                                      cfg.rollback_steps)
        self.counters = {k: 0 for k in (*GUARD_COUNTERS, *extra_counters)}
        self.reducer = TreeReducer([p for g in self.optimizer.param_groups for p in g["params"]], comm)
        if self.rollback_on:
            self.rollback.start(model, self.optimizer)

    def lr_at(self, step: int) -> float:
        """lr of update `step`: base x schedule(step) x rollback scale."""
        c = self.cfg
        mult = lr_multiplier(step, warmup_steps=c.warmup_steps, total_steps=self.schedule_steps, schedule=c.schedule,
                             min_ratio=self.min_lr_ratio)
        return c.lr * mult * self.rollback.lr_scale

    def begin(self, step: int) -> float:
        """Set the lr for update `step` and zero the gradients; returns the lr."""
        lr = self.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=False)
        return lr

    def reduce_gradients(self) -> list[torch.nn.Parameter]:
        """The parameters whose accumulated `.grad` the step reads: every gradient read goes through here.

        An objective that accumulated through `self.reducer` (begin/add per micro-batch) gets its
        micro-batch gradients summed here in the fixed tree over micro-batch index, across the ranks
        of the group (learners/reduce.py), once per step, before any norm, check or clip sees them;
        every rank then holds the same bits. Otherwise (SFT, distillation) `.grad` is read as it is.
        """
        self.reducer.reduce()
        return self.reducer.params

    def step(self, loss: float, has_targets: bool, feeds_windows: bool = True) -> tuple[bool, float]:
        """Guarded AdamW step on the accumulated gradients. Returns (skipped, pre-clip grad norm).

        `has_targets` False (no trainable token) skips without counting: AdamW momentum alone
        would still move the weights. `feeds_windows` False (e.g. all advantages zero) keeps
        the value out of the spike windows.
        """
        params = self.reduce_gradients()
        gnorm = grad_norm(params)
        if not has_targets:
            self.optimizer.zero_grad(set_to_none=False)
            return True, gnorm
        skip = nonfinite_check(loss, gnorm, params)
        if skip:
            self.counters["nonfinite"] += 1
        elif feeds_windows and self.spike_guard:
            spike_l, spike_g = self.spike_loss.check(loss), self.spike_grad.check(gnorm)
            self.counters["spike_loss"] += int(spike_l)
            self.counters["spike_grad"] += int(spike_g)
            skip = spike_l or spike_g
        if skip:
            self.optimizer.zero_grad(set_to_none=False)
            if self.rollback_on and self.rollback.skipped(self.model, self.optimizer):
                self.counters["rollbacks"] += 1
            return True, gnorm
        if self.cfg.grad_clip > 0 and gnorm > self.cfg.grad_clip:
            self.counters["grad_clipped"] += 1
        clip_grad_norm(params, self.cfg.grad_clip)
        self.optimizer.step()
        if self.rollback_on:
            self.rollback.good(self.model, self.optimizer)
        return False, gnorm

    def metrics(self) -> dict[str, float]:
        """Cumulative counters plus the current skip streak and lr scale (un-prefixed names)."""
        out = {k: float(v) for k, v in self.counters.items()}
        out["consecutive_skips"] = float(self.rollback.consecutive)
        out["lr_scale"] = float(self.rollback.lr_scale)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, counters, spike windows and rollback state (tensors, numbers, lists, dicts)."""
        return {"optimizer": copy.deepcopy(self.optimizer.state_dict()), "counters": dict(self.counters),
                "spike_loss": self.spike_loss.state_dict(), "spike_grad": self.spike_grad.state_dict(),
                "rollback": self.rollback.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` (counters updated in place: owners share the dict)."""
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        for k in self.counters:
            self.counters[k] = int(state["counters"].get(k, 0))
        self.spike_loss.load_state_dict(state["spike_loss"])
        self.spike_grad.load_state_dict(state["spike_grad"])
        self.rollback.load_state_dict(state["rollback"])
