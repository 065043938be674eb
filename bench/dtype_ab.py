"""Benchmark: bfloat16 vs float32 in one process, paired and interleaved (robust to a machine whose load drifts).

For each model size: the fused sampler (one turn of `--new` tokens for `--batch` rows, `rollout.dtype`) and
one learner update (`learner.dtype`, the quickstart learner on step 0's trajectories, 16 episodes) are timed
as float32 / bfloat16 pairs, A B A B ...; the reported ratio is the median of the per-pair ratios
(float32 seconds / bfloat16 seconds: > 1 means bf16 is faster). Each learner update changes its own copy
of the weights; the work per update is the same.

    python bench/dtype_ab.py [--models quickstart,10m] [--pairs 5] [--threads 2] [--batch 64] [--new 16]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from _common import model_configs
from learner import play_once
from sampler import prompts_for, run_ours

from steprl.agents.config import TokenizerConfig
from steprl.agents.fast_forward import FastCausalLM
from steprl.agents.policy import build_policy
from steprl.config import load_config
from steprl.learners.trainer import rl_trainer
from steprl.rollout.sampler import SamplingParams

DTYPES = ("float32", "bfloat16")


def paired(fns: dict[str, object], pairs: int) -> dict[str, float]:
    """Median seconds of each callable and the median per-pair ratio float32 / bfloat16."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(pairs):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(times["float32"], times["bfloat16"])]
    return {"s_float32": statistics.median(times["float32"]), "s_bfloat16": statistics.median(times["bfloat16"]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def sampler_fns(policy, batch: int, new: int) -> dict[str, object]:
    """One sampler turn per dtype (after a short warm-up)."""
    prompts, params = prompts_for(policy.turn_format, batch), SamplingParams()
    fast = {d: FastCausalLM(policy.model, torch.bfloat16 if d == "bfloat16" else torch.float32) for d in DTYPES}
    for d in DTYPES:
        run_ours(policy, fast[d], prompts, 2, params)
    return {d: (lambda d=d: run_ours(policy, fast[d], prompts, new, params)) for d in DTYPES}


def learner_fns(policy, threads: int, pairs: int) -> dict[str, object]:
    """One learner update per dtype, each on its own copy of the model (after one warm-up update)."""
    over = ["rollout.executor=inline", "rollout.groups=2", "rollout.micro_batch=8", "env.kwargs.max_turns=1"]
    cfg = load_config("quickstart", over)
    trajs = play_once(policy, cfg, threads)
    fns = {}
    for d in DTYPES:
        lc = _with_dtype(cfg.learner, d)
        tr = rl_trainer(copy.deepcopy(policy.model), lc, temperature=cfg.rollout.sampling.temperature,
                        total_steps=pairs + 2, pad_id=policy.tokenizer.pad_token_id)
        tr.update(trajs)
        fns[d] = lambda tr=tr: tr.update(trajs)
    return fns


def _with_dtype(lc, d: str):
    from dataclasses import replace

    return replace(lc, dtype=d)


def main() -> None:
    """Print one line per (model, part) and a markdown table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=str, default="quickstart,10m")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--new", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, mc in model_configs(args.models):
        policy = build_policy(mc, TokenizerConfig(), seed=0)
        policy.model.eval()
        for part, fns in (("sampler", sampler_fns(policy, args.batch, args.new)),
                          ("learner", learner_fns(policy, args.threads, args.pairs))):
            r = paired(fns, args.pairs) | {"model": name, "part": part}
            rows.append(r)
            print(f"{name:10s} {part:7s}: float32 {r['s_float32']:.3f} s, bfloat16 {r['s_bfloat16']:.3f} s, "
                  f"fp32/bf16 {r['ratio']:.2f} (pairs {r['ratio_min']:.2f}..{r['ratio_max']:.2f})", flush=True)
    print("| model | part | float32 s | bfloat16 s | fp32 / bf16 (median of pairs) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['part']} | {r['s_float32']:.3f} | {r['s_bfloat16']:.3f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
