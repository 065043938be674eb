"""Where and in which precision the learner computes: `learner.dtype` and the model's device.

`float32` is plain float32 (the default, bit for bit what the learner always did). `bfloat16` runs
the transformer body under `torch.autocast(device_type, dtype=torch.bfloat16)`: matmuls in bf16,
parameters, gradients and AdamW state stay float32 (the master weights), and `batch.token_logprobs`
takes the final norm's output to float32 and runs the LM head, log-softmax, entropy (and the KL
built from them) in float32 with autocast off. Batches are built on the CPU and moved to the model's
device per micro-batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import fields, replace
from typing import Any

import torch

from .config import DTYPES


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (cpu for a model without parameters)."""
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


def autocast(model: torch.nn.Module, dtype: str) -> contextlib.AbstractContextManager:
    """The precision context of a forward of `model`: nothing for float32, bf16 autocast on its device."""
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype != "bfloat16":
        raise ValueError(f"learner dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    return torch.autocast(model_device(model).type, dtype=torch.bfloat16)


def to_device(batch: Any, device: torch.device) -> Any:
    """A dataclass batch with every tensor field on `device` (the same object when nothing moves)."""
    moved = {f.name: getattr(batch, f.name).to(device) for f in fields(batch)
             if isinstance(getattr(batch, f.name), torch.Tensor) and getattr(batch, f.name).device != device}
    return replace(batch, **moved) if moved else batch
