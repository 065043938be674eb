"""The learner the RL stage drives, whatever its world size: one protocol, two implementations.

World size 1 is `LocalLearner` (the `Trainer` in the driver, as before); world size N > 1 is
`steprl.run.learning.learner_group.LearnerGroup` (N Ray actors in a torch.distributed group). Both compute
every micro-batch at `learner.threads_per_rank` threads and sum gradients in the same fixed tree
(learners/reduce.py), so they give the same bits (docs/architecture.md#learner).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from steprl.agents.policy import Policy
from steprl.config import Config
from steprl.learners.trainer import Trainer
from steprl.rollout.trajectory import Trajectory
from steprl.run.learning.ranks import HoldsTrainer, rank_threads, torch_threads
from steprl.run.learning.trainers import reference_model, rl_learner, sampling_filter


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


class LocalLearner(HoldsTrainer):
    """World size 1: the trainer in this process, computed at the per-rank thread count."""

    world_size = 1

    def __init__(self, trainer: Trainer, threads: int) -> None:
        self.trainer, self.threads = trainer, int(threads)

    def update(self, trajs: list[Trajectory]) -> dict[str, float]:
        """Trainer update at `threads` threads."""
        with torch_threads(self.threads):
            return self.trainer.update(trajs)

    def close(self) -> None:
        """Nothing to release."""



def make_learner(cfg: Config, policy: Policy, ckpt_dir: Path) -> Learner:
    """The RL learner of `cfg` on `policy`: in the driver at world size 1, a Ray actor group otherwise."""
    if cfg.learner.world_size == 1:
        return LocalLearner(rl_learner(cfg, policy, ckpt_dir), rank_threads(cfg))
    from steprl.run.learning.learner_group import LearnerGroup  # Ray only when there are ranks

    return LearnerGroup(cfg, policy, reference_model(cfg, ckpt_dir), sampling_filter(cfg, policy))

