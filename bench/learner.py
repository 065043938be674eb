"""Benchmark: trained tokens/s of `rl_trainer(...).update` on realistic trajectories, and the fraction of the ceiling.

For each model (quickstart and ~10M, random-init, char vocabulary) and episode shape
(single-turn: Calculator max_turns=1; multi-turn: max_turns=3, the quickstart preset), the
trajectories of RL step 0 of the quickstart preset (64 episodes) are played once with the
inline pool; then `rl_trainer(...).update` (the quickstart learner section: GRPO, PPO loss, learner
micro-batch 64, 1 epoch, AdamW, guards on) is timed on them --repeats times, best of. Each
update changes the weights, so later repeats see slightly off-policy data; the work is the same.

Trained tokens: `processed` = real (non-pad) tokens through forward + backward (the compute);
`action` = tokens with a loss (`StepStats.tokens_trained`). Padding is computed too and counted
in `padded`. Fraction of ceiling = processed tok/s / (measured GFLOP/s / 6·N).
Prints a table and writes bench/results/learner.json.

    python bench/learner.py [--models quickstart,10m] [--turns single,multi] [--threads 2] [--repeats 3] [--quick]
                            [--dtype float32|bfloat16] [--world-sizes 1,2 --rank-threads 1]

`--dtype` is `learner.dtype` (bf16 autocast body, fp32 head and master weights). `--world-sizes 1,2`
times the data-parallel learner (steprl/run/learning/learner.py: world size 1 in this process, N > 1 as Ray
actors) with every rank at `--rank-threads` threads, world size 1 included (the setting that makes
them bitwise equal); rows then carry `world_size`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import machine_meta, markdown_table, model_configs, write_result
from ceiling import ceiling, measure_gflops

from steprl.agents.config import TokenizerConfig
from steprl.agents.model import count_parameters
from steprl.agents.policy import build_policy
from steprl.config import load_config
from steprl.learners.trainer import rl_trainer
from steprl.rollout.plan import plan_step
from steprl.rollout.workers import RolloutPool, WorkerSpec
from steprl.run.learning.learner import make_learner

TURNS = {"single": 1, "multi": 3}


def play_once(policy, cfg, threads: int):
    """The trajectories of step 0 of `cfg`, played with the inline pool and the policy's current weights."""
    spec = WorkerSpec(policy.model.config, policy.tokenizer, dict(cfg.env.kwargs), cfg.rollout.sampling, threads)
    pool = RolloutPool(spec, cfg.rollout)
    pool.set_weights(0, {k: v.detach().clone() for k, v in policy.model.state_dict().items()})
    return pool.play(plan_step(cfg, 0))


def time_world_size(cfg, policy, trajs, ws: int, args, repeats: int) -> dict:
    """Best-of-`repeats` seconds of one update by the run's learner at world size `ws` (after one warm-up update)."""
    import tempfile
    from dataclasses import replace

    cfg.learner = replace(cfg.learner, world_size=ws, threads_per_rank=args.rank_threads, cpus_per_rank=1.0)
    cfg.rl.steps = repeats + 1
    start = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        learner = make_learner(cfg, policy, Path(tmp))
        try:
            learner.update(trajs)
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                learner.update(trajs)
                best = min(best, time.perf_counter() - t0)
        finally:
            learner.close()
    policy.model.load_state_dict(start)  # every world size starts from the same weights
    real = sum(len(t.tokens) for t in trajs)
    return {"world_size": ws, "rank_threads": args.rank_threads, "seconds": best, "proc_tok_s": real / best}


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=str, default="quickstart,10m")
    ap.add_argument("--turns", type=str, default="single,multi")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the learner (quickstart run.threads)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke check: 16 episodes, 1 timed update, short matmul probe")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="learner.dtype")
    ap.add_argument("--world-sizes", type=str, default="", help="e.g. 1,2: time the learner at these world sizes")
    ap.add_argument("--rank-threads", type=int, default=1, help="threads of every rank with --world-sizes")
    ap.add_argument("--no-probe", action="store_true", help="skip the matmul probe (whole-command timing)")
    return ap.parse_args()


def main() -> None:
    """Run the grid and print the table."""
    args = parse_args()
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    probe = dict(sizes=(512, 1024), repeats=2) if args.quick else {}
    gflops = float("nan") if args.no_probe else measure_gflops(args.threads, **probe)
    print(f"matmul: {gflops:.1f} GFLOP/s at {args.threads} threads", flush=True)
    rows = []
    for name, mc in model_configs(args.models):
        for shape in [s.strip() for s in args.turns.split(",") if s.strip()]:
            over = [f"env.kwargs.max_turns={TURNS[shape]}", "rollout.executor=inline", f"learner.dtype={args.dtype}"]
            if args.quick:
                over += ["rollout.groups=2", "rollout.micro_batch=8"]
            cfg = load_config("quickstart", over)
            policy = build_policy(mc, TokenizerConfig(), seed=0)
            params = count_parameters(policy.model)
            trajs = play_once(policy, cfg, args.threads)
            if args.world_sizes:
                for ws in [int(w) for w in args.world_sizes.split(",")]:
                    rows.append(time_world_size(cfg, policy, trajs, ws, args, repeats) | {"model": name,
                                "params": params, "shape": shape, "dtype": args.dtype})
                    print(rows[-1], flush=True)
                continue
            learner = rl_trainer(policy.model, cfg.learner, temperature=cfg.rollout.sampling.temperature,
                              total_steps=repeats + 1, pad_id=policy.tokenizer.pad_token_id)
            learner.update(trajs)  # warm-up (allocator, AdamW state)
            best, skipped = float("inf"), 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                stats = learner.update(trajs)
                best = min(best, time.perf_counter() - t0)
                skipped += int(stats["skipped"])
            real = sum(len(t.tokens) for t in trajs)
            padded = len(trajs) * max(len(t.tokens) for t in trajs)
            ceil = ceiling(params, gflops)["train_tok_s"]
            row = {"model": name, "params": params, "shape": shape, "dtype": args.dtype, "episodes": len(trajs),
                   "learner_micro_batch": cfg.learner.micro_batch, "max_len": max(len(t.tokens) for t in trajs),
                   "processed_tokens": real, "padded_tokens": padded, "action_tokens": stats.tokens_trained,
                   "seconds": best, "proc_tok_s": real / best, "action_tok_s": stats.tokens_trained / best,
                   "padded_tok_s": padded / best, "skipped_updates": skipped, "gflops": gflops,
                   "ceiling_train_tok_s": ceil, "fraction": real / best / ceil, "fraction_padded": padded / best / ceil}
            rows.append(row)
            print(
                f"{name:10s} {shape:6s}: {row['proc_tok_s']:8.0f} proc tok/s  {row['action_tok_s']:7.0f} action tok/s  "
                f"({row['fraction']:.1%} of {ceil:.0f}; {row['fraction_padded']:.1%} counting padding)  {best:.2f} s",
                flush=True,
            )
    if args.world_sizes:
        print(markdown_table(rows, [("model", "model", ""), ("shape", "turns", ""), ("world_size", "world size", "d"),
                                    ("seconds", "s/update", ".2f"), ("proc_tok_s", "proc tok/s", ".0f")]))
        return
    cols = [("model", "model", ""), ("params", "params", ",d"), ("shape", "turns", ""), ("max_len", "T", "d"),
            ("proc_tok_s", "proc tok/s", ".0f"), ("action_tok_s", "action tok/s", ".0f"),
            ("ceiling_train_tok_s", "ceiling tok/s", ".0f"), ("fraction", "of ceiling", ".1%"),
            ("fraction_padded", "incl. padding", ".1%")]
    print(markdown_table(rows, cols))
    meta = machine_meta(args.threads) | {"repeats": repeats, "quick": args.quick}
    print("wrote", write_result("learner", {"meta": meta, "rows": rows}))


if __name__ == "__main__":
    main()
