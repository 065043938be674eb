"""Benchmark: does `torch.compile` (inductor, CPU) of the warm-up SFT loss pay? Eager vs compiled, paired.

Two copies of the quickstart policy (same init) train on the same quickstart demonstration batches:
one through `SFTObjective.loss` as the library runs it (eager), one through the same loss computation
wrapped in `torch.compile(dynamic=False)` (forward + backward compiled; the AdamW step stays eager;
the weights are module parameters, graph inputs, so they update in place). Step k of both runs
back to back, so drift of a shared machine cancels in the per-step ratio. Reports compile + first
step seconds (cold or warm inductor cache: it says nothing about which), eager and compiled median
ms per step, the median paired ratio compiled/eager and the largest loss difference (compiled
kernels reduce in another order: not bitwise).

    python bench/sft_compile.py [--steps 25] [--threads 1]
    python bench/sft_compile.py --shapes-over 1800    # shapes a whole quickstart warm-up would compile
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections import Counter

import torch

from steprl.agents.policy import build_policy
from steprl.config import load_config
from steprl.learners.batch import token_logprobs
from steprl.learners.sft import length_buckets, sft_batch
from steprl.learners.trainer import sft_trainer
from steprl.run.demos import demo_batches
from steprl.run.sft import SFT_ATTENTION


def compiled_loss(objective):
    """Replace `objective.loss` with the same token-mean cross-entropy run through torch.compile."""

    def core(tokens: torch.Tensor, attn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logp, _ = token_logprobs(objective.model, tokens, attn, 1.0)
        return torch.where(mask > 0, -logp, torch.zeros_like(logp)).sum()

    fn = torch.compile(core, dynamic=False)

    def loss(examples, denominator: float | None = None) -> torch.Tensor:
        tokens, attn, mask = sft_batch(examples, objective.pad_id)
        return fn(tokens, attn, mask) / (mask.sum().clamp(min=1.0) if denominator is None else denominator)

    objective.loss = loss  # SFTObjective.update calls loss(bucket, total) with warmup.length_buckets > 1


def bucket_shapes(batches, buckets: int) -> Counter:
    """How often each [rows, T] micro-batch shape occurs once the batches are cut into length buckets (what
    SFTObjective.update runs; a compiled step with dynamic=False compiles once per shape)."""
    return Counter((len(b), max(len(t) for t, _ in b)) for ex in batches for b in length_buckets(ex, buckets))


def main() -> None:
    """Paired eager / compiled SFT steps on the quickstart warm-up."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes-over", type=int, default=0,
                    help="only count the distinct bucket shapes of the first N warm-up batches (no timing): how "
                         "many compiles a whole warm-up would need")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("quickstart")
    policy = build_policy(cfg.model, cfg.tokenizer, cfg.run.seed)
    build = demo_batches(cfg.env.id, dict(cfg.env.kwargs), policy.turn_format, cfg.run.seed, cfg.warmup.batch_size,
                         cfg.warmup.imperfect_rate)
    if args.shapes_over:
        counts = bucket_shapes((build(k) for k in range(args.shapes_over)), cfg.warmup.length_buckets)
        print(json.dumps({"batches": args.shapes_over, "distinct_shapes": len(counts),
                          "shapes": {f"{b}x{t}": n for (b, t), n in counts.most_common()}}))
        return
    batches = [build(k) for k in range(args.steps)]
    pad = policy.tokenizer.pad_token_id
    policy.model.set_attn_implementation(SFT_ATTENTION)  # as the warm-up stage trains
    eager = sft_trainer(policy.model, cfg.warmup, cfg.run.seed, pad)
    comp = sft_trainer(copy.deepcopy(policy.model), cfg.warmup, cfg.run.seed, pad)
    shapes = bucket_shapes(batches, cfg.warmup.length_buckets)
    compiled_loss(comp.objective)
    t = time.perf_counter()
    comp.update(batches[0])
    first_s = time.perf_counter() - t
    eager.update(batches[0])
    te, tc, dl = [], [], []
    for k in range(1, args.steps):
        t = time.perf_counter()
        le = eager.update(batches[k])["loss"]
        te.append(time.perf_counter() - t)
        t = time.perf_counter()
        lc = comp.update(batches[k])["loss"]
        tc.append(time.perf_counter() - t)
        dl.append(abs(le - lc))
    print(json.dumps({"threads": args.threads, "compile_first_step_s": first_s, "distinct_shapes": len(shapes),
                      "eager_median_ms": statistics.median(te) * 1e3, "compiled_median_ms": statistics.median(tc) * 1e3,
                      "paired_compiled_over_eager": statistics.median(c / e for e, c in zip(te, tc)),
                      "max_abs_loss_diff": max(dl)}))


if __name__ == "__main__":
    main()
