"""-inf log-probs at masked positions never reach a loss or a gradient (docs/numerics.md#losses).

On a chat-template run the learner re-applies the sampler's filter, which bans template tokens such as
`<|im_start|>`; at a prompt position whose target is such a token, logp = old_logp = -inf, so
logp - old_logp is NaN there. Those positions are masked, and every masked reduction must select them
away with `where`: a multiply by the mask gives 0 x NaN = NaN in the forward pass, and a NaN local
derivative times a zero upstream gradient is NaN in the backward pass.
"""

from __future__ import annotations

import pytest
import torch

from steprl.learners.config import LearnerConfig
from steprl.learners.kl import masked_mean
from steprl.learners.losses import AGGREGATIONS, aggregate, get_loss, tis_weight

NEG_INF = float("-inf")


def _inputs():
    """Two rows of 4 targets; column 0 of each row (a banned prompt token) and the padding are masked.

    The learner's log-probs are a leaf with -inf at the filtered positions (as log_softmax of a filtered
    row gives), and the proximal log-probs are their detached copy, as in the first epoch.
    """
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    base = torch.tensor([[NEG_INF, -0.7, -1.2, -0.3], [NEG_INF, -2.0, -0.1, NEG_INF]])
    logp = base.clone().requires_grad_(True)
    old = base.clone() - torch.tensor([[0.0, 0.05, -0.02, 0.1], [0.0, 0.0, 0.03, 0.0]])
    adv = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, -0.5, -0.5, 0.0]])
    behavior = torch.where(mask > 0, old, torch.zeros_like(old))  # collate: 0 where the mask is 0
    return logp, old, adv, mask, behavior


@pytest.mark.parametrize("name", ["ppo", "gspo", "cispo"])
@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_loss_with_inf_logprobs_at_masked_positions_is_finite(name, mode):
    logp, old, adv, mask, behavior = _inputs()
    cfg = LearnerConfig(loss=name, aggregation=mode)
    out = get_loss(name)(logp, old, adv, mask, cfg)
    per_token = out.loss * tis_weight(old, behavior, cfg.tis_cap, cfg.log_ratio_clamp)
    loss = aggregate(per_token, mask, out.aggregation or mode, n_tokens=float(mask.sum()), n_seqs=2.0, n_rows=2.0,
                     norm_len=4.0)
    loss.backward()
    assert torch.isfinite(loss), f"{name}/{mode}: loss {loss}"
    assert torch.isfinite(logp.grad).all(), f"{name}/{mode}: grad {logp.grad}"
    assert (logp.grad[mask == 0] == 0).all()  # masked positions get no gradient at all
    assert (logp.grad[mask > 0] != 0).any()  # and the unmasked ones still do


@pytest.mark.parametrize("name", ["ppo", "gspo", "cispo"])
def test_masked_inf_does_not_change_the_unmasked_loss(name):
    """The same rows with finite values at the masked positions give the same bits: `where` only selects."""
    logp, old, adv, mask, _ = _inputs()
    cfg = LearnerConfig(loss=name)
    out = get_loss(name)(logp, old, adv, mask, cfg)
    finite = torch.where(mask > 0, logp.detach(), torch.full_like(old, -3.0))
    finite_old = torch.where(mask > 0, old, torch.full_like(old, -3.5))
    ref = get_loss(name)(finite, finite_old, adv, mask, cfg)
    assert torch.equal(out.loss.detach()[mask > 0], ref.loss[mask > 0])  # one code path, same values: bits


def test_aggregate_selects_a_non_finite_per_token_value_away_in_value_and_gradient():
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    x = torch.tensor([[0.5, 0.0, 2.0]], requires_grad=True)
    per_token = x + torch.tensor([[0.0, float("nan"), 0.0]])  # NaN value at the masked entry, derivative 1
    for mode in AGGREGATIONS:
        x.grad = None
        loss = aggregate(per_token, mask, mode, n_tokens=2.0, n_seqs=1.0, n_rows=1.0, norm_len=3.0)
        loss.backward(retain_graph=True)
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all(), mode
        assert x.grad[0, 1].item() == 0.0
        # sums of 0.5 and 2.0 are exact in float32; the one division is correctly rounded, so compare it bitwise
        expected = {"token-mean": 1.25, "seq-mean-token-mean": 1.25,
                    "seq-mean-token-sum-norm": (torch.tensor(2.5) / 3.0).item()}[mode]
        assert loss.item() == expected


def test_masked_mean_selects_a_non_finite_value_away():
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    x = torch.tensor([[1.0, float("nan"), 3.0]])
    assert masked_mean(x, mask).item() == 2.0
    assert masked_mean(x, mask, denom=4.0).item() == 1.0

