"""The learner the RL stage drives, whatever its world size: one protocol, two implementations.

World size 1 is `LocalLearner` (the `Trainer` in the driver, as before); world size N > 1 is
`steprl.run.learner_group.LearnerGroup` (N Ray actors in a torch.distributed group). Both compute
every micro-batch at `learner.threads_per_rank` threads and sum gradients in the same fixed tree
(learners/reduce.py), so they give the same bits (docs/architecture.md#learner).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from steprl.agents.policy import Policy, load_policy
from steprl.config import Config
from steprl.learners.trainer import Trainer, rl_trainer
from steprl.rollout.trajectory import Trajectory
from steprl.run.ranks import nan_hook, rank_threads, torch_threads


class Learner(Protocol):
    """What the RL stage needs from a learner (any world size)."""

    world_size: int

    def update(self, trajs: list[Trajectory]) -> dict[str, float]:
        """One update; the driver's policy model holds the new weights afterwards."""

    def weights(self) -> dict[str, torch.Tensor]:
        """Detached CPU copies of the current weights."""

    def state_dict(self) -> dict:
        """The full learner state (gathered on rank 0), loadable at any world size."""

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` on every rank."""

    def plant_nan(self, step: int, micro_batch: int) -> None:
        """Test hook: micro-batch `micro_batch`'s gradient becomes NaN at trainer step `step`."""

    def close(self) -> None:
        """Release processes (no-op in the driver)."""


def reference_model(cfg: Config, ckpt_dir: Path) -> torch.nn.Module | None:
    """The frozen KL reference: the step-0 checkpoint's model when KL is on and it exists."""
    if cfg.learner.kl_coef <= 0:
        return None
    ref_dir = ckpt_dir / "step_000000" / "model"
    return load_policy(ref_dir).model if ref_dir.is_dir() else None


class LocalLearner:
    """World size 1: the trainer in this process, computed at the per-rank thread count."""

    world_size = 1

    def __init__(self, trainer: Trainer, threads: int) -> None:
        self.trainer, self.threads = trainer, int(threads)

    def update(self, trajs: list[Trajectory]) -> dict[str, float]:
        """Trainer update at `threads` threads."""
        with torch_threads(self.threads):
            return self.trainer.update(trajs)

    def weights(self) -> dict[str, torch.Tensor]:
        """The trainer's weights."""
        return self.trainer.weights()

    def state_dict(self) -> dict:
        """The trainer's state."""
        return self.trainer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the trainer's state."""
        self.trainer.load_state_dict(state)

    def plant_nan(self, step: int, micro_batch: int) -> None:
        """See `Learner.plant_nan`."""
        self.trainer.guard.reducer.leaf_hook = nan_hook(self.trainer, step, micro_batch)

    def close(self) -> None:
        """Nothing to release."""


def make_learner(cfg: Config, policy: Policy, ckpt_dir: Path) -> Learner:
    """The RL learner of `cfg` on `policy`: in the driver at world size 1, a Ray actor group otherwise."""
    if cfg.learner.world_size == 1:
        trainer = rl_trainer(policy.model, cfg.learner, temperature=cfg.rollout.sampling.temperature,
                             total_steps=cfg.rl.steps, pad_id=policy.tokenizer.pad_token_id,
                             ref_model=reference_model(cfg, ckpt_dir))
        return LocalLearner(trainer, rank_threads(cfg))
    from steprl.run.learner_group import LearnerGroup  # Ray only when there are ranks

    return LearnerGroup(cfg, policy, reference_model(cfg, ckpt_dir))

