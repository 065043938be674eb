"""Policy losses by name (ppo, gspo, cispo) and the shared per-token terms (docs/numerics.md#losses).

Ratios. `logp` are the learner's log-probs (with grad), `old_logp` the proximal policy's
(the learner's own log-probs before this step's first optimizer step, no grad) and
`behavior_logp` the sampler's. The clipped objective uses r = pi / pi_old; truncated
importance sampling corrects the sampler/learner gap with the stop-gradient weight
w = min(pi_old / mu, C) (decoupled PPO, verl rollout correction). Every log-ratio is clamped
before `exp`. All per-token outputs are [B, T-1] float32; `aggregate` turns them into a
scalar with whole-batch normalisers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

LOSSES: dict[str, Callable[..., PolicyLoss]] = {}


def register_loss(name: str) -> Callable[[Callable], Callable]:
    """Function decorator: make a policy loss selectable as `cfg.loss = name`."""

    def deco(fn: Callable) -> Callable:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice")
        LOSSES[name] = fn
        return fn

    return deco


def get_loss(name: str) -> Callable[..., PolicyLoss]:
    """The loss registered as `name`."""
    if name not in LOSSES:
        raise ValueError(f"unknown policy loss {name!r}; registered: {sorted(LOSSES)}")
    return LOSSES[name]


@dataclass(frozen=True)
class PolicyLoss:
    """Per-token policy loss, where clipping was active, the ratio used, and a forced aggregation."""

    loss: torch.Tensor
    clipped: torch.Tensor
    ratio: torch.Tensor
    aggregation: str | None = None


def clamped_ratio(log_ratio: torch.Tensor, clamp: float) -> torch.Tensor:
    """exp(clamp(log_ratio, -clamp, clamp)) (an unclamped exp(100) overflows, and inf x A = 0 is NaN)."""
    return torch.exp(log_ratio.clamp(-clamp, clamp))


def masked_log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logp - old_logp where `mask` is 1, exactly 0 elsewhere, selected with `where` (gradient 0 there too).

    At a masked target the learner's filter removed (a banned chat-template token) both log-probs are
    -inf and their difference is NaN; a multiply by the mask would keep it (0 x NaN), in the value and,
    through exp's derivative, in the gradient. With 0 there the ratio is exactly 1.
    """
    return torch.where(mask > 0, logp - old_logp, torch.zeros_like(logp))


@register_loss("ppo")
def ppo_loss(logp, old_logp, adv, mask, cfg: Any) -> PolicyLoss:
    """-min(r A, clip(r, 1 - eps_l, 1 + eps_h) A), dual-clipped at c |A| for A < 0.

    PPO: Schulman et al. 2017, https://arxiv.org/abs/1707.06347; clip-higher eps_h > eps_l: DAPO,
    https://arxiv.org/abs/2503.14476; dual clip: Ye et al. 2020, https://arxiv.org/abs/1912.09729.
    """
    r = clamped_ratio(masked_log_ratio(logp, old_logp, mask), cfg.log_ratio_clamp)
    pg1 = -adv * r
    pg2 = -adv * r.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    loss = torch.maximum(pg1, pg2)
    clipped = pg2 > pg1
    if cfg.dual_clip > 0:
        pg3 = -adv * cfg.dual_clip
        dual = (adv < 0) & (loss > pg3)
        loss = torch.where(adv < 0, torch.minimum(loss, pg3), loss)
        clipped = clipped | dual
    return PolicyLoss(loss, clipped & (mask > 0), r)


@register_loss("gspo")
def gspo_loss(logp, old_logp, adv, mask, cfg: Any) -> PolicyLoss:
    """GSPO (Zheng et al. 2025, https://arxiv.org/abs/2507.18071): s_i = exp(min(10, mean_t log r)),
    clipped like PPO with GSPO epsilons, seq-mean.

    Per token the ratio is sg(s_i) * pi / sg(pi), whose value is s_i and whose gradient is
    s_i * grad log pi; with seq-mean-token-mean this is the GSPO gradient.
    """
    log_r = masked_log_ratio(logp, old_logp, mask).clamp(-cfg.log_ratio_clamp, cfg.log_ratio_clamp)
    seq = log_r.sum(-1) / mask.sum(-1).clamp(min=1.0)  # masked entries of log_r are 0 (selected, not multiplied)
    seq = seq.clamp(max=10.0).detach()
    s = torch.exp(masked_log_ratio(logp, logp.detach(), mask) + seq[:, None])
    pg1 = -adv * s
    pg2 = -adv * s.clamp(1.0 - cfg.gspo_clip_low, 1.0 + cfg.gspo_clip_high)
    loss = torch.maximum(pg1, pg2)
    return PolicyLoss(loss, (pg2 > pg1) & (mask > 0), s, aggregation="seq-mean-token-mean")


@register_loss("cispo")
def cispo_loss(logp, old_logp, adv, mask, cfg: Any) -> PolicyLoss:
    """CISPO: -sg(min(r, 1 + eps_h)) A log pi; clipped tokens keep their gradient.

    MiniMax-M1, https://arxiv.org/abs/2506.13585.
    """
    r = clamped_ratio(masked_log_ratio(logp, old_logp, mask), cfg.log_ratio_clamp)
    w = r.clamp(max=1.0 + cfg.cispo_clip_high).detach()
    logp_kept = torch.where(mask > 0, logp, torch.zeros_like(logp))  # -inf at a filtered prompt token: 0 x -inf
    return PolicyLoss(-w * adv * logp_kept, (r > 1.0 + cfg.cispo_clip_high) & (mask > 0), r)


def tis_weight(old_logp: torch.Tensor, behavior_logp: torch.Tensor, cap: float, clamp: float) -> torch.Tensor:
    """Truncated importance weight min(exp(clamp(log pi_old - log mu)), C), no gradient; C = 0 gives 1.

    Truncated importance sampling for the sampler/learner mismatch (Yao et al. 2025,
    https://fengyao.notion.site/off-policy-rl).
    """
    rho = clamped_ratio((old_logp - behavior_logp).detach(), clamp)
    return rho.clamp(max=cap) if cap > 0 else torch.ones_like(rho)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor, log_clamp: float = 20.0, kl_clamp: float = 10.0) -> torch.Tensor:
    """k3 = (r - 1) - log r with log r = clamp(log pi_ref - log pi, +-log_clamp), then clamped to +-kl_clamp.

    Unbiased, non-negative estimator of KL(pi || pi_ref) from samples of pi
    (Schulman, http://joschu.net/blog/kl-approx.html).
    """
    log_r = (ref_logp - logp).clamp(-log_clamp, log_clamp)
    return (torch.exp(log_r) - 1.0 - log_r).clamp(-kl_clamp, kl_clamp)


AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, *, n_tokens: float, n_seqs: float,
              n_rows: float, norm_len: float) -> torch.Tensor:
    """Scalar loss of a (micro-)batch with whole-batch normalisers (docs/numerics.md#losses).

    token-mean: sum(m l) / n_tokens. seq-mean-token-mean: sum_i [sum_t m l / max(1, sum_t m)] / n_seqs.
    seq-mean-token-sum-norm (Dr.GRPO): sum(m l) / (n_rows * norm_len).
    Masked positions are selected with `where`, so a non-finite value there cannot leak.
    """
    ml = torch.where(mask > 0, per_token, torch.zeros_like(per_token))  # mask is 0/1: selecting is m l
    if mode == "token-mean":
        return ml.sum() / n_tokens
    if mode == "seq-mean-token-mean":
        return (ml.sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / n_seqs
    if mode == "seq-mean-token-sum-norm":
        return ml.sum() / (n_rows * norm_len)
    raise ValueError(f"unknown aggregation {mode!r}; expected one of {AGGREGATIONS}")
