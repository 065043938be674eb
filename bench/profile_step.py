"""Profile: what bounds a decode step and a training step, by kernel family (torch.profiler, CPU).

For each model size it times and profiles two pieces of the RL step:

  decode  the sampler's fused forward (`agents.fast_forward.FastCausalLM` on a `GrowingCache`): B rows, a P-token
          prompt, then N greedy decode steps of one token per row (what `GenerationBatch` runs per token);
  train   one learner-sized training step of the transformers model: forward, token cross-entropy, backward and
          AdamW on [B, P + N] tokens (the learner's policy-gradient loss has the same kernels plus a few elementwise).

Self CPU time of every aten op is grouped into families: `matmul` (mm/addmm/bmm/linear backward GEMMs),
`attention` (scaled-dot-product attention and its backward), `other kernels` (norms, rotary, softmax, elementwise,
copies, optimizer), and `overhead` = wall - all op time (Python, dispatch, allocation between ops). The table also
gives the FLOP rate the step achieved (2N FLOP per decoded token, 6N per trained token, N = parameters), the rate of
its matmul kernels alone (the same FLOPs over their time), and the machine's square-matmul rate measured in the same
process (`bench/ceiling.py`), so one reads directly whether a step is bound by FLOPs (matmul share high, matmul rate
near the ceiling) or by the fixed cost of many small kernels (many ops per token, low matmul rate).

    python bench/profile_step.py [--models quickstart,10m] [--batch 64] [--prompt 40] [--new 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from _common import char_vocab, machine_meta, markdown_table, model_configs, write_result
from ceiling import measure_gflops

from steprl.agents.fast_forward import FastCausalLM
from steprl.agents.kv_cache import GrowingCache
from steprl.agents.model import build_model, count_parameters

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear", "aten::addmv",
          "aten::mv", "aten::_mkldnn_matmul", "mkldnn::")
ATTENTION = ("attention", "aten::_scaled_dot_product", "flash")


def family(name: str) -> str:
    """The kernel family of an aten op name."""
    low = name.lower()
    if any(k in low for k in ATTENTION):
        return "attention"
    if name.startswith(MATMUL):
        return "matmul"
    return "other kernels"


def decode_loop(fast: FastCausalLM, prompt: torch.Tensor, new: int) -> float:
    """Prefill, then `new` one-token steps; returns the seconds of the decode steps alone."""
    B, P = prompt.shape
    cache = GrowingCache(len(fast.layers), initial_capacity=P + new)
    pos = torch.arange(P)[None].expand(B, P)
    mask = torch.zeros(B, 1, P, P).masked_fill(torch.ones(P, P, dtype=torch.bool).triu(1), float("-inf"))
    logits = fast(prompt, mask, pos, cache).logits[:, -1]
    t0 = time.perf_counter()
    for s in range(new):
        nxt = logits.argmax(-1, keepdim=True)
        logits = fast(nxt, torch.zeros(B, 1, 1, P + s + 1), torch.full((B, 1), P + s), cache).logits[:, -1]
    return time.perf_counter() - t0


def train_step(model, opt, ids: torch.Tensor) -> None:
    """Forward, next-token cross-entropy, backward, AdamW."""
    logits = model(input_ids=ids).logits
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def breakdown(fn, repeats: int) -> tuple[float, dict[str, float], int]:
    """(wall seconds of one call, self seconds per family for one call, aten ops per call) under the profiler."""
    fn()  # warm: allocator, oneDNN primitives
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        wall = (time.perf_counter() - t0) / repeats
    fam: dict[str, float] = defaultdict(float)
    ops = 0
    for ev in prof.key_averages():
        if not ev.key.startswith(("aten::", "mkldnn::")):
            continue
        fam[family(ev.key)] += ev.self_cpu_time_total / 1e6 / repeats
        ops += ev.count
    return wall, dict(fam), ops // repeats


def untimed_wall(fn, repeats: int) -> float:
    """Wall seconds of one call without the profiler (its own cost inflates small-kernel steps)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def rows_for(name: str, mc, args, gflops: float) -> list[dict]:
    """The decode and train rows of one model size."""
    torch.manual_seed(0)
    model = build_model(mc, char_vocab(), 0)
    params = count_parameters(model)
    prompt = torch.randint(3, char_vocab(), (args.batch, args.prompt))
    fast = FastCausalLM(model.eval())
    out = []
    with torch.no_grad():
        decode = lambda: decode_loop(fast, prompt, args.new)  # noqa: E731
        wall = untimed_wall(decode, args.repeats)
        prof_wall, fam, ops = breakdown(decode, args.repeats)
    tokens = args.batch * args.new
    out.append(summarise(name, "decode", params, wall, prof_wall, fam, ops, tokens, 2 * params * tokens, gflops,
                         args.new))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(3, char_vocab(), (args.batch, args.prompt + args.new))
    step = lambda: train_step(model, opt, ids)  # noqa: E731
    wall = untimed_wall(step, max(1, args.repeats // 2))
    prof_wall, fam, ops = breakdown(step, max(1, args.repeats // 2))
    tokens = ids.numel()
    out.append(summarise(name, "train", params, wall, prof_wall, fam, ops, tokens, 6 * params * tokens, gflops, 1))
    return out


def summarise(name, piece, params, wall, prof_wall, fam, ops, tokens, flops, gflops, steps) -> dict:
    """One table row: rates from the unprofiled wall; family shares of the profiled wall (the profiler's own cost
    per op lands in `overhead`); the matmul kernels' rate from their profiled time; aten ops (nested ones included)
    per forward step."""
    op_time = sum(fam.values())
    mm = fam.get("matmul", 0.0)
    row = {
        "model": name, "params": params, "piece": piece, "wall_ms": wall * 1e3, "tok_s": tokens / wall,
        "gflops_step": flops / wall / 1e9, "ceiling_gflops": gflops, "of_ceiling": flops / wall / 1e9 / gflops,
        "gflops_matmul": flops / max(mm, 1e-9) / 1e9 if mm else float("nan"),
        "matmul": mm / prof_wall, "attention": fam.get("attention", 0.0) / prof_wall,
        "other": fam.get("other kernels", 0.0) / prof_wall, "overhead": max(0.0, prof_wall - op_time) / prof_wall,
        "ops_per_step": ops / steps,
    }
    print(row, flush=True)
    return row


def main() -> None:
    """Profile both pieces at every model size; print the table and write bench/results/profile_step.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="quickstart,10m")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=40)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gflops = measure_gflops(args.threads)
    rows = [r for name, mc in model_configs(args.models) for r in rows_for(name, mc, args, gflops)]
    cols = [("model", "model", ""), ("piece", "piece", ""), ("wall_ms", "ms", ".1f"), ("tok_s", "tok/s", ".0f"),
            ("of_ceiling", "of fp32 ceiling", ".1%"), ("gflops_matmul", "matmul kernels GFLOP/s", ".0f"),
            ("matmul", "matmul", ".0%"), ("attention", "attention", ".0%"), ("other", "other kernels", ".0%"),
            ("overhead", "overhead", ".0%"), ("ops_per_step", "aten ops / forward step", ".0f")]
    print(f"\nceiling {gflops:.1f} GFLOP/s ({args.threads} threads)\n")
    print(markdown_table(rows, cols))
    write_result("profile_step", {"meta": machine_meta(args.threads), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
