"""The KL penalty compares like with like: the reference's log-probs go through the sampler's filter too
(review finding 3).

Before, the policy's log-probs were those of the top-k/top-p-filtered distribution and the reference's those
of the unfiltered one, so at identical weights k3 was 0.005 (top_p 0.9) / 0.066 (top_k 20), with a non-zero
gradient pulling the policy away from its own reference. At identical weights, policy and reference run the
same code path on the same bits, so the comparison is exact: k3 = (r - 1) - log r at log r = 0 is 0.
"""

from __future__ import annotations

import pytest
import torch

from steprl.learners.config import LearnerConfig
from steprl.learners.trainer import rl_trainer
from steprl.rollout.backends.hf import GenerationBatch
from steprl.rollout.sampler import SamplingParams

VOCAB = 48  # more than top_k 20, so the top-k filter really drops ids


@pytest.mark.parametrize("params", [SamplingParams(top_p=0.9), SamplingParams(top_k=20)], ids=["top_p", "top_k"])
def test_kl_to_an_identical_reference_is_exactly_zero_under_the_filter(params, traj, new_model):
    model = new_model(5, vocab=VOCAB, scale=0.5)
    n = 8
    prompts = [[2, 3 + i] for i in range(n)]
    res = GenerationBatch(model, prompts, list(range(300, 300 + n)), params, 0).generate_turn(
        [True] * n, [0] * n, [10] * n, [()] * n, lambda ids: "")
    # equal rewards: every advantage is exactly 0, so the KL term is the only source of gradient
    trajs = [traj(i, p + r.tokens, [0] * len(p) + [1] * len(r.tokens), [0.0] * len(p) + r.logprobs, reward=1.0,
                  group=0, member=i) for i, (p, r) in enumerate(zip(prompts, res))]
    cfg = LearnerConfig(lr=1e-3, kl_coef=0.5, tis_cap=0.0)
    trainer = rl_trainer(model, cfg, total_steps=1, logit_filter=params.logit_filter)  # reference: a copy
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = trainer.update(trajs)
    assert stats["tokens_trained"] > 0 and stats["skipped"] == 0.0
    assert stats["kl"] == 0.0
    assert stats["grad_norm"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # AdamW on a zero gradient
