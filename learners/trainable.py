"""Which of a model's tensors training changes: the one rule the trainer, its checkpoints, its weight syncs and
the rollback snapshots share."""

from __future__ import annotations

import torch


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state-dict entries training can change: all of them (full fine-tuning, as always), or, when some
    parameters are frozen (the base of a LoRA model), only those of the trainable parameters (its adapter).

    A policy version's weight sync, a checkpoint's weights and a rollback snapshot hold these."""
    state = model.state_dict(keep_vars=True)
    frozen = {k for k, v in state.items() if isinstance(v, torch.nn.Parameter) and not v.requires_grad}
    if not frozen:
        return {k: v.detach() for k, v in state.items()}
    return {k: v.detach() for k, v in state.items() if isinstance(v, torch.nn.Parameter) and v.requires_grad}
