"""Identity and copies of a model's weights."""

from __future__ import annotations

import hashlib

import torch

from steprl.agents.model import hash_tensors


def weights_fingerprint(model: torch.nn.Module) -> str:
    """blake2b over every tensor's name, shape, dtype and bytes: names one exact set of weights.

    Used to measure a policy's held-out numbers once per exact weights, and stored in distillation
    checkpoints so a distillation resumes only with the teacher it started with. The personalisation
    string stays `steprl-teacher` so fingerprints in existing checkpoints keep their meaning.
    """
    h = hashlib.blake2b(digest_size=16, person=b"steprl-teacher")
    return hash_tensors(h, sorted(model.state_dict().items())).hexdigest()


def weights_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of `model`'s state dict (what a rollout pool is sent: later updates cannot reach it)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
