"""The weight channel: rank 0's new policy version to the rollout workers, once per version.

Today the channel is Ray's object store (`RolloutPool.set_weights` puts the state dict once and
every worker reads the same object). An NCCL broadcast group from learner rank 0 to GPU rollout
workers would implement the same `WeightChannel` later. Each publish reports the bytes it moved,
which the RL stage writes to the step's metrics as `channel/weights_bytes`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from steprl.rollout.workers import RolloutPool


def state_bytes(weights: dict[str, torch.Tensor]) -> int:
    """Payload bytes of a state dict."""
    return sum(t.numel() * t.element_size() for t in weights.values())


class WeightChannel(Protocol):
    """Delivers one policy version to every rollout worker."""

    def publish(self, version: int, weights: dict[str, torch.Tensor]) -> int:
        """Send `weights` as `version`; returns the bytes moved (0 when nothing left the process)."""


class ObjectStoreChannel:
    """Weights through the Ray object store (one put per version), or handed over in-process (inline pool)."""

    def __init__(self, pool: RolloutPool, through_ray: bool) -> None:
        self.pool, self.through_ray = pool, bool(through_ray)

    def publish(self, version: int, weights: dict[str, torch.Tensor]) -> int:
        """pool.set_weights: one object, read by every worker."""
        self.pool.set_weights(version, weights)
        return state_bytes(weights) if self.through_ray else 0
