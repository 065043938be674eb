"""FastCausalLM (fused inference forward) gives transformers' numbers: logits, sampled tokens and log-probs."""

from __future__ import annotations

import pytest
import torch

from steprl.agents.config import ModelConfig, TokenizerConfig
from steprl.agents.fast_forward import FastCausalLM, supports
from steprl.agents.kv_cache import GrowingCache
from steprl.agents.policy import build_policy
from steprl.rollout.backends.hf import GenerationBatch
from steprl.rollout.sampler import SamplingParams
from steprl.rollout.workers import RolloutWorker, WorkerSpec

SHAPES = {
    "llama-gqa": dict(arch="llama", layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, max_positions=256),
    "qwen2-bias": dict(arch="qwen2", layers=2, hidden=64, heads=2, kv_heads=2, intermediate=96, max_positions=256),
}


def _policy(shape: str, seed: int = 0):
    pol = build_policy(ModelConfig(**SHAPES[shape]), TokenizerConfig(), seed=seed)
    pol.model.eval()
    with torch.no_grad():  # non-zero biases (Qwen2) so a dropped bias would show
        for name, p in pol.model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    return pol


def _mask(valid: torch.Tensor, width: int) -> torch.Tensor:
    """The sampler's additive mask for `width` new columns after `valid` [B, S] (holes False)."""
    B, S = valid.shape
    past = S - width
    allowed = valid[:, None, :].expand(B, width, S)
    causal = torch.arange(S)[None, :] <= (past + torch.arange(width))[:, None]
    allowed = allowed & causal[None]
    return torch.zeros(allowed.shape).masked_fill_(~allowed, torch.finfo(torch.float32).min)[:, None]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_prefill_and_decode_logits_match_transformers(shape):
    pol = _policy(shape)
    fast = FastCausalLM(pol.model)
    n_layers = pol.model.config.num_hidden_layers
    ids = torch.randint(3, 90, (3, 7), generator=torch.Generator().manual_seed(2))
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 5:] = False  # a row with holes at the end of its prompt
    pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
    caches = [GrowingCache(n_layers), GrowingCache(n_layers)]
    worst = 0.0
    with torch.no_grad():
        for _step in range(4):
            width = ids.shape[1]
            mask = _mask(valid, width)
            ref = pol.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=caches[0], use_cache=True,
                            logits_to_keep=1).logits
            got = fast(input_ids=ids, attention_mask=mask, position_ids=pos, cache=caches[1], logits_to_keep=1).logits
            assert got.shape == ref.shape
            worst = max(worst, float((got - ref).abs().max()))
            ids = ref[:, -1].argmax(-1, keepdim=True)
            pos = pos[:, -1:] + 1
            valid = torch.cat([valid, torch.ones(3, 1, dtype=torch.bool)], dim=1)
    assert worst < 1e-5, worst


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_sampled_turns_are_identical_to_the_transformers_forward(shape):
    pol = _policy(shape)
    prompts = [pol.turn_format.prompt_ids("", f"What is {i}*{i + 3}?")[: 9 + i % 4] for i in range(6)]
    params = SamplingParams(temperature=1.0)

    def turn(model):
        gb = GenerationBatch(model, prompts, list(range(6)), params, pol.tokenizer.pad_token_id)
        return gb.generate_turn([True] * 6, [0] * 6, [20] * 6, [["\x07never"]] * 6, pol.turn_format.decode)

    ref, got = turn(pol.model), turn(FastCausalLM(pol.model))
    assert [r.tokens for r in got] == [r.tokens for r in ref]
    gap = max(abs(a - b) for r, g in zip(ref, got) for a, b in zip(r.logprobs, g.logprobs))
    assert gap < 1e-5, gap


def test_worker_decodes_with_it_and_refreshes_fused_weights_on_set_weights():
    pol, other = _policy("llama-gqa", 0), _policy("llama-gqa", 5)
    worker = RolloutWorker(WorkerSpec(pol.model.config, pol.tokenizer))
    assert isinstance(worker.generator.decoder, FastCausalLM) and supports(pol.model)
    ids = torch.tensor([[5, 6, 7]])
    mask = _mask(torch.ones(1, 3, dtype=torch.bool), 3)
    pos = torch.arange(3)[None]
    for p in (pol, other):  # after each set_weights the fused q/k/v and gate/up weights follow
        worker.set_weights(0, {k: v.clone() for k, v in p.model.state_dict().items()})
        with torch.no_grad():
            want = p.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1:]
            got = worker.generator.decoder(ids, mask, pos, GrowingCache(2)).logits
        assert float((got - want).abs().max()) < 1e-5
    off = RolloutWorker(WorkerSpec(pol.model.config, pol.tokenizer, fast_forward=False))
    assert off.generator.decoder is off.generator.model


def test_positions_past_max_position_embeddings_extend_the_rotary_table():
    """transformers computes RoPE for any position; so must the fused forward (episodes can outgrow the config)."""
    pol = _policy("llama-gqa")
    fast = FastCausalLM(pol.model)
    ids = torch.tensor([[5, 6, 7, 8]])
    pos = torch.tensor([[300, 301, 302, 303]])  # max_position_embeddings is 256
    mask = _mask(torch.ones(1, 4, dtype=torch.bool), 4)
    with torch.no_grad():
        want = pol.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1:]
        got = fast(ids, mask, pos, GrowingCache(2)).logits
    assert float((got - want).abs().max()) < 1e-5 and fast.cos.shape[0] > 303


@pytest.mark.parametrize("flag", [True, False])
def test_rollout_fast_forward_config_reaches_the_workers(tmp_path, flag):
    from steprl.config import load_config
    from steprl.run.loop.state import RunState
    from steprl.run.reporting.metrics import MetricsLogger

    cfg = load_config("smoke", [f"run.root={tmp_path}", f"rollout.fast_forward={str(flag).lower()}"])
    pol = build_policy(cfg.model, cfg.tokenizer, 0)
    state = RunState(cfg, tmp_path, pol, MetricsLogger(tmp_path), {})
    worker = state.get_pool().workers[0]  # the smoke preset plays inline
    assert isinstance(worker.generator.decoder, FastCausalLM) is flag
    state.metrics.close()
