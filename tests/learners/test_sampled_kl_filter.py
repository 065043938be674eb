"""Sampled-KL distillation re-applies the sampler's filter and knows the episode length (numerics.md#distillation).

The student samples through the rollout filter (temperature, top-k, top-p, banned ids) and records the
filtered log-probs mu. The policy-gradient objective behind SampledKL must compute pi_old with the same
filter, or the TIS weight pi_old / mu is the kept probability mass instead of 1 at identical weights.
"""

from __future__ import annotations

import pytest
import torch

from steprl.learners.config import DistillLearnerConfig, LearnerConfig
from steprl.learners.trainer import DistillMode, distill_trainer
from steprl.rollout.trajectory import LogitFilter, filtered_logprobs

VOCAB = 16
FILTER = LogitFilter(temperature=0.9, top_k=6, top_p=0.8, banned=(0,))


@torch.no_grad()
def filtered_episodes(make_traj, model, n: int, filt: LogitFilter, seed: int = 0):
    """Toy episodes as the sampler plays them: prompt [3, 4], action, observation 9, action; each action drawn
    from the filtered distribution and its filtered log-prob recorded as the behaviour log-prob."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        toks, lps = [3, 4], [0.0, 0.0]
        for extra in (9, None):
            logp = filtered_logprobs(model(input_ids=torch.tensor([toks])).logits[0, -1], filt)
            a = int(torch.multinomial(logp.exp(), 1, generator=g))
            toks.append(a)
            lps.append(float(logp[a]))
            if extra is not None:
                toks.append(extra)
                lps.append(0.0)
        out.append(make_traj(i, toks, [0, 0, 1, 0, 1], lps, group=0, member=i))
    return out


def _sampled(student, teacher, rl_cfg: LearnerConfig, **kw):
    trainer, on, _ = distill_trainer(student, teacher, DistillLearnerConfig(lr=1e-3, micro_batch=8), full_vocab_max=1,
                                     sampled_cfg=rl_cfg, sample_temperature=FILTER.temperature, total_steps=2, **kw)
    assert on is DistillMode.SAMPLED
    return trainer


def test_sampled_kl_tis_weight_is_one_at_identical_weights_under_the_rollout_filter(traj, new_model):
    student, teacher = new_model(7, vocab=VOCAB, hidden=16), new_model(0, vocab=VOCAB)
    trajs = filtered_episodes(traj, student, 8, FILTER)
    m = _sampled(student, teacher, LearnerConfig(tis_cap=2.0), logit_filter=FILTER,
                 max_episode_tokens=64).update(trajs, DistillMode.SAMPLED)
    # pi_old and mu are float32 log-softmaxes of the same weights on the same prefix, once position by position
    # (sampling) and once over the padded batch: the logits differ by the rounding of length-16/32 dot products
    # (~1e-6 relative, |z| < 10), so |log pi_old - log mu| < 1e-5 and the ratio is 1 within 1e-4. Without the
    # filter the ratio is the kept probability mass (here ~0.5-0.9).
    assert m["ratio_mean"] == pytest.approx(1.0, abs=1e-4), m["ratio_mean"]
    assert m["ratio_max"] == pytest.approx(1.0, abs=1e-4)
    assert m["logprob_gap"] < 1e-4 and m["tis_clip_frac"] == 0.0


def test_sampled_kl_with_seq_mean_token_sum_norm_uses_the_episode_length(traj, new_model):
    student, teacher = new_model(7, vocab=VOCAB, hidden=16), new_model(0, vocab=VOCAB)
    trainer = _sampled(student, teacher, LearnerConfig(aggregation="seq-mean-token-sum-norm"), logit_filter=FILTER,
                       max_episode_tokens=48)
    assert trainer.objective.pg.norm_len == 48
    m = trainer.update(filtered_episodes(traj, student, 4, FILTER), DistillMode.SAMPLED)
    assert m["skipped"] == 0.0 and m["tokens_trained"] == 8.0
