"""One trainer for every update of the project: an objective + a `GuardedOptimizer`.

Usage::

    trainer = rl_trainer(model, cfg.learner, temperature=0.8, total_steps=200, pad_id=tok.pad_token_id)
    metrics = trainer.update(trajectories)                 # flat dict: loss, reward_mean, ..., guard/<name>
    pool.set_weights(trainer.weights())
    torch.save(trainer.state_dict(), path)                 # load with torch.load(path, weights_only=True)

    warm = sft_trainer(model, cfg.warmup, seed=cfg.run.seed, pad_id=tok.pad_token_id)
    losses = warm.run(lambda k: demos_for_step(k))         # a pure function of the step, so it resumes

    distiller, on_mode, off_mode = distill_trainer(student, teacher, dcfg, pad_id=pad, total_steps=40)
    metrics = distiller.update(student_trajs, on_mode)     # DistillMode.REVERSE or .SAMPLED

The objective turns a batch into gradients and metrics and calls the optimizer's guarded step;
the trainer owns the step counter, the weights and the checkpoint state
{"model", optimizer/guard state, "step", objective state}.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import torch

from steprl.rollout.trajectory import LogitFilter

from .config import DistillLearnerConfig, LearnerConfig, OptimizerGuardsConfig, WarmupConfig
from .guarded_optimizer import GuardedOptimizer
from .kl_objectives import DistillMethod, DistillMode, DistillRouteError, ExactKL, SampledKL, distill_modes
from .policy_gradient import PolicyGradient
from .reduce import Communicator
from .sft import MIN_LR_RATIO, SFTObjective
from .trainable import trainable_state

log = logging.getLogger(__name__)

__all__ = ["DistillMethod", "DistillMode", "DistillRouteError", "Objective", "Trainer", "copy_weights",
           "distill_trainer", "rl_trainer", "sft_trainer", "trainable_state"]


class Objective(Protocol):
    """What a `Trainer` drives: gradients + one guarded step per `update`, metrics without guard/ entries."""

    counters: tuple[str, ...]
    """Guard counters of its own, reported after GUARD_COUNTERS."""

    def update(self, opt: GuardedOptimizer, step: int, *args: Any, **kwargs: Any) -> dict[str, float]:
        """One update at trainer step `step` through `opt`."""
        ...

    def state_dict(self) -> dict:
        """Objective state for a bit-exact resume (merged into the trainer's state dict)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` from the trainer's state dict."""
        ...


class Trainer:
    """An objective trained on `model` through a `GuardedOptimizer` (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, objective: Objective, optimizer: GuardedOptimizer) -> None:
        """`optimizer` must optimise `model`'s parameters."""
        self.model, self.objective, self.guard = model, objective, optimizer
        self.optimizer, self.counters = optimizer.optimizer, optimizer.counters  # shared objects
        self.step = 0

    def current_lr(self) -> float:
        """lr of the next update: base x schedule(step) x rollback scale."""
        return self.guard.lr_at(self.step)

    def update(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """One objective update; flat float metrics with the cumulative guard counters as guard/<name>."""
        out = self.objective.update(self.guard, self.step, *args, **kwargs)
        self.step += 1
        out.update({f"guard/{k}": float(v) for k, v in self.guard.metrics().items()})
        return out

    def run(self, batch_for_step: Callable[[int], Any],
            on_step: Callable[[int, float], None] | None = None) -> list[float]:
        """Update from the current step to the optimizer's total_steps; returns the losses of the steps run.

        `batch_for_step(k)` must be a pure function of k, so a run resumed after `load_state_dict` is exact.
        """
        losses, skipped = [], 0
        while self.step < self.guard.total_steps:
            k = self.step
            m = self.update(batch_for_step(k))
            losses.append(m["loss"])
            skipped += int(m["skipped"])
            if on_step is not None:
                on_step(k, m["loss"])
        log.info("training finished at step %d (%d skipped)", self.step, skipped)
        return losses

    def weights(self) -> dict[str, torch.Tensor]:
        """Detached CPU copies of what training changes (`trainable_state`), for a rollout pool and checkpoints."""
        return {k: v.detach().to("cpu", copy=True) for k, v in trainable_state(self.model).items()}

    def state_dict(self) -> dict:
        """Everything needed for a bit-exact resume, as tensors, numbers, lists and dicts."""
        return {"model": self.weights(), **self.guard.state_dict(), "step": self.step, **self.objective.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`; the model must have the same architecture."""
        copy_weights(self.model, state["model"])
        self.guard.load_state_dict(state)
        self.step = int(state["step"])
        self.objective.load_state_dict(state)


def copy_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy `weights` into `model`'s tensors in place, bit for bit (same shapes and dtypes, or ValueError).

    A key the weights lack must be tied to one they hold (an embedding shared with the output layer: a
    checkpoint's weights are its save_pretrained file, which stores a tied tensor once) or be a frozen
    parameter (a LoRA model's base: its weights are the adapter, `trainable_state`)."""
    own = model.state_dict()
    bad = [f"{k}: {tuple(w.shape)} {w.dtype} for {tuple(own[k].shape)} {own[k].dtype}" for k, w in weights.items()
           if k in own and (w.shape != own[k].shape or w.dtype != own[k].dtype)]
    unknown = sorted(set(weights) - set(own))
    if bad or unknown:
        raise ValueError(f"weights do not fit the model: {'; '.join(bad[:3]) or ''}"
                         f"{' unknown keys ' + ', '.join(unknown[:3]) if unknown else ''}")
    copied = set()
    with torch.no_grad():
        for k, v in own.items():
            if k in weights:
                v.copy_(weights[k])
                copied.add(v.data_ptr())
    frozen = {k for k, p in model.state_dict(keep_vars=True).items()
              if isinstance(p, torch.nn.Parameter) and not p.requires_grad}
    missing = [k for k, v in own.items() if k not in weights and v.data_ptr() not in copied and k not in frozen]
    if missing:
        raise ValueError(f"weights lack {len(missing)} of the model's tensors (e.g. {missing[0]}), tied to none "
                         f"they hold")


def _checked(cfg: Any) -> None:
    """Raise ValueError listing the problems of a config section."""
    problems = cfg.check()
    if problems:
        raise ValueError(f"{type(cfg).__name__}: " + "; ".join(f"{k}: {v}" for k, v in problems))


def rl_trainer(model: torch.nn.Module, cfg: LearnerConfig, *, temperature: float = 1.0, total_steps: int = 1,
               pad_id: int = 0, ref_model: torch.nn.Module | None = None, comm: Communicator | None = None,
               logit_filter: LogitFilter | None = None, max_episode_tokens: int = 0) -> Trainer:
    """Policy-gradient trainer; update(trajs, token_advantages=None). With kl_coef > 0 a frozen reference
    (`ref_model`, or a copy of `model`) is kept. `comm`: the data-parallel group of this rank (None: alone).
    `logit_filter`: the sampler's filter (default: temperature); `max_episode_tokens`: the Dr.GRPO length
    normaliser when cfg.norm_len is 0."""
    _checked(cfg)
    objective = PolicyGradient(model, cfg, temperature=temperature, pad_id=pad_id, ref_model=ref_model,
                               logit_filter=logit_filter, max_episode_tokens=max_episode_tokens)
    return Trainer(model, objective, GuardedOptimizer(model, cfg, total_steps, objective.counters, comm=comm))


def sft_trainer(model: torch.nn.Module, cfg: WarmupConfig, seed: int, pad_id: int) -> Trainer:
    """Warm-up SFT trainer: update(examples), run(batch_for_step, on_step) over cfg.steps.

    AdamW (no weight decay), linear warm-up then cosine to MIN_LR_RATIO of cfg.lr, clip at cfg.grad_clip,
    the non-finite guard; no spike checks, no rollback. `seed` is not used: the data order is the caller's.
    """
    _checked(cfg)
    del seed
    opt_cfg = OptimizerGuardsConfig(lr=cfg.lr, weight_decay=0.0, warmup_steps=cfg.warmup_steps, schedule="cosine",
                                    grad_clip=cfg.grad_clip)
    guard = GuardedOptimizer(model, opt_cfg, cfg.steps, spike_guard=False, rollback=False, min_lr_ratio=MIN_LR_RATIO)
    return Trainer(model, SFTObjective(model, pad_id, cfg.length_buckets), guard)


def distill_trainer(student: torch.nn.Module, teacher: torch.nn.Module, cfg: DistillLearnerConfig, *, pad_id: int = 0,
                    total_steps: int = 1, method: DistillMethod = DistillMethod.ON_POLICY,
                    full_vocab_max: int | None = None, sampled_cfg: LearnerConfig | None = None,
                    sample_temperature: float = 1.0, logit_filter: LogitFilter | None = None,
                    max_episode_tokens: int = 0) -> tuple[Trainer, DistillMode | None, DistillMode | None]:
    """(trainer, on-policy mode, off-policy mode) for distilling the frozen `teacher` into `student`.

    Vocabulary <= full_vocab_max: exact KLs (REVERSE on student samples, FORWARD on teacher samples; CE also
    accepted). Larger: on_policy trains through the policy-gradient objective (`sampled_cfg` with lr, kl_coef
    0, entropy_coef 0, one epoch; log-probs under the student's sampling filter `logit_filter`, default
    `sample_temperature` alone; `max_episode_tokens` the Dr.GRPO length) with advantages -(log q - log p_T), and
    off_policy with CE; mixed raises DistillRouteError. A mode the method never uses is None.
    """
    on_mode, off_mode = distill_modes(student, teacher, method, full_vocab_max)
    if on_mode is DistillMode.SAMPLED:
        if sampled_cfg is None:
            raise ValueError("distill_trainer: the sampled on-policy path needs sampled_cfg (a LearnerConfig)")
        _checked(cfg)
        objective = SampledKL(student, teacher, cfg, sampled_cfg, temperature=sample_temperature, pad_id=pad_id,
                              logit_filter=logit_filter, max_episode_tokens=max_episode_tokens)
        _checked(objective.pg.cfg)
        guard = GuardedOptimizer(student, objective.pg.cfg, total_steps, objective.counters)
        return Trainer(student, objective, guard), on_mode, off_mode
    _checked(cfg)
    objective = ExactKL(student, teacher, cfg, pad_id=pad_id)
    guard = GuardedOptimizer(student, cfg, total_steps, objective.counters)
    return Trainer(student, objective, guard), on_mode, off_mode
