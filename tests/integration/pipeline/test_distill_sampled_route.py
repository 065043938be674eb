"""The distill stage builds its sampled-KL trainer like the RL stage builds its trainer: the rollout's filter and
the episode length go through (docs/numerics.md#distillation).

`distill.full_vocab_max=8` sends the smoke preset's vocabulary down the sampled route without a large model.
"""

from __future__ import annotations

import pytest

from steprl.agents.policy import build_policy
from steprl.learners.trainer import DistillMode
from steprl.run.learning.trainers import sampling_filter
from steprl.stages.distill import build_student, make_trainer

SAMPLED = ["distill.full_vocab_max=8", "distill.method=on_policy", "rollout.sampling.top_k=5",
           "rollout.sampling.top_p=0.9", "rollout.sampling.temperature=0.8", "rollout.sampling.max_episode_tokens=96"]


def _trainer(smoke, *extra):
    cfg = smoke(*SAMPLED, *extra)
    teacher = build_policy(cfg.model, cfg.tokenizer, cfg.run.seed)
    student = build_student(cfg, teacher)
    trainer, on, off = make_trainer(cfg, student, teacher)
    assert (on, off) == (DistillMode.SAMPLED, None)
    return cfg, student, trainer


def test_sampled_distill_learner_reapplies_the_rollout_filter(smoke):
    cfg, student, trainer = _trainer(smoke)
    filt = trainer.objective.pg.logit_filter
    assert filt == sampling_filter(cfg, student)  # what the student's pool samples through
    assert (filt.temperature, filt.top_k, filt.top_p) == (0.8, 5, 0.9)


@pytest.mark.parametrize("norm_len,expected", [(0, 96), (40, 40)])
def test_sampled_distill_with_seq_mean_token_sum_norm_does_not_raise(smoke, norm_len, expected):
    _, _, trainer = _trainer(smoke, "learner.aggregation=seq-mean-token-sum-norm", f"learner.norm_len={norm_len}")
    assert trainer.objective.pg.norm_len == expected  # learner.norm_len, else the episode length
