"""Distillation objectives: exact reverse / forward KL and ce over the full vocabulary, and sampled KL.

`ExactKL` trains the student on the per-token KL to the frozen teacher (docs/numerics.md#distillation):
REVERSE KL(q || p_T) on student samples (on-policy), FORWARD KL(p_T || q) on teacher samples
(off-policy), or CE, the cross-entropy of the student on teacher samples (sequence-level KD,
Kim & Rush 2016, https://arxiv.org/abs/1606.07947). Losses are kl_coef x token means over the
whole batch's action tokens, so micro-batching does not change them.

`SampledKL` is on-policy distillation for large vocabularies: the policy-gradient objective with
per-token advantages A_t = kl_coef x -clamp(log q(y_t) - log p_T(y_t)) (`token_advantages`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from enum import Enum

import torch

from steprl.rollout.trajectory import LogitFilter, Trajectory

from .batch import micro_batches
from .config import DistillLearnerConfig, LearnerConfig
from .guarded_optimizer import GuardedOptimizer
from .kl import (
    FULL_VOCAB_MAX,
    collate_valid,
    kl_token_terms,
    masked_mean,
    token_advantages,
    use_full_vocab,
    vocab_size_of,
)
from .policy_gradient import PolicyGradient
from .precision import model_device, to_device

log = logging.getLogger(__name__)


class DistillRouteError(ValueError):
    """The distillation method cannot run on this vocabulary (mixed above full_vocab_max)."""


class DistillMode(str, Enum):
    """What one distillation update minimises."""

    REVERSE = "reverse"
    """Exact KL(q || p_T) on student samples."""
    FORWARD = "forward"
    """Exact KL(p_T || q) on teacher samples."""
    CE = "ce"
    """Cross-entropy of the student on teacher samples."""
    SAMPLED = "sampled"
    """Policy gradient with advantages -(log q - log p_T) on student samples."""


class DistillMethod(str, Enum):
    """Where a distillation run's samples come from (`distill.method`)."""

    ON_POLICY = "on_policy"
    OFF_POLICY = "off_policy"
    MIXED = "mixed"


def distill_modes(student: torch.nn.Module, teacher: torch.nn.Module, method: DistillMethod | str,
                  full_vocab_max: int | None = None) -> tuple[DistillMode | None, DistillMode | None]:
    """(on-policy mode, off-policy mode): exact KLs up to full_vocab_max tokens, else SAMPLED / CE.

    Raises DistillRouteError (a ValueError) for MIXED above the limit (it needs both exact KLs).
    A mode the method never uses is None.
    """
    method = DistillMethod(method)
    limit = FULL_VOCAB_MAX if full_vocab_max is None else full_vocab_max
    vocab = vocab_size_of(teacher)
    if use_full_vocab(vocab, limit):
        return DistillMode.REVERSE, DistillMode.FORWARD
    if method is DistillMethod.MIXED:
        raise DistillRouteError(f"distill.method=mixed needs a vocabulary of at most distill.full_vocab_max={limit} "
                                f"tokens "
                         f"(this one has {vocab}); use on_policy or off_policy")
    if method is DistillMethod.ON_POLICY:
        return DistillMode.SAMPLED, None
    return None, DistillMode.CE


class ExactKL:
    """REVERSE / FORWARD KL or CE of the student to a frozen teacher; update(trajs, mode)."""

    counters: tuple[str, ...] = ()

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module, cfg: DistillLearnerConfig, *,
                 pad_id: int = 0) -> None:
        """Freeze the teacher; the two models must emit the same number of logits."""
        if vocab_size_of(student) != vocab_size_of(teacher):
            raise ValueError(f"student emits {vocab_size_of(student)} logits but the teacher {vocab_size_of(teacher)}: "
                             "distillation needs one vocabulary")
        self.student, self.teacher, self.cfg, self.pad_id = student, teacher, cfg, int(pad_id)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    def update(self, opt: GuardedOptimizer, step: int, trajectories: Sequence[Trajectory],
               mode: DistillMode | str = DistillMode.REVERSE) -> dict[str, float]:
        """One guarded step. Metrics: loss, kl_reverse, kl_forward (token means before the step), kl (that of the
        mode: reverse for REVERSE, forward otherwise), grad_norm (pre-clip), lr, tokens_trained, skipped."""
        if mode not in (DistillMode.REVERSE, DistillMode.FORWARD, DistillMode.CE):
            raise ValueError(f"ExactKL.update: mode must be reverse, forward or ce, got {mode!r}")
        mode = DistillMode(mode)
        batch, n_bad = collate_valid(trajectories, self.pad_id)
        opt.counters["bad_trajectories"] += n_bad
        if n_bad:
            log.warning("%d bad trajectories masked out of distillation step %d", n_bad, step)
        lr = opt.begin(step)
        self.student.train()
        n, temp = batch.n_tokens, self.cfg.temperature
        acc = {"loss": 0.0, "kl_reverse": 0.0, "kl_forward": 0.0}
        for mb in micro_batches(batch, self.cfg.micro_batch):
            mb = to_device(mb, model_device(self.student))
            m = mb.action_mask_BT
            rev, fwd, ce = kl_token_terms(self.student, self.teacher, mb.tokens_BT, mb.attention_mask_BT, temp)
            per_token = {DistillMode.REVERSE: rev, DistillMode.FORWARD: fwd, DistillMode.CE: ce}[mode]
            loss = self.cfg.kl_coef * masked_mean(per_token, m, denom=n)
            loss.backward()
            acc["loss"] += float(loss.detach())
            acc["kl_reverse"] += float(masked_mean(rev.detach(), m, denom=n))
            acc["kl_forward"] += float(masked_mean(fwd.detach(), m, denom=n))
        skipped, gnorm = opt.step(acc["loss"], has_targets=bool((batch.action_mask_BT > 0).any()))
        kl = acc["kl_reverse"] if mode is DistillMode.REVERSE else acc["kl_forward"]
        return {**acc, "kl": kl, "grad_norm": gnorm, "lr": lr, "tokens_trained": float(batch.action_mask_BT.sum()),
                "skipped": float(skipped)}

    def state_dict(self) -> dict:
        """Nothing: the teacher is loaded from its own directory."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""


class SampledKL:
    """On-policy distillation: `PolicyGradient` with advantages from `token_advantages`; update(trajs, SAMPLED)."""

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module, cfg: DistillLearnerConfig,
                 rl_cfg: LearnerConfig, *, temperature: float = 1.0, pad_id: int = 0,
                 logit_filter: LogitFilter | None = None, max_episode_tokens: int = 0) -> None:
        """rl_cfg with cfg.lr, no KL to a reference, no entropy bonus, one epoch.

        `logit_filter` is the filter the student sampled through (default: `temperature` alone): the learner
        re-applies it, so the TIS weight pi_old / mu is 1 at identical weights, not the kept probability mass.
        `max_episode_tokens` is the Dr.GRPO length L when rl_cfg.norm_len is 0 (seq-mean-token-sum-norm).
        """
        self.student, self.teacher, self.cfg, self.pad_id = student, teacher, cfg, int(pad_id)
        pg_cfg = replace(rl_cfg, lr=cfg.lr, kl_coef=0.0, entropy_coef=0.0, epochs=1)
        self.pg = PolicyGradient(student, pg_cfg, temperature=temperature, pad_id=pad_id, logit_filter=logit_filter,
                                 max_episode_tokens=max_episode_tokens)
        self.counters = self.pg.counters

    def update(self, opt: GuardedOptimizer, step: int, trajectories: Sequence[Trajectory],
               mode: DistillMode | str = DistillMode.SAMPLED) -> dict[str, float]:
        """One policy-gradient step on student samples with the teacher-derived token advantages."""
        if mode != DistillMode.SAMPLED:
            raise ValueError(f"SampledKL.update: the sampled objective only learns on-policy, got {mode!r}")
        trajs = list(trajectories)
        adv = token_advantages(self.student, self.teacher, trajs, pad_id=self.pad_id, temperature=self.cfg.temperature,
                               kl_coef=self.cfg.kl_coef)
        return self.pg.update(opt, step, trajs, token_advantages=adv)

    def state_dict(self) -> dict:
        """The policy-gradient objective's state."""
        return self.pg.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`."""
        self.pg.load_state_dict(state)
