"""Policy save/load: one directory with model and tokenizer."""

from __future__ import annotations

import torch

from steprl.agents.chat import PlainTurnFormat
from steprl.agents.config import ModelConfig, TokenizerConfig
from steprl.agents.policy import build_policy, load_policy, save_policy


def test_build_save_load_roundtrip(tmp_path):
    cfg = ModelConfig(layers=2, hidden=64, heads=2, kv_heads=2, intermediate=128, max_positions=256)
    pol = build_policy(cfg, TokenizerConfig(), seed=11)
    assert isinstance(pol.turn_format, PlainTurnFormat)
    save_policy(pol, tmp_path / "p")
    back = load_policy(tmp_path / "p")
    ids = torch.tensor([pol.turn_format.prompt_ids("sys", "obs <eos>")])
    with torch.no_grad():
        assert torch.equal(pol.model(ids).logits, back.model(ids).logits)
    assert back.turn_format.prompt_ids("a", "b") == pol.turn_format.prompt_ids("a", "b")
    assert back.model.config.vocab_size == len(back.tokenizer) == 101
