"""LoRA through peft: seeded adapters on a frozen base, bitwise save/load, merged decoding that depends on
(base, adapter) alone, and clear refusals (a changed base, an adapter of another shape, dropout, bad targets)."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from steprl.agents.config import LoraConfig, ModelConfig, TokenizerConfig
from steprl.agents.lora import (
    LoraError,
    MergedLora,
    add_lora,
    base_identity,
    lora_problems,
    merged_copy,
)
from steprl.agents.policy import build_policy, load_policy, save_policy
from steprl.learners.config import LearnerConfig
from steprl.learners.guarded_optimizer import GuardedOptimizer
from steprl.learners.trainable import trainable_state

SMALL = dict(layers=2, hidden=32, heads=2, kv_heads=2, intermediate=64, max_positions=64)


def _policy(r=4, seed=0, targets=None):
    lora = LoraConfig(r=r, alpha=8.0, **({"target_modules": targets} if targets else {}))
    return build_policy(ModelConfig(**SMALL, lora=lora), TokenizerConfig(), seed)


def _nudge(model, scale=0.05, seed=1):
    """Move every adapter tensor (B starts at zero: without this, adapters change nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in trainable_state(model).values():
            v.add_(torch.randn(v.shape, generator=gen) * scale)


def _ids():
    return torch.randint(3, 40, (2, 11), generator=torch.Generator().manual_seed(7))


def test_adapters_train_alone_start_as_the_base_and_are_drawn_from_the_seed():
    p, q, other = _policy(seed=0), _policy(seed=0), _policy(seed=1)
    trainable = {n for n, t in p.model.named_parameters() if t.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert set(trainable_state(p.model)) == {n for n in p.model.state_dict() if ".lora_" in n}
    a, b, c = trainable_state(p.model), trainable_state(q.model), trainable_state(other.model)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed: same adapter bits
    assert any(not torch.equal(a[k], c[k]) for k in a if ".lora_A." in k)  # A is drawn from the seed
    # B = 0: the wrapped model computes what its base computes, exactly
    plain = build_policy(ModelConfig(**SMALL), TokenizerConfig(), 0).model
    assert torch.equal(p.model(input_ids=_ids()).logits, plain(input_ids=_ids()).logits)
    assert base_identity(p.model) == base_identity(plain) == p.base.sha256


def test_adding_adapters_leaves_the_callers_global_rng_alone():
    plain = build_policy(ModelConfig(**SMALL), TokenizerConfig(), 0).model
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    add_lora(plain, LoraConfig(r=2), seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_save_and_load_give_the_same_bits_and_hold_the_adapter_alone(tmp_path):
    p = _policy()
    _nudge(p.model)
    save_policy(p, tmp_path / "pol")
    files = sorted(f.name for f in (tmp_path / "pol").iterdir())
    assert "adapter_model.safetensors" in files and "base.json" in files and "model.safetensors" not in files
    q = load_policy(tmp_path / "pol")
    a, b = trainable_state(p.model), trainable_state(q.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(p.model(input_ids=_ids()).logits, q.model(input_ids=_ids()).logits)
    assert all(t.requires_grad == (".lora_" in n) for n, t in q.model.named_parameters())  # trains on resume


def test_a_changed_base_or_an_unreadable_base_record_is_refused(tmp_path):
    p = _policy()
    save_policy(p, tmp_path / "pol")
    record = json.loads((tmp_path / "pol" / "base.json").read_text())
    record["build"]["hidden"] = 64  # as if the config the base is built from had changed
    record["build"]["intermediate"] = 64
    (tmp_path / "pol" / "base.json").write_text(json.dumps(record))
    with pytest.raises(LoraError, match="not the one this adapter was trained on"):
        load_policy(tmp_path / "pol")
    record.update(build=None, path=str(tmp_path / "gone"))  # a model directory since deleted
    (tmp_path / "pol" / "base.json").write_text(json.dumps(record))
    with pytest.raises(LoraError, match="cannot be loaded.*restore"):
        load_policy(tmp_path / "pol")
    (tmp_path / "pol" / "base.json").write_text("{not json")
    with pytest.raises(LoraError, match="base.json: unreadable"):
        load_policy(tmp_path / "pol")


def test_an_adapter_of_another_rank_does_not_load():
    from steprl.agents.lora import load_weights

    p4, p2 = _policy(r=4), _policy(r=2)
    with pytest.raises(LoraError, match="do not fit"):
        load_weights(p2.model, trainable_state(p4.model))


def test_a_worker_decodes_merged_bits_that_depend_on_base_and_adapter_alone():
    """A worker that saw versions 1 then 2 holds the same bits as a fresh one given version 2 (a replacement, or
    `steprl replay`): the base is restored from its pristine copy before every merge."""
    p = _policy()
    config = p.model.config
    full = {k: v.detach().clone() for k, v in p.model.state_dict().items()}
    base = {k: v for k, v in full.items() if ".lora_" not in k}
    _nudge(p.model, seed=1)
    v1 = {k: v.clone() for k, v in trainable_state(p.model).items()}
    _nudge(p.model, seed=2)
    v2 = {k: v.clone() for k, v in trainable_state(p.model).items()}

    def worker():
        with torch.random.fork_rng():
            return MergedLora(AutoModelForCausalLM.from_config(config), LoraConfig(r=4, alpha=8.0))

    seasoned, fresh = worker(), worker()
    seasoned.load(base)
    seasoned.load(v1)
    seasoned.load(v2)
    fresh.load({**base, **v2})
    for (n, a), (_, b) in zip(seasoned.model.state_dict().items(), fresh.model.state_dict().items()):
        assert torch.equal(a, b), n
    with torch.no_grad():
        merged = fresh.model(input_ids=_ids()).logits
        unmerged = p.model(input_ids=_ids()).logits
    # merged (W + s*B@A) and unmerged (x@W + s*(x@A)@B) round differently; both are float32 sums of the same
    # terms, so they agree to a few float32 ulps of the logits' magnitude
        plain = build_policy(ModelConfig(**SMALL), TokenizerConfig(), 0).model(input_ids=_ids()).logits
        exported = merged_copy(p.model)(input_ids=_ids()).logits
    tol = 64 * torch.finfo(torch.float32).eps * float(unmerged.abs().max())
    assert float((merged - unmerged).abs().max()) <= tol
    assert float((merged - plain).abs().max()) > 100 * tol  # the adapter is applied
    assert torch.allclose(exported, unmerged, rtol=0, atol=tol)


def test_rollback_snapshots_and_the_optimizer_hold_the_adapter_alone():
    p = _policy()
    opt = GuardedOptimizer(p.model, LearnerConfig(), total_steps=4)
    n_adapter = sum(t.numel() for t in trainable_state(p.model).values())
    assert sum(t.numel() for g in opt.optimizer.param_groups for t in g["params"]) == n_adapter
    snapshot = opt.rollback.newer["model"]
    assert set(snapshot) == set(trainable_state(p.model))


def test_dropout_and_missing_targets_are_config_errors():
    assert any("only 0 is supported" in m for _, m in LoraConfig(r=4, dropout=0.1).check())
    assert any(k == "r" for k, _ in LoraConfig(r=-1).check())
    bad = ModelConfig(**SMALL, lora=LoraConfig(r=4, target_modules=["qkv"]))
    (problem,) = lora_problems(bad, "model.lora")
    assert "['qkv']" in problem and "q_proj" in problem
    assert lora_problems(ModelConfig(**SMALL), "model.lora") == []  # r 0: full fine-tuning, nothing to check
