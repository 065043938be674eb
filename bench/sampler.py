"""Benchmark: generated tokens/s of steprl's GenerationBatch vs `model.generate(do_sample=True)`.

Same process, the quickstart preset's model (char vocabulary), same prompts. Both generate
exactly NEW tokens per row (generate: min_new_tokens = max_new_tokens; ours: a stop string that
never occurs). Ours runs twice: on transformers' forward (`ours-hf`) and on the fused inference
forward the rollout workers use (`ours`, agents/fast_forward.py). Prints a table and writes
bench/results/sampler.json.

    python bench/sampler.py [--new 64] [--repeats 3] [--threads 2] [--dtype float32|bfloat16] [--model quickstart|10m]
                            [--only ours]

`--dtype bfloat16` is `rollout.dtype`: the fused forward on bf16 weight copies (`ours`), transformers'
forward under autocast (`ours-hf`); `generate` stays float32. `--only ours` times the fused sampler alone
(for whole-command A/B timing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from steprl.agents.autocast_lm import AutocastLM
from steprl.agents.config import TokenizerConfig
from steprl.agents.fast_forward import FastCausalLM
from steprl.agents.policy import build_policy
from steprl.config import load_config
from steprl.rollout.backends.hf import GenerationBatch
from steprl.rollout.sampler import SamplingParams


def prompts_for(tf, batch: int) -> list[list[int]]:
    """Equal-length prompts (so generate needs no padding)."""
    return [
        tf.prompt_ids("You are a calculator agent.", f"Compute {1000 + i}*{47 + i % 50}.")[:40] for i in range(batch)
    ]


def run_ours(policy, model, prompts, new: int, params: SamplingParams) -> float:
    """Seconds for one turn of `new` tokens on every row, decoding with `model`."""
    B = len(prompts)
    t0 = time.perf_counter()
    gb = GenerationBatch(model, prompts, list(range(B)), params, policy.tokenizer.pad_token_id)
    res = gb.generate_turn([True] * B, [0] * B, [new] * B, [["\x07never"]] * B, policy.turn_format.decode)
    dt = time.perf_counter() - t0
    assert all(len(r.tokens) == new for r in res)
    return dt


def run_hf(policy, prompts, new: int) -> float:
    """Seconds for model.generate(do_sample=True) of exactly `new` tokens per row."""
    ids = torch.tensor(prompts, dtype=torch.int64)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = policy.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=new,
            min_new_tokens=new, pad_token_id=policy.tokenizer.pad_token_id, top_k=0, top_p=1.0, temperature=1.0,
        )
    dt = time.perf_counter() - t0
    assert out.shape[1] == ids.shape[1] + new
    return dt


def build(model: str, dtype: str):
    """(policy, fused sampler forward, transformers' sampler forward) at `dtype` for the named model size."""
    mcfg = load_config("quickstart").model
    if model == "10m":
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from _common import ten_m_model

        mcfg = ten_m_model()
    policy = build_policy(mcfg, TokenizerConfig(), seed=0)
    policy.model.eval()
    low = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    slow = policy.model if low == torch.float32 else AutocastLM(policy.model, low)
    return policy, FastCausalLM(policy.model, low), slow


def only_ours(policy, fast, args) -> None:
    """Time the fused sampler alone (best of --repeats) at every batch size and print tok/s."""
    for B in [int(x) for x in args.batches.split(",")]:
        prompts = prompts_for(policy.turn_format, B)
        best = min(run_ours(policy, fast, prompts, args.new, params=SamplingParams()) for _ in range(args.repeats))
        print(f"batch {B}: ours {B * args.new / best:.0f} tok/s ({args.dtype}, {args.model})", flush=True)


def main() -> None:
    """Run the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=str, default="1,16,64")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="rollout.dtype")
    ap.add_argument("--model", choices=("quickstart", "10m"), default="quickstart")
    ap.add_argument("--only", choices=("all", "ours"), default="all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policy, fast, slow = build(args.model, args.dtype)
    if args.only == "ours":
        only_ours(policy, fast, args)
        return
    params = SamplingParams()
    rows = []
    for B in [int(x) for x in args.batches.split(",")]:
        prompts = prompts_for(policy.turn_format, B)
        (
            run_ours(policy, fast, prompts, 4, params),
            run_ours(policy, slow, prompts, 4, params),
            run_hf(policy, prompts, 4),
        )
        ours, ours_hf, hf = float("inf"), float("inf"), float("inf")
        for _ in range(args.repeats):  # interleaved, best of: all see the same machine load
            ours = min(ours, run_ours(policy, fast, prompts, args.new, params))
            ours_hf = min(ours_hf, run_ours(policy, slow, prompts, args.new, params))
            hf = min(hf, run_hf(policy, prompts, args.new))
        row = {
            "batch": B,
            "new_tokens": args.new,
            "ours_tok_s": B * args.new / ours,
            "ours_hf_tok_s": B * args.new / ours_hf,
            "generate_tok_s": B * args.new / hf,
        }
        row["ratio"] = row["ours_tok_s"] / row["generate_tok_s"]
        row["ratio_hf"] = row["ours_hf_tok_s"] / row["generate_tok_s"]
        rows.append(row)
        print(f"batch {B:3d}: ours {row['ours_tok_s']:9.0f} tok/s  ours-hf {row['ours_hf_tok_s']:9.0f}  generate "
              f"{row['generate_tok_s']:9.0f}  ratio {row['ratio']:.2f} (hf forward {row['ratio_hf']:.2f})", flush=True)
    meta = {"nproc": os.cpu_count(), "threads": args.threads, "torch": torch.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "params": sum(p.numel() for p in policy.model.parameters())}
    out = Path(__file__).parent / "results" / "sampler.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(
        "| batch | ours tok/s | ours-hf tok/s | generate tok/s | ours / generate | ours-hf / generate "
        "|\n|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['batch']} | {r['ours_tok_s']:.0f} | {r['ours_hf_tok_s']:.0f} | {r['generate_tok_s']:.0f} "
            f"| {r['ratio']:.2f} | {r['ratio_hf']:.2f} |"
        )
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
