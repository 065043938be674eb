"""The learner re-applies the sampler's filter: at identical weights pi/mu is exactly 1 for every filter.

Before the shared `LogitFilter`, the learner computed log-probs of the full tempered distribution while
the sampler recorded those of the filtered one, so the TIS weight equalled the kept probability mass.
"""

from __future__ import annotations

import pytest
import torch

from steprl.learners.batch import token_logprobs
from steprl.learners.config import LearnerConfig
from steprl.learners.trainer import rl_trainer
from steprl.rollout.backends.hf import GenerationBatch
from steprl.rollout.sampler import SamplingParams

FILTERS = {
    "top_k": SamplingParams(top_k=4),
    "top_p": SamplingParams(top_p=0.7),
    "both": SamplingParams(temperature=0.8, top_k=6, top_p=0.8),
    "banned": SamplingParams(banned=(0, 1, 5)),
}


def _episodes(model, params: SamplingParams, make_traj, n: int = 8):
    """n sampled continuations of a fixed prompt with the hf backend under `params`."""
    prompts = [[2, 3 + i % 4] for i in range(n)]
    gen = GenerationBatch(model, prompts, list(range(100, 100 + n)), params, 0)
    res = gen.generate_turn([True] * n, [0] * n, [10] * n, [()] * n, lambda ids: "")
    trajs = []
    for i, (p, r) in enumerate(zip(prompts, res)):
        trajs.append(make_traj(i, p + r.tokens, [0] * len(p) + [1] * len(r.tokens), [0.0] * len(p) + r.logprobs,
                               reward=float(i % 2), group=i // 4, member=i % 4))
    return trajs


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_step0_logprob_gap_is_zero_under_filter(name, new_model, traj):
    params = FILTERS[name]
    model = new_model(3)
    trajs = _episodes(model, params, traj)
    if params.banned:
        assert not any(t in params.banned for tr in trajs for t, m in zip(tr.tokens, tr.action_mask) if m)
    trainer = rl_trainer(model, LearnerConfig(lr=1e-3), total_steps=1, logit_filter=params.logit_filter)
    stats = trainer.update(trajs)
    assert abs(stats["logprob_gap"]) < 1e-6, stats["logprob_gap"]
    assert abs(stats["ratio_mean"] - 1.0) < 1e-6 and abs(stats["ratio_max"] - 1.0) < 1e-5  # fp32 rounding


def test_filtered_entropy_and_gradient_are_finite(new_model):
    model = new_model(1)
    tokens = torch.tensor([[2, 3, 4, 5, 6, 7]])
    params = SamplingParams(top_k=3, top_p=0.9, banned=(0,))
    logp, ent = token_logprobs(model, tokens, torch.ones_like(tokens), logit_filter=params.logit_filter)
    assert torch.isfinite(ent).all()
    (ent.sum() + torch.where(torch.isfinite(logp), logp, 0.0).sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_chunked_logprobs_equal_one_chunk(new_model):
    model = new_model(2)
    tokens = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9], [2, 9, 8, 7, 0, 0, 0, 0]])
    attn = (torch.arange(8)[None] < torch.tensor([[8], [4]])).long()
    flt = SamplingParams(top_p=0.9).logit_filter
    whole = token_logprobs(model, tokens, attn, logit_filter=flt)
    parts = token_logprobs(model, tokens, attn, logit_filter=flt, chunk_elements=2 * 16 * 3)  # 3 positions a chunk
    for a, b in zip(whole, parts):
        fa, fb = torch.isfinite(a), torch.isfinite(b)
        assert torch.equal(fa, fb) and torch.allclose(a[fa], b[fb], atol=1e-6)
