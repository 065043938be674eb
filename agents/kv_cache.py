"""A preallocated key/value cache for decoding: appends write in place instead of `torch.cat`.

transformers' `DynamicCache` concatenates the whole cache at every step (O(length) copies per
token per layer). `GrowingCache` keeps one buffer per layer with spare capacity (doubling when
full) and returns views of the filled part. It implements the one method the Llama/Qwen2
attention layers call, `update`, and is used only with an explicit 4-D attention mask and
explicit position ids (so the model never asks it for lengths or masks).
"""

from __future__ import annotations

import torch


class GrowingCache:
    """Per-layer [B, kv_heads, capacity, head_dim] buffers filled left to right, shared by all rows."""

    is_compileable = False

    def __init__(self, num_layers: int, initial_capacity: int = 256):
        """Empty cache for `num_layers` layers; buffers are allocated on the first update."""
        self.num_layers = num_layers
        self.initial_capacity = max(1, int(initial_capacity))
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.lengths = [0] * num_layers

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Append [B, H, L, D] keys/values of one layer; return views of everything cached for it."""
        n, add = self.lengths[layer_idx], key_states.shape[-2]
        buf_k, buf_v = self.keys[layer_idx], self.values[layer_idx]
        if buf_k is None or n + add > buf_k.shape[-2]:
            cap = max(self.initial_capacity, n + add)
            if buf_k is not None:
                cap = max(cap, 2 * buf_k.shape[-2])
            shape = (*key_states.shape[:-2], cap, key_states.shape[-1])
            new_k = key_states.new_empty(shape)
            new_v = value_states.new_empty((*value_states.shape[:-2], cap, value_states.shape[-1]))
            if buf_k is not None:
                new_k[..., :n, :] = buf_k[..., :n, :]
                new_v[..., :n, :] = buf_v[..., :n, :]
            self.keys[layer_idx], self.values[layer_idx] = buf_k, buf_v = new_k, new_v
        buf_k[..., n : n + add, :] = key_states
        buf_v[..., n : n + add, :] = value_states
        self.lengths[layer_idx] = n + add
        return buf_k[..., : n + add, :], buf_v[..., : n + add, :]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Columns cached (holes included)."""
        return self.lengths[layer_idx]

    def __len__(self) -> int:
        """Number of layers."""
        return self.num_layers
