"""The warm-up's demonstrations: the student trains on the teacher's batches, cycled past their end."""

from __future__ import annotations

import torch

from steprl.agents.policy import build_policy
from steprl.config import load_config, to_dict
from steprl.run.loop import sft
from steprl.run.loop.state import RunState
from steprl.run.reporting.metrics import MetricsLogger


def test_student_cycles_through_the_teachers_batches(tmp_path, monkeypatch):
    cfg = load_config("smoke", ["warmup.steps=3", "warmup.batch_size=2", f"run.root={tmp_path}"])
    seen: list[int] = []
    real = sft._demonstrations

    def recording(run, policy):
        demos = real(run, policy)
        return lambda k: (seen.append(k), demos(k))[1]

    monkeypatch.setattr(sft, "_demonstrations", recording)
    torch.set_num_threads(1)
    run = RunState(cfg, tmp_path, build_policy(cfg.model, cfg.tokenizer, 0), MetricsLogger(tmp_path), {})
    sft.warm_up(run, run.policy, "warmup")
    assert seen == [0, 1, 2]
    seen.clear()
    student = build_policy(cfg.distill.student, cfg.tokenizer, 1)
    sft.warm_up(run, student, "student_warmup", to_dict(cfg)["distill"]["student"], steps=7)
    assert seen == [0, 1, 2, 0, 1, 2, 0]
    # the cycle length is part of what the cached student depends on
    other = load_config("smoke", ["warmup.steps=4", "warmup.batch_size=2", f"run.root={tmp_path}"])
    section = to_dict(cfg)["distill"]["student"]
    assert sft.warmup_cache_key(run, section, 7) != sft.warmup_cache_key(
        RunState(other, tmp_path, run.policy, run.metrics, {}), section, 7)


def test_warm_up_trains_with_eager_attention_and_gives_the_model_back_as_it_was(tmp_path, monkeypatch):
    """sft.SFT_ATTENTION while the warm-up trains (faster on CPU), the model's own kernel after."""
    cfg = load_config("smoke", ["warmup.steps=2", "warmup.batch_size=2", f"run.root={tmp_path}", "warmup.cache=false"])
    policy = build_policy(cfg.model, cfg.tokenizer, 0)
    seen: list[str] = []
    real = sft._demonstrations

    def recording(run, pol):
        demos = real(run, pol)
        return lambda k: (seen.append(pol.model.config._attn_implementation), demos(k))[1]

    monkeypatch.setattr(sft, "_demonstrations", recording)
    torch.set_num_threads(1)
    run = RunState(cfg, tmp_path, policy, MetricsLogger(tmp_path), {})
    before = policy.model.config._attn_implementation
    sft.warm_up(run, policy, "warmup")
    assert seen == [sft.SFT_ATTENTION] * 2 and sft.SFT_ATTENTION != before
    assert policy.model.config._attn_implementation == before
    # a long-context model keeps its own kernel (eager would materialise T x T scores)
    policy.model.config.max_position_embeddings = sft.EAGER_MAX_POSITIONS + 1
    assert sft.sft_attention(policy.model) is None
