"""Benchmark: warm-up SFT step time against padding (`warmup.length_buckets`) and the attention kernel.

The quickstart's demonstration batches waste ~32% of their padded tokens. `warmup.length_buckets: k` sorts a
batch by length and runs k micro-batches, each padded to its own longest (same token-mean loss). This times
the library's own SFT step (`sft_trainer(...).update`) on the quickstart teacher or student for k in
--buckets, with transformers' `sdpa` attention (the default) and `eager`, on the same pre-built batches
(demo building excluded), all variants in one process, and prints/writes the median and min ms per step and
the ratio to k=1 sdpa.

    python bench/sft_buckets.py [--model teacher|student] [--steps 35] [--buckets 1,2,4] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import machine_meta, write_result

from steprl.agents.policy import build_policy
from steprl.config import load_config
from steprl.learners.config import WarmupConfig
from steprl.learners.trainer import sft_trainer
from steprl.run.loop.demos import demo_batches


def time_variant(cfg, mcfg, batches, attn: str, buckets: int, warm: int) -> list[float]:
    """ms of each SFT step after `warm` untimed ones, from a fresh model."""
    policy = build_policy(mcfg, cfg.tokenizer, cfg.run.seed)
    policy.model.set_attn_implementation(attn)
    wcfg = WarmupConfig(steps=len(batches), lr=cfg.warmup.lr, length_buckets=buckets)
    trainer = sft_trainer(policy.model, wcfg, cfg.run.seed, policy.tokenizer.pad_token_id)
    out = []
    for k, batch in enumerate(batches):
        t0 = time.perf_counter()
        trainer.update(batch)
        if k >= warm:
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    """Time the variants and print one line each."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("teacher", "student"), default="teacher")
    ap.add_argument("--steps", type=int, default=35)
    ap.add_argument("--buckets", default="1,2,4")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    cfg = load_config("quickstart")
    mcfg = cfg.model if args.model == "teacher" else cfg.distill.student
    turn_format = build_policy(mcfg, cfg.tokenizer, cfg.run.seed).turn_format
    build = demo_batches(cfg.env.id, dict(cfg.env.kwargs), turn_format, cfg.run.seed, cfg.warmup.batch_size,
                         cfg.warmup.imperfect_rate)
    batches = [build(k) for k in range(args.steps)]
    rows, base = [], None
    for attn in ("sdpa", "eager"):
        for k in (int(b) for b in args.buckets.split(",")):
            ms = time_variant(cfg, mcfg, batches, attn, k, warm=5)
            med = statistics.median(ms)
            base = base or med
            rows.append({"attn": attn, "buckets": k, "median_ms": round(med, 1), "min_ms": round(min(ms), 1),
                         "vs_sdpa_1": round(med / base, 3)})
            print(rows[-1], flush=True)
    write_result(f"sft_buckets_{args.model}", {"machine": machine_meta(args.threads), "rows": rows,
                                                "steps": args.steps})


if __name__ == "__main__":
    main()
