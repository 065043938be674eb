"""Benchmark: warm-up SFT steps/s of the quickstart preset (the long pole of `steprl train quickstart`).

Builds the quickstart policy and its demonstration batches exactly as the `warmup` stage does
(`steprl.run.loop.demos.demo_batches`, batch 32), pre-builds the batches of steps 0..N-1 (so the timed
loop is the training step alone; demo building is timed separately), then runs N steps of
`sft_trainer(...).update` from step 0. Reports min/median ms per step, steps/s, the time of
building one batch of demonstrations, and the padding waste of the batches (pad tokens / all
tokens of the padded [B, T] tensors). Extra `key=value` overrides go to the config
(e.g. `warmup.steps=10`).
Prints one JSON line (for A/B runs) and writes bench/results/sft.json.

    python bench/sft.py [--steps 200] [--threads 2] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import machine_meta, write_result

from steprl.agents.policy import build_policy
from steprl.config import load_config
from steprl.learners.trainer import sft_trainer
from steprl.run.loop.demos import demo_batches


def padding_waste(batches) -> float:
    """Pad tokens / all tokens of the right-padded [B, max len] batches."""
    real = sum(len(t) for b in batches for t, _ in b)
    padded = sum(len(b) * max(len(t) for t, _ in b) for b in batches)
    return 1.0 - real / padded


def main() -> None:
    """Time N SFT steps of the quickstart warm-up."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("quickstart", overrides=args.overrides)
    policy = build_policy(cfg.model, cfg.tokenizer, cfg.run.seed)
    build = demo_batches(cfg.env.id, dict(cfg.env.kwargs), policy.turn_format, cfg.run.seed, cfg.warmup.batch_size,
                         cfg.warmup.imperfect_rate)
    t0 = time.perf_counter()
    batches = [build(k) for k in range(args.steps)]
    demo_ms = (time.perf_counter() - t0) / args.steps * 1e3
    trainer = sft_trainer(policy.model, cfg.warmup, cfg.run.seed, policy.tokenizer.pad_token_id)
    times, losses = [], []
    t_all = time.perf_counter()
    for k in range(args.steps):
        t = time.perf_counter()
        losses.append(trainer.update(batches[k])["loss"])
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t_all
    row = {"steps": args.steps, "min_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3,
           "first_ms": times[0] * 1e3, "total_s": total, "steps_per_s": args.steps / total,
           "demo_build_ms": demo_ms, "padding_waste": padding_waste(batches), "last_loss": losses[-1],
           "overrides": args.overrides}
    print(json.dumps(row))
    write_result("sft", {"meta": machine_meta(args.threads), "row": row})


if __name__ == "__main__":
    main()
