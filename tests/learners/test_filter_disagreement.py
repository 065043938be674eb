"""The learner keeps every token the sampler emitted, and counts where its own top-k/top-p set disagrees
(review finding 2).

The learner's logits are never the sampler's bits (KV-cache decode vs full forward, bf16), so a sampled
token at the edge of the top-k/top-p set can fall outside the learner's recomputed set. Its log-prob was
-inf and the loss NaN (the step skipped) for every loss type. Here the learner's LM-head row of one sampled
token is negated after sampling, a planted logit perturbation that pushes that token out of the learner's
set; an independent oracle (a plain sort of the learner's logits) says where it falls out.
"""

from __future__ import annotations

import math

import pytest
import torch

from steprl.learners.batch import token_terms
from steprl.learners.config import LearnerConfig
from steprl.learners.trainer import rl_trainer
from steprl.rollout.backends.hf import GenerationBatch
from steprl.rollout.sampler import SamplingParams

FILTERS = {"top_k": SamplingParams(top_k=4), "top_p": SamplingParams(top_p=0.6)}


def _episodes(model, params, make_traj, n=8):
    """n sampled continuations (hf backend) of short prompts under `params`."""
    prompts = [[2, 3 + i % 4] for i in range(n)]
    gen = GenerationBatch(model, prompts, list(range(200, 200 + n)), params, 0)
    res = gen.generate_turn([True] * n, [0] * n, [8] * n, [()] * n, lambda ids: "")
    return [make_traj(i, p + r.tokens, [0] * len(p) + [1] * len(r.tokens), [0.0] * len(p) + r.logprobs,
                      reward=float(i % 2), group=i // 4, member=i % 4) for i, (p, r) in enumerate(zip(prompts, res))]


def _oracle_outside(model, trajs, params) -> int:
    """Action tokens outside the learner's kept set, from a plain sort of its logits (no library filter code)."""
    n = 0
    with torch.no_grad():
        for t in trajs:
            z = model(input_ids=torch.tensor([t.tokens])).logits[0].float() / params.temperature
            for pos in range(1, len(t.tokens)):
                if not t.action_mask[pos]:
                    continue
                p = torch.softmax(z[pos - 1].double(), -1).tolist()
                order = sorted(range(len(p)), key=lambda v: (-p[v], v))
                if params.top_k:
                    kept = order[: params.top_k]
                else:
                    kept, mass = [], 0.0
                    for v in order:
                        if kept and mass >= params.top_p:
                            break
                        kept.append(v)
                        mass += p[v]
                n += t.tokens[pos] not in kept
    return n


@pytest.mark.parametrize("loss", ["ppo", "gspo", "cispo"])
@pytest.mark.parametrize("name", sorted(FILTERS))
def test_sampled_token_outside_the_learners_set_is_kept_and_counted(name, loss, new_model, traj):
    params = FILTERS[name]
    sampler = new_model(4)
    trajs = _episodes(sampler, params, traj)
    learner = new_model(4)
    y = trajs[0].tokens[2]  # the first sampled token of episode 0
    with torch.no_grad():
        learner.lm_head.weight[y].neg_()  # the planted perturbation: y drops out of the learner's set
    expected = _oracle_outside(learner, trajs, params)
    assert expected >= 1  # the perturbation really moved a sampled token outside the learner's set

    tokens = torch.tensor([trajs[0].tokens])
    terms = token_terms(learner, tokens, torch.ones_like(tokens), logit_filter=params.logit_filter)
    assert bool(terms.outside[0, 1])  # target at column 1 is token 2, the perturbed one
    assert torch.isfinite(terms.logprobs).all() and torch.isfinite(terms.entropy).all()

    trainer = rl_trainer(learner, LearnerConfig(lr=1e-3, loss=loss), total_steps=1, logit_filter=params.logit_filter)
    stats = trainer.update(trajs)
    assert stats["skipped"] == 0.0 and stats["guard/nonfinite"] == 0.0
    assert math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"]) and stats["grad_norm"] > 0
    assert stats["filter_disagreements"] == float(expected)
    assert all(torch.isfinite(p).all() for p in learner.parameters())


def test_no_disagreement_when_learner_and_sampler_agree(new_model, traj):
    params = FILTERS["top_k"]
    model = new_model(4)
    trajs = _episodes(model, params, traj)
    stats = rl_trainer(model, LearnerConfig(lr=1e-3), logit_filter=params.logit_filter).update(trajs)
    assert stats["filter_disagreements"] == 0.0 and abs(stats["logprob_gap"]) < 1e-6
