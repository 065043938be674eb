"""Benchmark: does sequence packing pay for the quickstart's warm-up SFT, against the length buckets it uses?

The warm-up trains on batches of 32 expert demonstrations whose lengths vary (right padding wastes tokens).
`warmup.length_buckets` (the quickstart uses 2) already sorts a batch by length and pads each half to its own
longest. Packing goes further: demonstrations are placed end to end in rows of `capacity` tokens (first fit
decreasing), position ids restart at 0 for each one, and transformers' masking (`find_packed_sequence_indices`,
used when `attention_mask` is None) makes attention block-diagonal, so no demonstration sees another.

Measured on the same batches, forward + backward of the same token-mean cross-entropy (float32 log-softmax), in
one process, interleaved step by step (paired): 1 to 4 buckets (the quickstart uses 2), packed at capacity =
the batch's longest demonstration, and packed at twice that. Also reported: the tokens each variant pushes
through the model (real + pad) and the largest difference of its loss and gradients from the 1-bucket one
(packing is the same math: only float rounding may differ).

    python bench/sft_packing.py [--steps 40] [--threads 2] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import torch
from _common import machine_meta, write_result

from steprl.agents.policy import build_policy
from steprl.config import load_config
from steprl.learners.sft import length_buckets, sft_batch
from steprl.run.demos import demo_batches
from steprl.run.sft import SFT_ATTENTION

Example = tuple[Sequence[int], Sequence[float]]


def pack(examples: Sequence[Example], capacity: int) -> list[list[Example]]:
    """First-fit decreasing: each row's total length <= capacity (a longer example gets a row of its own)."""
    rows: list[list[Example]] = []
    room: list[int] = []
    for ex in sorted(examples, key=lambda e: -len(e[0])):
        n = len(ex[0])
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(ex)
                room[r] -= n
                break
        else:
            rows.append([ex])
            room.append(capacity - n)
    return rows


def packed_tensors(rows: list[list[Example]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens, position ids (restarting per example) and the target mask of packed rows, right-padded.

    mask[r, t] = 1 where token t+1 is a trained target of the same example (an example's last token predicts
    nothing: the next token belongs to another demonstration)."""
    T = max(sum(len(t) for t, _ in row) for row in rows)
    tokens = torch.full((len(rows), T), pad_id, dtype=torch.int64)
    pos = torch.zeros((len(rows), T), dtype=torch.int64)
    mask = torch.zeros((len(rows), T - 1), dtype=torch.float32)
    for r, row in enumerate(rows):
        at = 0
        for toks, m in row:
            n = len(toks)
            tokens[r, at : at + n] = torch.tensor(list(toks))
            pos[r, at : at + n] = torch.arange(n)
            if n > 1:
                mask[r, at : at + n - 1] = torch.tensor(list(m)[1:], dtype=torch.float32)
            at += n
        if at < T:  # the pad tail: one more "sequence" counting on from 0, never a target
            pos[r, at:] = torch.arange(T - at)
    return tokens, pos, mask


def nll_sum(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor, attn: torch.Tensor | None,
            pos: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy on the masked targets (float32 log-softmax, as the library's token_logprobs)."""
    logits = model(input_ids=tokens, attention_mask=attn, position_ids=pos, use_cache=False).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return -(logp * mask).sum()


def padded_parts(examples: Sequence[Example], buckets: int, pad_id: int) -> list[tuple]:
    """(tokens, mask, attention mask, position ids) per length bucket, as SFTObjective builds them."""
    out = []
    for part in length_buckets(examples, buckets):
        tokens, attn, mask = sft_batch(part, pad_id)
        out.append((tokens, mask, attn, (attn.cumsum(-1) - 1).clamp(min=0)))
    return out


def packed_parts(examples: Sequence[Example], factor: int, pad_id: int) -> list[tuple]:
    """One packed batch at capacity = factor x the longest example (attention mask None: packed detection)."""
    rows = pack(examples, factor * max(len(t) for t, _ in examples))
    tokens, pos, mask = packed_tensors(rows, pad_id)
    return [(tokens, mask, None, pos)]


def step(model: torch.nn.Module, parts: list[tuple], total: float) -> tuple[float, float, list[torch.Tensor]]:
    """Forward + backward of the batch's token-mean loss over its parts; (seconds, loss, gradients)."""
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss = 0.0
    for tokens, mask, attn, pos in parts:
        part = nll_sum(model, tokens, mask, attn, pos) / total
        part.backward()
        loss += float(part.detach())
    took = time.perf_counter() - t0
    return took, loss, [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def main() -> None:
    """Time and check the four variants on the same warm-up batches."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="config key=value for the quickstart preset")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("quickstart", overrides=args.overrides)
    policy = build_policy(cfg.model, cfg.tokenizer, cfg.run.seed)
    model, pad = policy.model, policy.tokenizer.pad_token_id
    model.set_attn_implementation(SFT_ATTENTION)
    model.train()
    build = demo_batches(cfg.env.id, dict(cfg.env.kwargs), policy.turn_format, cfg.run.seed, cfg.warmup.batch_size,
                         cfg.warmup.imperfect_rate)
    variants = {f"{n} bucket{'s' * (n > 1)}": (lambda ex, n=n: padded_parts(ex, n, pad)) for n in (1, 2, 3, 4)}
    variants |= {f"packed {f}x": (lambda ex, f=f: packed_parts(ex, f, pad)) for f in (1, 2)}
    times = {v: [] for v in variants}
    tokens = {v: 0 for v in variants}
    diff = {v: {"loss": 0.0, "grad": 0.0} for v in variants}
    real = 0
    for k in range(args.steps + 1):  # step 0 warms the allocator and the kernels; not timed
        examples = build(k)
        real += sum(len(t) for t, _ in examples) if k else 0
        total = float(max(1, sum(sum(m[1:]) for _, m in examples)))
        ref = None
        for v, make in variants.items():
            parts = make(examples)
            took, loss, grads = step(model, parts, total)
            if ref is None:
                ref = (loss, grads)
            else:
                diff[v]["loss"] = max(diff[v]["loss"], abs(loss - ref[0]))
                diff[v]["grad"] = max(diff[v]["grad"], max(float((a - b).abs().max()) for a, b in zip(grads, ref[1])))
            if k:
                times[v].append(took)
                tokens[v] += sum(p[0].numel() for p in parts)
    base = statistics.median(times["2 buckets"])
    rows = []
    for v in variants:
        paired = statistics.median(a / b for a, b in zip(times[v], times["2 buckets"]))
        rows.append({"variant": v, "median_ms": statistics.median(times[v]) * 1e3, "vs_2_buckets": paired,
                     "tokens_per_batch": tokens[v] / args.steps, "pad_share": 1 - real / tokens[v],
                     "max_loss_diff": diff[v]["loss"], "max_grad_diff": diff[v]["grad"]})
        print(json.dumps(rows[-1]))
    write_result("sft_packing", {"meta": machine_meta(args.threads), "base_ms": base * 1e3, "rows": rows,
                                 "steps": args.steps, "overrides": args.overrides})


if __name__ == "__main__":
    main()
