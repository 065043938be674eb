"""rollout.dtype=bfloat16: both sampler forwards (fused, and transformers' under autocast) give finite float32
log-probs close to float32's (issue 18)."""

import math

import torch

from steprl.agents.autocast_lm import AutocastLM
from steprl.agents.config import ModelConfig, TokenizerConfig
from steprl.agents.fast_forward import FastCausalLM
from steprl.agents.policy import build_policy
from steprl.rollout.backends.hf import GenerationBatch
from steprl.rollout.sampler import SamplingParams


def _turn(policy, model):
    prompts = [policy.turn_format.prompt_ids("sys", f"task {i}")[:20] for i in range(3)]
    gb = GenerationBatch(model, prompts, [11, 12, 13], SamplingParams(), policy.tokenizer.pad_token_id)
    return gb.generate_turn([True] * 3, [0] * 3, [6] * 3, [["\x07never"]] * 3, policy.turn_format.decode)


def test_both_bf16_sampler_forwards_are_finite_and_close_to_float32():
    policy = build_policy(ModelConfig(layers=2, hidden=64, heads=2, kv_heads=2, intermediate=128, max_positions=128),
                          TokenizerConfig(), seed=0)
    policy.model.eval()
    ref = _turn(policy, FastCausalLM(policy.model))
    for model in (FastCausalLM(policy.model, torch.bfloat16), AutocastLM(policy.model, torch.bfloat16)):
        got = _turn(policy, model)
        for r, g in zip(ref, got):
            assert len(g.tokens) == 6 and all(math.isfinite(x) for x in g.logprobs)
            if g.tokens[0] == r.tokens[0]:  # same noise, same first token: its log-prob is close
                assert abs(g.logprobs[0] - r.logprobs[0]) < 0.05
