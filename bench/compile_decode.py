"""Benchmark: does a `torch.compile`d decode step (static KV cache, inductor C++ on CPU) pay, compile included?

The sampler decodes with `FastCausalLM` (agents/fast_forward.py) on a growing cache: every token changes the
key length, so a compiled graph would be re-specialised per length. A compiled decoder needs static shapes:
a cache preallocated to a bucket length S, the new token written at position t with `index_copy_`, and
attention over all S slots with an additive mask that blocks the unwritten ones. This script builds that
static decode step from the same fused weights and times, for B rows, P prompt tokens and N new tokens:

  dynamic   FastCausalLM on its growing cache (what the sampler runs today), eager
  static    the static-cache step, eager (the price of attending over S slots instead of the written ones)
  compiled  the static-cache step under torch.compile(dynamic=False, backend inductor), one graph for all
            N steps (t and the mask are tensors, not Python ints)

and reports ms per decoded token step, the compile time of the first compiled call (cold: a fresh inductor
cache directory unless --warm), and the largest logit difference to the dynamic path (the compiled kernels
reduce in another order: not bitwise). Greedy next tokens are fed back, so every variant decodes the same
sequence while the logits agree.

    python bench/compile_decode.py [--models quickstart,10m] [--batch 64] [--prompt 16] [--new 32] [--warm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from _common import machine_meta, model_configs, write_result

from steprl.agents.fast_forward import FastCausalLM
from steprl.agents.model import build_model


class GrowingCache:
    """The sampler's cache contract (`update(k, v, layer) -> (k_all, v_all)`), concatenating per token."""

    def __init__(self, layers: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * layers
        self.v: list[torch.Tensor | None] = [None] * layers

    def update(self, k: torch.Tensor, v: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.k[i] = k if self.k[i] is None else torch.cat([self.k[i], k], dim=2)
        self.v[i] = v if self.v[i] is None else torch.cat([self.v[i], v], dim=2)
        return self.k[i], self.v[i]


def static_step(fast: FastCausalLM, ids: torch.Tensor, t: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
    """One decode token for every row at position t (a 0-d int64 tensor) over a static cache [layers, B, KV, S, D].

    `mask` [B, 1, 1, S] is additive (0 for written slots incl. t, -inf for the rest). Returns logits [B, V].
    """
    B = ids.shape[0]
    H, KV, D = fast.heads, fast.kv_heads, fast.head_dim
    x = F.embedding(ids, fast.embed)  # [B, 1, hidden]
    cos = fast.cos.index_select(0, t.view(1))[None, :, None, :]
    sin = fast.sin.index_select(0, t.view(1))[None, :, None, :]
    hidden = x.shape[-1]
    for i, ly in enumerate(fast.layers):
        h = F.rms_norm(x, (hidden,), ly.ln1, fast.eps)
        qkv = F.linear(h, ly.qkv_w, ly.qkv_b).view(B, 1, H + 2 * KV, D)
        qk, v = qkv[:, :, : H + KV], qkv[:, :, H + KV:]
        half = D // 2
        qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
        q, k = qk[:, :, :H].transpose(1, 2), qk[:, :, H:].transpose(1, 2)
        kc[i].index_copy_(2, t.view(1), k)
        vc[i].index_copy_(2, t.view(1), v.transpose(1, 2))
        attn = F.scaled_dot_product_attention(q, kc[i], vc[i], attn_mask=mask, scale=D ** -0.5, enable_gqa=H != KV)
        x = x + F.linear(attn.transpose(1, 2).reshape(B, 1, H * D), ly.o_w)
        h = F.rms_norm(x, (hidden,), ly.ln2, fast.eps)
        gate, up = F.linear(h, ly.gate_up_w).chunk(2, dim=-1)
        x = x + F.linear(F.silu(gate) * up, ly.down_w)
    return F.linear(F.rms_norm(x[:, -1], (hidden,), fast.norm, fast.eps), fast.lm_head)


def static_step_layers(fast: FastCausalLM, ids: torch.Tensor, t: torch.Tensor, kc: list[torch.Tensor],
                       vc: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """`static_step` with one cache tensor per layer: each is a graph input written in place with `index_copy_`
    (a view of one stacked tensor, as in `static_step`, may make the compiled graph copy the whole cache back)."""
    return static_step(fast, ids, t, kc, vc, mask)


def run_dynamic(fast: FastCausalLM, prompt: torch.Tensor, new: int) -> tuple[list[float], torch.Tensor]:
    """Prefill + `new` greedy tokens on the growing cache; (ms per decode step, logits of every step [new, B, V])."""
    B, P = prompt.shape
    cache = GrowingCache(len(fast.layers))
    pos = torch.arange(P)[None].expand(B, P)
    mask = torch.zeros(B, 1, P, P).masked_fill(torch.ones(P, P, dtype=torch.bool).triu(1), float("-inf"))
    logits = fast(prompt, mask, pos, cache).logits[:, -1]
    out, times = [], []
    for s in range(new):
        nxt = logits.argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        logits = fast(nxt, torch.zeros(B, 1, 1, P + s + 1), torch.full((B, 1), P + s), cache).logits[:, -1]
        times.append((time.perf_counter() - t0) * 1e3)
        out.append(logits)
    return times, torch.stack(out)


def run_static(fast: FastCausalLM, prompt: torch.Tensor, new: int, step,
               per_layer: bool = False) -> tuple[list[float], torch.Tensor]:
    """Prefill through the dynamic path (copied into the static cache), then `new` steps of `step`."""
    B, P = prompt.shape
    S = P + new
    cache = GrowingCache(len(fast.layers))
    pos = torch.arange(P)[None].expand(B, P)
    pmask = torch.zeros(B, 1, P, P).masked_fill(torch.ones(P, P, dtype=torch.bool).triu(1), float("-inf"))
    logits = fast(prompt, pmask, pos, cache).logits[:, -1]
    kc = torch.zeros(len(fast.layers), B, fast.kv_heads, S, fast.head_dim)
    vc = torch.zeros_like(kc)
    kc[:, :, :, :P] = torch.stack(cache.k)
    vc[:, :, :, :P] = torch.stack(cache.v)
    if per_layer:
        kc, vc = [x.clone() for x in kc], [x.clone() for x in vc]
    written = torch.full((B, 1, 1, S), float("-inf"))
    written[..., :P] = 0.0
    out, times = [], []
    for s in range(new):
        nxt = logits.argmax(-1, keepdim=True)
        written[..., P + s] = 0.0
        t0 = time.perf_counter()
        logits = step(fast, nxt, torch.tensor(P + s), kc, vc, written)
        times.append((time.perf_counter() - t0) * 1e3)
        out.append(logits)
    return times, torch.stack(out)


def bench_model(name: str, mc, args) -> dict:
    """The three variants for one model size."""
    torch.manual_seed(0)
    model = build_model(mc, 128, 0).eval()
    fast = FastCausalLM(model)
    prompt = torch.randint(3, 120, (args.batch, args.prompt))
    with torch.no_grad():
        dyn_ms, dyn_logits = run_dynamic(fast, prompt, args.new)
        dyn_ms, dyn_logits = run_dynamic(fast, prompt, args.new)  # second pass: allocator warm
        st_ms, st_logits = run_static(fast, prompt, args.new, static_step)
        compiled = torch.compile(static_step, dynamic=False, fullgraph=True)
        t0 = time.perf_counter()
        run_static(fast, prompt, 1, compiled)  # compiles (S = P + 1 is another shape: compile the real one below)
        first_small = time.perf_counter() - t0
        t0 = time.perf_counter()
        c_ms, c_logits = run_static(fast, prompt, args.new, compiled)
        first_call = time.perf_counter() - t0
        c_ms, c_logits = run_static(fast, prompt, args.new, compiled)
        compiled_l = torch.compile(static_step_layers, dynamic=False, fullgraph=True)
        t0 = time.perf_counter()
        run_static(fast, prompt, args.new, compiled_l, per_layer=True)
        first_layers = time.perf_counter() - t0
        cl_ms, cl_logits = run_static(fast, prompt, args.new, compiled_l, per_layer=True)
    row = {
        "model": name, "batch": args.batch, "prompt": args.prompt, "new": args.new,
        "dynamic_ms": round(statistics.median(dyn_ms), 3), "static_ms": round(statistics.median(st_ms), 3),
        "compiled_ms": round(statistics.median(c_ms), 3),
        "compiled_vs_dynamic": round(statistics.median(c_ms) / statistics.median(dyn_ms), 3),
        "compiled_layers_ms": round(statistics.median(cl_ms), 3),
        "compiled_layers_vs_dynamic": round(statistics.median(cl_ms) / statistics.median(dyn_ms), 3),
        "compile_s_layers": round(first_layers, 1),
        "max_logit_diff_compiled_layers": float((cl_logits - dyn_logits).abs().max()),
        "compile_s_first_shape": round(first_small, 1), "compile_s_second_shape": round(first_call, 1),
        "max_logit_diff_static": float((st_logits - dyn_logits).abs().max()),
        "max_logit_diff_compiled": float((c_logits - dyn_logits).abs().max()),
    }
    print(row, flush=True)
    return row


def main() -> None:
    """Time the variants per model size and write bench/results/compile_decode.json."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="quickstart,10m")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warm", action="store_true", help="keep the inductor cache (default: a fresh one: cold compile)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.warm:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_")
    rows = [bench_model(name, mc, args) for name, mc in model_configs(args.models)]
    write_result("compile_decode", {"machine": machine_meta(args.threads), "rows": rows, "args": vars(args)})


if __name__ == "__main__":
    main()
