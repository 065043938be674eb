"""Trainers built from a run's config (the RL stage and `steprl replay` rebuild the same one)."""

from __future__ import annotations

from pathlib import Path

from steprl.agents.policy import Policy, load_policy
from steprl.config import Config
from steprl.learners.trainer import Trainer, rl_trainer
from steprl.rollout.trajectory import LogitFilter


def rl_learner(cfg: Config, policy: Policy, ckpt_dir: Path) -> Trainer:
    """The RL learner on `policy`, with the step-0 checkpoint's weights as frozen reference when KL is on."""
    ref = None
    if cfg.learner.kl_coef > 0:
        ref_dir = ckpt_dir / "step_000000" / "model"
        ref = load_policy(ref_dir).model if ref_dir.is_dir() else None
    return rl_trainer(policy.model, cfg.learner, temperature=cfg.rollout.sampling.temperature,
                      total_steps=cfg.rl.steps, pad_id=policy.tokenizer.pad_token_id, ref_model=ref,
                      logit_filter=sampling_filter(cfg, policy),
                      max_episode_tokens=cfg.rollout.sampling.max_episode_tokens)


def sampling_filter(cfg: Config, policy: Policy) -> LogitFilter:
    """The rollout's sampling filter (temperature, top-k, top-p, the renderer's banned ids), re-applied by the
    learner so its log-probs are those of the distribution the tokens were drawn from."""
    s = cfg.rollout.sampling
    return LogitFilter(s.temperature, s.top_k, s.top_p, tuple(getattr(policy.turn_format, "banned_ids", ())))
