"""The policy-gradient objective: trajectories -> one guarded AdamW update per epoch -> `StepStats` metrics.

Built by `trainer.rl_trainer(...)`; `Trainer.update(trajs)` or `update(trajs, token_advantages=[...])`.
See docs/numerics.md#advantages and docs/numerics.md#losses. One update: mark bad trajectories
(failed, non-finite reward or behaviour log-probs) ->
advantages over the valid ones -> collate sorted by episode index -> for each epoch:
micro-batched forward/backward with whole-batch normalisers -> non-finite guard -> spike
guards -> gradient clip -> AdamW step (or skip, and maybe roll back).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from steprl.rollout.trajectory import LogitFilter, Trajectory

from .advantages import make_advantage
from .batch import Batch, collate, micro_batches, token_logprobs, token_terms
from .config import LearnerConfig
from .guarded_optimizer import GuardedOptimizer
from .losses import aggregate, get_loss, k3_kl, tis_weight
from .precision import autocast, model_device, to_device

log = logging.getLogger(__name__)

PG_COUNTERS = ("filtered_trajectories",)
"""Guard counters of the policy-gradient objective, reported after GUARD_COUNTERS."""


@dataclass
class StepStats:
    """Metrics of one policy-gradient update (token statistics over trained tokens, averaged over epochs)."""

    loss: float = 0.0
    reward_mean: float = 0.0
    reward_std: float = 0.0
    success_rate: float = 0.0
    kl: float = 0.0
    entropy: float = 0.0
    clip_frac: float = 0.0
    ratio_mean: float = 1.0
    """Mean behaviour importance ratio pi_learner / mu on trained tokens (before the update)."""
    ratio_max: float = 1.0
    tis_clip_frac: float = 0.0
    logprob_gap: float = 0.0
    """Mean |log pi_learner - log mu| on trained tokens: large values mean stale sampler weights."""
    grad_norm: float = 0.0
    """Pre-clip global gradient norm."""
    filter_disagreements: float = 0.0
    """Trained tokens the learner's own top-k/top-p set would have dropped (kept anyway; first epoch)."""
    lr: float = 0.0
    tokens_trained: float = 0.0
    zero_adv_groups: float = 0.0
    skipped: float = 0.0

    def to_dict(self) -> dict[str, float]:
        """Flat float metrics (the trainer appends the guard/<name> counters)."""
        return {k: float(v) for k, v in asdict(self).items()}


def trajectory_is_valid(t: Trajectory) -> bool:
    """False for failed episodes (`error` set) and non-finite reward or action-token log-probs."""
    if t.error or not math.isfinite(t.reward) or len(t.tokens) < 2:
        return False
    return all(math.isfinite(lp) for lp, m in zip(t.behavior_logprobs, t.action_mask) if m)


class PolicyGradient:
    """Guarded policy-gradient objective (see the module docstring); the trainer owns step and optimizer."""

    counters = PG_COUNTERS

    def __init__(self, model: torch.nn.Module, cfg: LearnerConfig, *, temperature: float = 1.0, pad_id: int = 0,
                 ref_model: torch.nn.Module | None = None, logit_filter: LogitFilter | None = None,
                 max_episode_tokens: int = 0) -> None:
        """Loss, estimator and (when kl_coef > 0) a frozen reference: `ref_model` or a copy of `model`.

        `logit_filter` is the sampler's filter (temperature, top-k, top-p, banned ids), re-applied to the
        learner's log-probs so pi/mu is exactly 1 at identical weights; default: `temperature` alone.
        The Dr.GRPO normaliser L is `cfg.norm_len`, else `max_episode_tokens` (a constant either way).
        """
        self.model, self.cfg = model, cfg
        self.temperature, self.pad_id = float(temperature), int(pad_id)
        self.logit_filter = logit_filter if logit_filter is not None else LogitFilter(self.temperature)
        self.temperature = self.logit_filter.temperature
        self.norm_len = int(cfg.norm_len or max_episode_tokens)
        if self.norm_len <= 0 and cfg.aggregation == "seq-mean-token-sum-norm":
            raise ValueError("seq-mean-token-sum-norm needs a constant length: set learner.norm_len or pass "
                             "max_episode_tokens (the batch's padded length would tie a trajectory to its batch-mates)")
        self.loss_fn = get_loss(cfg.loss)
        self.estimator = make_advantage(cfg.advantage, cfg)
        self.ref_model = None
        if cfg.kl_coef > 0:
            self.ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
            self.ref_model.eval()
            for p in self.ref_model.parameters():
                p.requires_grad_(False)

    def update(self, opt: GuardedOptimizer, step: int, trajectories: Sequence[Trajectory],
               token_advantages: list[torch.Tensor] | None = None) -> dict[str, float]:
        """One update on `trajectories`; `token_advantages` (one tensor per trajectory, aligned with its
        tokens) replaces the advantage estimator when given (on-policy distillation). Returns `StepStats` fields."""
        trajs = list(trajectories)
        if token_advantages is not None and len(token_advantages) != len(trajs):
            raise ValueError(f"update: {len(trajs)} trajectories but {len(token_advantages)} token advantage tensors")
        valid = [trajectory_is_valid(t) for t in trajs]
        if token_advantages is not None:
            valid = [v and bool(torch.isfinite(a.float()).all()) for v, a in zip(valid, token_advantages)]
        n_bad = len(valid) - sum(valid)
        opt.counters["bad_trajectories"] += n_bad
        if n_bad:
            log.warning("%d bad trajectories masked out of step %d", n_bad, step)
        stats = StepStats()
        good = [t for t, v in zip(trajs, valid) if v]
        self._reward_stats(good, stats)
        estimator_before = self.estimator.state_dict()
        advs, stats.zero_adv_groups = self._advantages(opt, trajs, valid, token_advantages)
        batch = collate(trajs, self.pad_id, advs, valid, norm_len=self.norm_len)
        stats.tokens_trained = float(batch.action_mask_BT.sum())
        stats.lr = opt.begin(step)
        self.model.train()
        old: dict[int, torch.Tensor] = {}
        per_epoch = [self._epoch(opt, batch, old, epoch) for epoch in range(self.cfg.epochs)]
        for k in ("loss", "kl", "entropy", "clip_frac", "grad_norm"):
            setattr(stats, k, sum(e[k] for e in per_epoch) / len(per_epoch))
        for k in ("ratio_mean", "ratio_max", "tis_clip_frac", "logprob_gap", "filter_disagreements"):
            setattr(stats, k, per_epoch[0][k])
        stats.skipped = float(any(e["skipped"] for e in per_epoch))
        if stats.skipped:  # a skipped (or rolled-back) step leaves no trace: the running baseline neither
            self.estimator.load_state_dict(estimator_before)
        return stats.to_dict()

    def state_dict(self) -> dict:
        """The estimator's state and the reference model (None without KL)."""
        ref = self.ref_model
        return {"advantage": self.estimator.state_dict(),
                "ref_model": None if ref is None else {k: v.detach().clone() for k, v in ref.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` from the trainer's state dict."""
        self.estimator.load_state_dict(state["advantage"])
        if self.ref_model is not None:
            if state.get("ref_model") is None:
                raise ValueError("load_state_dict: kl_coef > 0 but the state holds no reference model")
            with torch.no_grad():
                for k, v in self.ref_model.state_dict().items():
                    v.copy_(state["ref_model"][k])

    # ------------------------------------------------------------------ internals
    def _reward_stats(self, good: list[Trajectory], stats: StepStats) -> None:
        """Reward mean/std (population) and success rate over valid trajectories."""
        if not good:
            return
        r = torch.tensor([t.reward for t in good], dtype=torch.float64)
        stats.reward_mean = float(r.mean())
        stats.reward_std = float(r.std(unbiased=False))
        stats.success_rate = sum(bool(t.success) for t in good) / len(good)

    def _advantages(self, opt, trajs, valid, token_advantages):
        """Per-trajectory advantages (floats or token tensors) and the zero-variance group count."""
        if token_advantages is not None:
            return list(token_advantages), 0.0
        pos = [i for i, v in enumerate(valid) if v]
        res = self.estimator([trajs[i].reward for i in pos], [trajs[i].spec.group for i in pos])
        advs = [0.0] * len(trajs)
        for j, i in enumerate(pos):
            advs[i] = float(res.advantages[j])
            if self.cfg.filter_zero_groups and trajs[i].spec.group in res.zero_groups:
                valid[i] = False
                opt.counters["filtered_trajectories"] += 1
        return advs, float(res.zero_adv_groups)

    def _epoch(self, opt: GuardedOptimizer, batch: Batch, old: dict[int, torch.Tensor], epoch: int
               ) -> dict[str, float]:
        """Forward/backward over this rank's micro-batches, the tree reduction, then the guarded optimizer step.

        Every rank collates the whole batch (whole-batch normalisers) and computes the micro-batches the
        fixed tree assigns it (learners/reduce.py); scalars come back in index order and are summed here
        in that order, so loss, guards and metrics are the same at every world size.
        """
        cfg = self.cfg
        mbs = micro_batches(batch, cfg.micro_batch)
        device = model_device(self.model)
        for j in opt.reducer.begin(len(mbs)):
            mb = to_device(mbs[j], device)
            m = mb.action_mask_BT
            with autocast(self.model, cfg.dtype):  # bf16 body, fp32 head and log-softmax (learners/precision.py)
                # the sampled targets are always kept (batch.token_terms); `outside` counts filter disagreements
                logp, ent, outside = token_terms(self.model, mb.tokens_BT, mb.attention_mask_BT,
                                                 logit_filter=self.logit_filter)
            # a masked target can be -inf (a banned id in the prompt); the losses see 0 there, so no loss that
            # multiplies by the mask (GSPO's sequence mean) turns -inf - -inf into NaN. Action tokens are unchanged.
            logp = torch.where(m > 0, logp, 0.0)
            if epoch == 0:
                old[j] = logp.detach()  # the proximal policy: parameters before this step's first update
            old_logp = old[j]
            out = self.loss_fn(logp, old_logp, mb.advantages_BT, m, cfg)
            w = tis_weight(old_logp, mb.behavior_logprobs_BT, cfg.tis_cap, cfg.log_ratio_clamp)
            per_token = out.loss * w
            kl = torch.zeros_like(logp)
            if self.ref_model is not None:
                with torch.no_grad(), autocast(self.ref_model, cfg.dtype):  # the same filter: like with like
                    ref_logp, _ = token_logprobs(self.ref_model, mb.tokens_BT, mb.attention_mask_BT,
                                                 logit_filter=self.logit_filter)
                kl = k3_kl(logp, ref_logp, cfg.log_ratio_clamp, cfg.kl_clamp)
                per_token = per_token + cfg.kl_coef * kl
            if cfg.entropy_coef > 0:
                per_token = per_token - cfg.entropy_coef * ent
            loss = aggregate(per_token, m, out.aggregation or cfg.aggregation, n_tokens=batch.n_tokens,
                             n_seqs=mb.n_seqs, n_rows=mb.n_rows, norm_len=mb.norm_len)
            loss.backward()
            opt.reducer.add(j, self._leaf_scalars(loss, m, logp, old_logp, mb, kl, ent, out.clipped, outside))
        rows = opt.reducer.gather_scalars(len(_LEAF_SCALARS))
        acc = {k: 0.0 for k in _LEAF_SCALARS}
        rho_max = 0.0
        for row in rows:  # index order: the same sums as one process accumulating micro-batch by micro-batch
            for k, v in zip(_LEAF_SCALARS, row):
                acc[k] += v
            if row[-1] > 0:
                rho_max = max(rho_max, row[-2])
        n = batch.n_tokens
        skipped, gnorm = opt.step(acc["loss"], has_targets=bool((batch.action_mask_BT > 0).any()),
                                   feeds_windows=bool((batch.advantages_BT != 0).any()))  # all-zero: no spike data
        return {"loss": acc["loss"], "kl": acc["kl"] / n, "entropy": acc["entropy"] / n, "clip_frac": acc["clip"] / n,
                "ratio_mean": acc["rho"] / n if batch.action_mask_BT.sum() > 0 else 1.0,
                "ratio_max": rho_max if batch.action_mask_BT.sum() > 0 else 1.0,
                "tis_clip_frac": acc["tis_clip"] / n, "logprob_gap": acc["gap"] / n, "grad_norm": gnorm,
                "filter_disagreements": acc["outside"], "skipped": skipped}

    def _leaf_scalars(self, loss, m, logp, old_logp, mb: Batch, kl, ent, clipped, outside) -> list[float]:
        """One micro-batch's statistics, in `_LEAF_SCALARS` order."""
        cfg = self.cfg
        sel = m > 0
        rho = torch.exp((old_logp - mb.behavior_logprobs_BT).clamp(-cfg.log_ratio_clamp, cfg.log_ratio_clamp))
        any_sel = bool(sel.any())
        return [float(loss.detach()), float(kl.detach()[sel].sum()), float(ent.detach()[sel].sum()),
                float(clipped[sel].sum()), float(rho[sel].sum()),
                float((rho[sel] > cfg.tis_cap).sum()) if cfg.tis_cap > 0 else 0.0,
                float((old_logp - mb.behavior_logprobs_BT)[sel].abs().sum()), float(outside[sel].sum()),
                float(rho[sel].max()) if any_sel else 0.0, float(any_sel)]


_LEAF_SCALARS = ("loss", "kl", "entropy", "clip", "rho", "tis_clip", "gap", "outside", "rho_max", "any")
"""Per-micro-batch statistics gathered across ranks; the last two are a max and a flag, not sums."""
