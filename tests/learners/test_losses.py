"""Policy losses and per-token terms (docs/numerics.md#losses and #guards)."""

from __future__ import annotations

import math

import pytest
import torch

from steprl.learners.config import LearnerConfig
from steprl.learners.losses import LOSSES, aggregate, get_loss, k3_kl, tis_weight

CFG = LearnerConfig()


def _grad(loss_name, log_r, adv, cfg=CFG):
    logp = torch.zeros(1, len(log_r), requires_grad=True)
    old = -torch.tensor([log_r], dtype=torch.float32)
    out = get_loss(loss_name)(logp, old, torch.tensor([adv], dtype=torch.float32), torch.ones(1, len(log_r)), cfg)
    out.loss.sum().backward()
    return out, logp.grad[0]


def test_registry():
    assert set(LOSSES) >= {"ppo", "gspo", "cispo"}
    with pytest.raises(ValueError, match="unknown policy loss"):
        get_loss("nope")


def test_b2_log_ratio_clamp_keeps_zero_advantage_finite():
    out, g = _grad("ppo", [100.0, -100.0], [0.0, 0.0])
    assert torch.isfinite(out.loss).all() and torch.isfinite(g).all()
    assert out.ratio[0, 0].item() == pytest.approx(math.exp(20.0), rel=1e-6)


def test_b3_ppo_clip_higher_and_dual_clip():
    hi = math.log(1.5)  # r = 1.5 > 1 + 0.28
    out, g = _grad("ppo", [hi, math.log(1.1), math.log(0.5)], [1.0, 1.0, 1.0])
    assert g[0].item() == 0.0 and out.clipped[0, 0]
    assert g[1].item() == pytest.approx(-1.1, rel=1e-5) and not out.clipped[0, 1]
    assert g[2].item() == pytest.approx(-0.5, rel=1e-5)  # A > 0, r < 1 - eps: unclipped branch is the min
    out, g = _grad("ppo", [math.log(1e3)], [-2.0])
    assert out.loss.item() == pytest.approx(3.0 * 2.0) and g[0].item() == 0.0 and out.clipped[0, 0]
    out, _ = _grad("ppo", [math.log(1e3)], [-2.0], LearnerConfig(dual_clip=0.0))
    assert out.loss.item() == pytest.approx(2e3, rel=1e-5)
    out, _ = _grad("ppo", [math.log(0.5)], [-1.0])  # A < 0, r < 1 - eps_l: clipped at 0.8
    assert out.loss.item() == pytest.approx(0.8, rel=1e-6) and out.clipped[0, 0]


def test_b4_tis_weight():
    lp = torch.tensor([[-1.0, -2.5, -0.1]])
    assert tis_weight(lp, lp.clone(), cap=2.0, clamp=20.0).tolist() == [[1.0, 1.0, 1.0]]
    w = tis_weight(torch.tensor([[math.log(1e6)]]), torch.zeros(1, 1), cap=2.0, clamp=20.0)
    assert w.item() == 2.0
    w = tis_weight(torch.tensor([[math.log(0.25)]]), torch.zeros(1, 1), cap=2.0, clamp=20.0)
    assert w.item() == pytest.approx(0.25)
    assert tis_weight(torch.tensor([[5.0]]), torch.zeros(1, 1), cap=0.0, clamp=20.0).item() == 1.0
    old = torch.tensor([[0.3]], requires_grad=True)
    assert not tis_weight(old, torch.zeros(1, 1), 2.0, 20.0).requires_grad  # stop-gradient


def test_b7_k3_nonnegative_finite_and_clamped():
    lp = torch.linspace(-50, 50, 201)
    k = k3_kl(lp, torch.zeros_like(lp), log_clamp=20.0, kl_clamp=10.0)
    assert torch.isfinite(k).all() and (k >= 0).all() and (k <= 10.0).all()
    assert k[100].item() == 0.0
    assert k3_kl(torch.tensor([0.5]), torch.tensor([0.0]), 20.0, 1e9).item() == pytest.approx(math.exp(-0.5) - 1 + 0.5)
    assert k3_kl(torch.tensor([50.0]), torch.tensor([0.0]), 20.0, 10.0).item() == 10.0


def test_b13_gspo_uniform_ratio_gives_sequence_ratio():
    out, g = _grad("gspo", [0.1, 0.1, 0.1], [0.0, 0.0, 0.0])
    assert torch.allclose(out.ratio, torch.full((1, 3), math.exp(0.1)))
    assert out.aggregation == "seq-mean-token-mean"
    cfg = LearnerConfig(gspo_clip_low=0.5, gspo_clip_high=0.5)
    out, g = _grad("gspo", [0.2, 0.0], [1.0, 1.0], cfg)  # s = exp(0.1) for both tokens, grad s * A on each
    assert torch.allclose(g, torch.full((2,), -math.exp(0.1)), atol=1e-6)
    out, g = _grad("gspo", [0.2, 0.0], [1.0, 1.0])  # s > 1 + 4e-4 with A > 0: clipped, no gradient
    assert g.abs().sum().item() == 0.0 and out.clipped.all()


def test_b14_cispo_keeps_gradient_on_clipped_tokens():
    out, g = _grad("cispo", [math.log(10.0), math.log(2.0)], [1.0, 1.0])
    assert g[0].item() == pytest.approx(-6.0, rel=1e-6)  # weight truncated at 1 + 5, gradient still flows
    assert g[1].item() == pytest.approx(-2.0, rel=1e-6)
    assert out.clipped[0].tolist() == [True, False]


def test_aggregations_with_whole_batch_normalisers():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    kw = dict(n_tokens=3.0, n_seqs=2.0, n_rows=2.0, norm_len=3.0)
    assert aggregate(loss, mask, "token-mean", **kw).item() == pytest.approx(7 / 3)
    assert aggregate(loss, mask, "seq-mean-token-mean", **kw).item() == pytest.approx((1.5 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", **kw).item() == pytest.approx(7 / 6)
    with pytest.raises(ValueError):
        aggregate(loss, mask, "mean", **kw)
