"""A lean inference forward for Llama/Qwen2 models: the same math as `model(...)`, fewer kernels per token.

Decoding a small model on a CPU is bound by the fixed cost of each kernel, not by FLOPs (BENCHMARKS.md:
the quickstart model decodes at 5-9% of the matmul ceiling). transformers' forward runs ~45 kernels per
layer per token; this one runs ~20: q/k/v and gate/up projections fused into one matmul each (weights
concatenated once per weight version), `rms_norm` as one kernel, rotary embedding applied to q and k
together from a precomputed cos/sin table, and the final norm and LM head only on the kept positions.

Results equal transformers' forward to float32 rounding (~1e-6; tests compare them), and they are
deterministic: every worker runs the same code on the same weights, so rollouts stay bit-identical
across workers. Only the sampler uses it; the learner keeps transformers' forward (autograd).

`rollout.dtype=bfloat16` is honoured here (not bypassed): the seven matmuls of each layer run on
bfloat16 copies of the fused weights (made once per weight version) with bf16 inputs and float32
outputs; embeddings, norms, rotary, attention, the KV cache, the residual stream, the final norm and
the LM head stay float32, so the sampler's log-probs come from float32 logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class _Layer:
    """One decoder layer's weights, fused for inference."""

    ln1: torch.Tensor
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor | None
    o_w: torch.Tensor
    ln2: torch.Tensor
    gate_up_w: torch.Tensor
    down_w: torch.Tensor


@dataclass
class _Output:
    """What the sampler reads from a forward: `.logits` [B, kept, V]."""

    logits: torch.Tensor


def supports(model: Any) -> bool:
    """True for the Llama/Qwen2 shapes this forward implements (silu MLP, default RoPE, no sliding window)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in ("llama", "qwen2"):
        return False
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    return (getattr(cfg, "hidden_act", "silu") == "silu" and rope_type == "default"
            and not getattr(cfg, "use_sliding_window", False) and not getattr(cfg, "mlp_bias", False)
            and not (cfg.model_type == "llama" and getattr(cfg, "attention_bias", False)))


def decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Attention of one new position per row as two batched matmuls and a softmax: q [B, H, 1, D], k/v [B, KV, S, D],
    additive mask [B, 1, 1, S] -> [B, H, 1, D].

    CPU `scaled_dot_product_attention` runs its flash kernel even for a single query, and at decode shapes that kernel,
    not the matmuls, was the largest share of a quickstart-sized decode step (`python bench/profile_step.py`: 47% of
    the step at batch 64); the plain form is the same math (float32 rounding apart). Grouped-query heads share their
    key/value head by viewing the G = H / KV query heads of a group as G rows of one query block (no key copy).
    """
    B, H, _, D = q.shape
    KV = k.shape[1]
    qg = q.reshape(B, KV, H // KV, D)  # head h belongs to kv head h // G, as in repeat_kv
    scores = torch.matmul(qg, k.transpose(-1, -2)).mul_(scale).add_(mask)  # [B, KV, G, S]; mask broadcasts over KV, G
    return torch.matmul(torch.softmax(scores, dim=-1), v).reshape(B, H, 1, D)


class FastCausalLM:
    """Wraps a Llama/Qwen2 `*ForCausalLM` for the sampler; call `refresh()` after its weights change."""

    def __init__(self, model: Any, dtype: torch.dtype = torch.float32) -> None:
        """Precompute the rotary table and fuse the current weights; `dtype` is the layers' matmul precision."""
        if not supports(model):
            raise ValueError(
                f"FastCausalLM supports Llama/Qwen2 with silu and default RoPE, not {type(model).__name__}"
            )
        self.model = model
        self.dtype = dtype
        self.config = model.config
        text = model.config.get_text_config()
        self.heads, self.kv_heads = text.num_attention_heads, text.num_key_value_heads
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.eps = float(text.rms_norm_eps)
        rotary = model.model.rotary_emb
        self.inv_freq = rotary.inv_freq.float().clone()
        self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        self._rope_table(int(text.max_position_embeddings))
        self.refresh()

    def _rope_table(self, length: int) -> None:
        """cos/sin of positions [0, length) as transformers computes them (position x inv_freq in float32)."""
        freqs = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos, self.sin = emb.cos() * self.rope_scale, emb.sin() * self.rope_scale

    def get_output_embeddings(self) -> torch.nn.Module:
        """The LM head (the sampler reads the vocabulary size from it)."""
        return self.model.get_output_embeddings()

    @torch.no_grad()
    def refresh(self) -> None:
        """Re-fuse the weights from the wrapped model (after `load_state_dict`)."""
        m = self.model.model
        self.embed = m.embed_tokens.weight
        self.norm = m.norm.weight
        self.lm_head = self.model.get_output_embeddings().weight
        self.layers = []
        for layer in m.layers:
            a, mlp = layer.self_attn, layer.mlp
            bias = None
            if a.q_proj.bias is not None:
                bias = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]).contiguous()
            low = self.dtype  # float32: .to() returns the tensor itself
            self.layers.append(_Layer(
                ln1=layer.input_layernorm.weight,
                qkv_w=torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).contiguous().to(low),
                qkv_b=None if bias is None else bias.to(low),
                o_w=a.o_proj.weight.to(low),
                ln2=layer.post_attention_layernorm.weight,
                gate_up_w=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous().to(low),
                down_w=mlp.down_proj.weight.to(low),
            ))

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """F.linear in the layers' precision: float32 as is; bf16 inputs and weights, float32 output."""
        if w.dtype == torch.float32:
            return F.linear(x, w, b)
        return F.linear(x.to(w.dtype), w, b).float()

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: Any,
                 use_cache: bool = True, logits_to_keep: int = 1) -> _Output:
        """Logits of the last `logits_to_keep` positions; appends the new keys/values to `cache`.

        `attention_mask` is the additive float mask [B, 1, L, S] the sampler builds (0 allowed, min blocked).
        """
        B, L = input_ids.shape
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        x = F.embedding(input_ids, self.embed)
        if (
            int(position_ids.max()) >= self.cos.shape[0]
        ):  # like transformers, positions may pass max_position_embeddings
            self._rope_table(2 * (int(position_ids.max()) + 1))
        cos = self.cos[position_ids][:, :, None, :]  # [B, L, 1, D]: broadcast over q and k heads
        sin = self.sin[position_ids][:, :, None, :]
        hidden = x.shape[-1]
        for i, ly in enumerate(self.layers):
            h = F.rms_norm(x, (hidden,), ly.ln1, self.eps)
            qkv = self._linear(h, ly.qkv_w, ly.qkv_b).view(B, L, H + 2 * KV, D)
            qk, v = qkv[:, :, : H + KV], qkv[:, :, H + KV :]
            half = D // 2
            rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
            qk = qk * cos + rotated * sin
            q = qk[:, :, :H].transpose(1, 2)
            k = qk[:, :, H:].transpose(1, 2)
            k_all, v_all = cache.update(k, v.transpose(1, 2), i)
            if L == 1:
                attn = decode_attention(q, k_all, v_all, attention_mask, D ** -0.5)
            else:
                attn = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=attention_mask, scale=D ** -0.5,
                                                      enable_gqa=H != KV)
            x = x + self._linear(attn.transpose(1, 2).reshape(B, L, H * D), ly.o_w)
            h = F.rms_norm(x, (hidden,), ly.ln2, self.eps)
            gate, up = self._linear(h, ly.gate_up_w).chunk(2, dim=-1)
            x = x + self._linear(F.silu(gate) * up, ly.down_w)
        x = x[:, -logits_to_keep:] if logits_to_keep else x
        return _Output(F.linear(F.rms_norm(x, (hidden,), self.norm, self.eps), self.lm_head))
