"""Peak memory of the learner's log-probs + entropy + backward for a 150k-token vocabulary, whole vs chunked.

Each variant runs in its own subprocess and reports its peak resident set size (ru_maxrss), so one
variant's allocations cannot hide the other's. `whole` is the pre-chunking computation (full [B, T, V]
logits upcast to fp32, log_softmax over all of it); `chunked` is `learners.batch.token_logprobs`.

    python bench/logprob_memory.py [--vocab 151936] [--batch 4] [--seq 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def _model(vocab: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                      tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Qwen2ForCausalLM(cfg)


def _run(variant: str, vocab: int, batch: int, seq: int) -> dict:
    import torch

    from steprl.learners.batch import token_logprobs

    model = _model(vocab)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, vocab, (batch, seq), generator=g)
    attn = torch.ones_like(tokens)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if variant == "whole":
        out = model(input_ids=tokens, attention_mask=attn, use_cache=False)
        logp_all = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
        logp = logp_all.gather(-1, tokens[:, 1:, None]).squeeze(-1)
        ent = -(logp_all.exp() * logp_all).sum(-1)
    else:
        logp, ent = token_logprobs(model, tokens, attn)
    (logp.sum() + ent.sum()).backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "peak_rss_mib": peak / 1024, "increase_mib": (peak - base) / 1024,
            "full_fp32_logits_mib": batch * seq * vocab * 4 / 2**20}


def main() -> None:
    """Run both variants in subprocesses and print one JSON line each."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--variant", choices=["whole", "chunked"])
    a = ap.parse_args()
    if a.variant:
        sys.stdout.write(json.dumps(_run(a.variant, a.vocab, a.batch, a.seq)) + "\n")
        return
    run_variants(__file__, a)


def run_variants(script: str, a: argparse.Namespace) -> None:
    """`script --variant whole` then `--variant chunked` (same --vocab/--batch/--seq), each in its own process so
    one variant's allocations cannot hide the other's; their JSON lines go to stdout."""
    for v in ("whole", "chunked"):
        cmd = [sys.executable, script, "--variant", v, "--vocab", str(a.vocab), "--batch", str(a.batch),
               "--seq", str(a.seq)]
        sys.stdout.write(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


if __name__ == "__main__":
    main()
