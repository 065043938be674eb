"""Peak memory of one exact-KL distillation micro-batch (student + teacher logits, KLs, backward), whole vs chunked.

Each variant runs in its own subprocess and reports its peak resident set size (ru_maxrss). `whole` is the
computation before chunking (both models' full [B, T, V] float32 logits, `kl_token_terms` forced onto its
plain path by an unbounded chunk); `chunked` is `learners.kl.kl_token_terms` as the distiller calls it. The
default shape is the `smollm2` preset's: vocabulary 49,152, micro-batch 8, ~320-token episodes; the models
are 1-layer Llamas of SmolLM2's width, so the difference is the logits, not the decoder.

    python bench/distill_memory.py [--vocab 49152] [--batch 8] [--seq 320]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys


def _model(vocab: int, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=576, intermediate_size=1536, num_hidden_layers=1,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)


def _run(variant: str, vocab: int, batch: int, seq: int) -> dict:
    import torch

    from steprl.learners.kl import kl_token_terms, masked_mean

    torch.set_num_threads(2)
    student, teacher = _model(vocab, 0), _model(vocab, 1)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, vocab, (batch, seq), generator=g)
    attn = torch.ones_like(tokens)
    mask = torch.ones(batch, seq - 1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    chunk = {"chunk_elements": 1 << 62} if variant == "whole" else {}
    terms = kl_token_terms(student, teacher, tokens, attn, **chunk)
    masked_mean(terms.reverse, mask).backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "peak_rss_mib": round(peak / 1024), "increase_mib": round((peak - base) / 1024),
            "one_fp32_logits_tensor_mib": round(batch * seq * vocab * 4 / 2**20)}


def main() -> None:
    """Run both variants in subprocesses and print one JSON line each."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=320)
    ap.add_argument("--variant", choices=["whole", "chunked"])
    a = ap.parse_args()
    if a.variant:
        sys.stdout.write(json.dumps(_run(a.variant, a.vocab, a.batch, a.seq)) + "\n")
        return
    from logprob_memory import run_variants  # bench/ is on sys.path when a script of it runs

    run_variants(__file__, a)


if __name__ == "__main__":
    main()
