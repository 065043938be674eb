"""What every learner rank shares, world size 1 included: its thread count and the test hook that poisons a
micro-batch's gradient (steprl/run/learner.py, learner_group.py, learner_rank.py)."""

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
