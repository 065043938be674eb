"""A transformers causal LM called under bf16 autocast: the sampler's forward when the fused one does not apply.

`rollout.dtype=bfloat16` with `rollout.fast_forward=false` (or an architecture agents/fast_forward.py does
not cover) decodes with transformers' own forward inside `torch.autocast(device, dtype=torch.bfloat16)`.
Its LM head then runs under autocast too (transformers gives no separate head call with a KV cache); the
logits are cast to float32 before any log-softmax, so log-probs are still computed in float32.
"""

from __future__ import annotations

from typing import Any

import torch


class AutocastLM:
    """Wraps `model` so each call runs under autocast at `dtype`; exposes what the sampler reads."""

    def __init__(self, model: Any, dtype: torch.dtype = torch.bfloat16) -> None:
        """The wrapped model and the autocast precision."""
        self.model, self.dtype, self.config = model, dtype, model.config

    def get_output_embeddings(self) -> torch.nn.Module:
        """The LM head (the sampler reads the vocabulary size and device from it)."""
        return self.model.get_output_embeddings()

    @torch.no_grad()
    def __call__(self, **kwargs: Any) -> Any:
        """model(**kwargs) under autocast on the model's device."""
        device = self.model.get_output_embeddings().weight.device.type
        with torch.autocast(device, dtype=self.dtype):
            return self.model(**kwargs)
