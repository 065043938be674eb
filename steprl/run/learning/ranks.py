"""What every learner rank shares, world size 1 included: its thread count and the test hook that poisons a
micro-batch's gradient (steprl/run/learning/learner.py, learner_group.py, learner_rank.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from steprl.config import Config
from steprl.learners.trainer import Trainer


def rank_threads(cfg: Config) -> int:
    """Threads every rank (world size 1 included) computes with: learner.threads_per_rank, 0 meaning run.threads."""
    return cfg.learner.threads_per_rank or cfg.run.threads


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block at `n` torch threads, then restore the previous count."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def nan_hook(trainer: Trainer, step: int, micro_batch: int):
    """A reducer leaf hook that poisons one micro-batch's gradient at one trainer step."""
    def hook(k: int, flat: torch.Tensor) -> torch.Tensor:
        return torch.full_like(flat, float("nan")) if (trainer.step, k) == (step, micro_batch) else flat
    return hook


class HoldsTrainer:
    """The trainer-state part of a learner, the same in the driver (world size 1) and in every rank."""

    trainer: Trainer

    def weights(self) -> dict[str, torch.Tensor]:
        """Detached CPU copies of the weights."""
        return self.trainer.weights()

    def state_dict(self) -> dict:
        """The full trainer state (every rank holds a full replica; rank 0's is the one saved)."""
        return self.trainer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore a trainer state written at any world size."""
        self.trainer.load_state_dict(state)

    def plant_nan(self, step: int, micro_batch: int) -> None:
        """Test hook: poison one micro-batch's gradient (only the rank that computes it sees the hook fire)."""
        self.trainer.guard.reducer.leaf_hook = nan_hook(self.trainer, step, micro_batch)
