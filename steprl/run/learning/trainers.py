"""The RL trainer built from a run's config: the same one in the driver, in every learner rank and in
`steprl replay`, so a replayed update is the update that was trained."""

from __future__ import annotations

from pathlib import Path

import torch

from steprl.agents.device import resolve_device
from steprl.agents.policy import Policy, load_policy
from steprl.config import Config
from steprl.learners.reduce import Communicator
from steprl.learners.trainer import Trainer, rl_trainer
from steprl.rollout.trajectory import LogitFilter


def reference_model(cfg: Config, ckpt_dir: Path) -> torch.nn.Module | None:
    """The frozen KL reference: the step-0 checkpoint's model when KL is on and it exists."""
    if cfg.learner.kl_coef <= 0:
        return None
    ref_dir = ckpt_dir / "step_000000" / "model"
    return load_policy(ref_dir).model.to(resolve_device(cfg.run.device, fresh=False)) if ref_dir.is_dir() else None


def sampling_filter(cfg: Config, policy: Policy) -> LogitFilter:
    """The rollout's sampling filter (temperature, top-k, top-p, the renderer's banned ids), re-applied by the
    learner so its log-probs are those of the distribution the tokens were drawn from."""
    s = cfg.rollout.sampling
    return LogitFilter(s.temperature, s.top_k, s.top_p, tuple(getattr(policy.turn_format, "banned_ids", ())))


def build_rl_trainer(cfg: Config, model: torch.nn.Module, pad_id: int, ref: torch.nn.Module | None,
                     logit_filter: LogitFilter, comm: Communicator | None = None) -> Trainer:
    """The policy-gradient trainer of `cfg` on `model` (`comm`: this rank's data-parallel group, or alone)."""
    return rl_trainer(model, cfg.learner, temperature=cfg.rollout.sampling.temperature, total_steps=cfg.rl.steps,
                      pad_id=pad_id, ref_model=ref, comm=comm, logit_filter=logit_filter,
                      max_episode_tokens=cfg.rollout.sampling.max_episode_tokens)


def rl_learner(cfg: Config, policy: Policy, ckpt_dir: Path) -> Trainer:
    """The RL trainer on `policy` in this process, with the step-0 checkpoint as reference when KL is on."""
    return build_rl_trainer(cfg, policy.model, policy.tokenizer.pad_token_id, reference_model(cfg, ckpt_dir),
                            sampling_filter(cfg, policy))
