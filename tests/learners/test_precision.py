"""bf16 autocast in the learner and the sampler: fp32 master weights, fp32 LM head and log-probs (issue 18)."""

import torch

from steprl.agents.config import ModelConfig, TokenizerConfig
from steprl.agents.fast_forward import FastCausalLM
from steprl.agents.kv_cache import GrowingCache
from steprl.agents.policy import build_policy
from steprl.learners.batch import token_logprobs
from steprl.learners.precision import autocast, to_device


def _policy():
    return build_policy(ModelConfig(layers=2, hidden=64, heads=2, kv_heads=2, intermediate=128, max_positions=128),
                        TokenizerConfig(), seed=0)


def test_autocast_logprobs_are_fp32_close_to_fp32_and_not_identical():
    model = _policy().model
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 60, (3, 40), generator=g)
    attn = torch.ones_like(tokens)
    ref, ref_ent = token_logprobs(model, tokens, attn)
    with autocast(model, "bfloat16"):
        lp, ent = token_logprobs(model, tokens, attn)
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32
    assert (lp - ref).abs().max() < 0.05 and not torch.equal(lp, ref)
    with autocast(model, "bfloat16"):
        lp, _ = token_logprobs(model, tokens, attn)
    lp.sum().backward()  # fp32 master weights get fp32 gradients
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters()
               if p.grad is not None)


def test_float32_context_is_a_no_op():
    model = _policy().model
    tokens = torch.randint(3, 60, (2, 20), generator=torch.Generator().manual_seed(1))
    a, _ = token_logprobs(model, tokens, torch.ones_like(tokens))
    with autocast(model, "float32"):
        b, _ = token_logprobs(model, tokens, torch.ones_like(tokens))
    assert torch.equal(a, b)


def test_fused_forward_bf16_keeps_fp32_head_and_is_close():
    model = _policy().model.eval()
    ids = torch.randint(3, 60, (2, 12), generator=torch.Generator().manual_seed(2))
    pos = torch.arange(12)[None].expand(2, 12)
    mask = torch.zeros(2, 1, 12, 12).masked_fill_(~torch.ones(12, 12, dtype=torch.bool).tril(), -3.4e38)
    n = model.config.num_hidden_layers
    full = FastCausalLM(model)(ids, mask, pos, GrowingCache(n)).logits
    low = FastCausalLM(model, torch.bfloat16)(ids, mask, pos, GrowingCache(n)).logits
    assert low.dtype == torch.float32
    assert (low - full).abs().max() < 0.1 and not torch.equal(low, full)


def test_to_device_keeps_the_object_when_nothing_moves():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class D:
        x: torch.Tensor
        n: float

    d = D(torch.zeros(2), 1.0)
    assert to_device(d, torch.device("cpu")) is d
