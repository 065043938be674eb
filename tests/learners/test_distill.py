"""Distillation math and the distillation trainer: exact KLs, zero gradient at q == p, guards, resume,
tokenizer refusal."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from steprl.agents.tokenizer import build_char_tokenizer
from steprl.learners.config import DistillLearnerConfig, LearnerConfig
from steprl.learners.kl import (
    check_same_tokenizer,
    forward_kl_full,
    reverse_kl_full,
    reverse_kl_on,
    sampled_advantages,
    token_advantages,
    use_full_vocab,
)
from steprl.learners.trainer import DistillMethod, DistillMode, distill_trainer, rl_trainer
from steprl.run.files.state_io import flatten_state, unflatten_state

VOCAB = 16


def tiny(seed: int, hidden: int = 32, layers: int = 1, vocab: int = VOCAB, std: float = 0.3) -> LlamaForCausalLM:
    """A small Llama with weights from a local generator (the global RNG is untouched)."""
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.ones_like(p) if p.dim() == 1 else torch.randn(p.shape, generator=g) * std)
    return model.float()


def _ref_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """fp64 reference sum_v a(v) (log a(v) - log b(v)) from logits."""
    la, lb = torch.log_softmax(a.double(), -1), torch.log_softmax(b.double(), -1)
    return (la.exp() * (la - lb)).sum(-1)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ math
def test_full_kls_match_fp64_reference_and_respect_mask():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 5, 7, generator=g) * 2, torch.randn(2, 5, 7, generator=g) * 2
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.float32)
    ref_rev = (_ref_kl(s, t) * mask).sum() / mask.sum()
    ref_fwd = (_ref_kl(t, s) * mask).sum() / mask.sum()
    assert float(reverse_kl_full(s, t, mask)) == pytest.approx(float(ref_rev), abs=1e-5)
    assert float(forward_kl_full(s, t, mask)) == pytest.approx(float(ref_fwd), abs=1e-5)
    assert float(ref_rev) > 0.1 and abs(float(ref_rev) - float(ref_fwd)) > 1e-3  # the two directions differ
    # temperature divides both logit sets
    assert float(reverse_kl_full(s, t, mask, 2.0)) == pytest.approx(
        float((_ref_kl(s / 2, t / 2) * mask).sum() / mask.sum()), abs=1e-5
    )
    # masked-out positions never reach the result, even when non-finite
    s2 = s.clone()
    s2[0, 2] = float("nan")
    assert float(reverse_kl_full(s2, t, mask)) == pytest.approx(float(ref_rev), abs=1e-5)
    assert reverse_kl_full(s, t, torch.zeros_like(mask)).item() == 0.0


def test_fp32_on_low_precision_logits():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(1, 3, 50, generator=g).bfloat16(), torch.randn(1, 3, 50, generator=g).bfloat16()
    out = reverse_kl_full(s, t, torch.ones(1, 3))
    assert out.dtype == torch.float32
    assert float(out) == pytest.approx(float(_ref_kl(s.float(), t.float()).mean()), abs=1e-5)


@pytest.mark.parametrize("fn", [reverse_kl_full, forward_kl_full])
def test_gradient_zero_when_student_equals_teacher(fn):
    g = torch.Generator().manual_seed(3)
    t = torch.randn(2, 4, 9, generator=g) * 3
    mask = torch.ones(2, 4)
    s = t.clone().requires_grad_(True)
    loss = fn(s, t, mask)
    loss.backward()
    assert abs(float(loss.detach())) < 1e-6
    assert float(s.grad.abs().max()) < 1e-7
    s2 = (t + torch.randn(2, 4, 9, generator=g)).requires_grad_(True)
    fn(s2, t, mask).backward()
    assert float(s2.grad.abs().max()) > 1e-3


def test_sampled_advantages_sign_zero_and_clamp():
    lq = torch.tensor([-1.0, -2.0, -0.5, -100.0, 0.0])
    lp = torch.tensor([-1.0, -1.0, -2.5, 0.0, -100.0])
    a = sampled_advantages(lq, lp)
    assert a.tolist() == [0.0, 1.0, -2.0, 20.0, -20.0]
    assert sampled_advantages(lq, lp, clamp=5.0).tolist() == [0.0, 1.0, -2.0, 5.0, -5.0]
    assert use_full_vocab(65536) and not use_full_vocab(65537) and not use_full_vocab(200, limit=100)


def test_token_advantages_zero_for_identical_models(toy_batch):
    teacher = tiny(0)
    trajs = toy_batch(teacher, 2, 2, step=0)
    same = token_advantages(copy.deepcopy(teacher), teacher, trajs, pad_id=0)
    assert [a.shape[0] for a in same] == [len(t.tokens) for t in trajs]
    assert all(float(a.abs().max()) == 0.0 for a in same)
    other = token_advantages(tiny(5), teacher, trajs, pad_id=0, kl_coef=2.0)
    assert all(float(a[0]) == 0.0 for a in other) and max(float(a.abs().max()) for a in other) > 0.1


def test_reverse_kl_on_matches_full_kl(toy_batch):
    student, teacher = tiny(1, hidden=16), tiny(0)
    trajs = toy_batch(student, 2, 2, step=0)
    assert reverse_kl_on(teacher, teacher, trajs, pad_id=0) == 0.0
    kl = reverse_kl_on(student, teacher, trajs, pad_id=0, micro_batch=3)
    # manual: the two action tokens of each toy episode sit at positions 2 and 4 (logits at 1 and 3)
    tok = torch.tensor([t.tokens for t in trajs])
    with torch.no_grad():
        s, t = student(input_ids=tok).logits, teacher(input_ids=tok).logits
    ref = _ref_kl(s[:, [1, 3]], t[:, [1, 3]]).mean()
    assert kl == pytest.approx(float(ref), rel=1e-5) and kl > 0.05


# ------------------------------------------------------------------------------------------ Distiller
def _exact_kl(student, teacher, cfg, **kw):
    """The exact-KL distillation trainer (vocabularies up to FULL_VOCAB_MAX)."""
    trainer, on_mode, off_mode = distill_trainer(student, teacher, cfg, **kw)
    assert (on_mode, off_mode) == (DistillMode.REVERSE, DistillMode.FORWARD)
    return trainer


def _cfg(**kw) -> DistillLearnerConfig:
    return DistillLearnerConfig(**{"lr": 3e-3, "micro_batch": 4, **kw})


@pytest.mark.parametrize("mode,key", [(DistillMode.REVERSE, "kl_reverse"), (DistillMode.FORWARD, "kl_forward")])
def test_distiller_lowers_kl_and_keeps_teacher_frozen(toy_batch, mode, key):
    teacher, student = tiny(0), tiny(7, hidden=16)
    t_before = _params(teacher)
    d = _exact_kl(student, teacher, _cfg(lr=1e-2), pad_id=0, total_steps=30)
    src = student if mode is DistillMode.REVERSE else teacher
    trajs = toy_batch(src, 2, 4, step=0)
    first = d.update(trajs, mode)
    for _ in range(24):
        last = d.update(trajs, mode)
    assert last[key] < 0.3 * first[key], (first[key], last[key])
    assert last["kl"] == last[key] and last["skipped"] == 0.0 and last["tokens_trained"] == 16.0
    assert last["guard/nonfinite"] == 0.0 and "guard/rollbacks" in last and last["lr"] == pytest.approx(1e-2)
    assert _same(t_before, _params(teacher)) and not any(p.requires_grad for p in teacher.parameters())
    assert not teacher.training


def test_distiller_ce_mode_fits_teacher_tokens(toy_batch):
    teacher, student = tiny(0), tiny(7, hidden=16)
    d = _exact_kl(student, teacher, _cfg(lr=1e-2), pad_id=0)
    trajs = toy_batch(teacher, 2, 4, step=0)
    first = d.update(trajs, DistillMode.CE)
    for _ in range(10):
        last = d.update(trajs, DistillMode.CE)
    assert last["loss"] < first["loss"] - 0.3
    with pytest.raises(ValueError, match="mode"):
        d.update(trajs, "sideways")


def test_micro_batch_invariance(toy_batch):
    teacher = tiny(0)
    trajs = toy_batch(tiny(7, hidden=16), 2, 4, step=0)
    outs = []
    for mb in (1, 3, 8):
        d = _exact_kl(tiny(7, hidden=16), teacher, _cfg(micro_batch=mb), pad_id=0)
        outs.append((d.update(trajs, DistillMode.REVERSE), _params(d.model)))
    for m, p in outs[1:]:
        assert m["loss"] == pytest.approx(outs[0][0]["loss"], rel=1e-5)
        assert m["grad_norm"] == pytest.approx(outs[0][0]["grad_norm"], rel=1e-4)
        assert all(torch.allclose(p[k], outs[0][1][k], atol=1e-6) for k in p)


def test_nonfinite_teacher_skips_step_bitwise(toy_batch):
    teacher, student = tiny(0), tiny(7, hidden=16)
    d = _exact_kl(student, teacher, _cfg(), pad_id=0)
    trajs = toy_batch(student, 1, 4, step=0)
    start = _params(student)
    d.update(trajs, DistillMode.REVERSE)
    before, opt = _params(student), copy.deepcopy(d.optimizer.state_dict())
    with torch.no_grad():
        teacher.lm_head.weight[3, 0] = float("nan")
    m = d.update(trajs, DistillMode.REVERSE)
    assert m["skipped"] == 1.0 and m["guard/nonfinite"] == 1.0 and not math.isfinite(m["loss"])
    assert _same(before, _params(student))
    after = d.optimizer.state_dict()
    assert all(torch.equal(opt["state"][i][k], after["state"][i][k]) for i in opt["state"] for k in opt["state"][i])
    d.update(trajs, DistillMode.REVERSE)
    m = d.update(trajs, DistillMode.REVERSE)  # third non-finite step in a row: rollback
    # to the start (1 applied step < learner.rollback_steps)
    assert m["guard/rollbacks"] == 1.0 and m["guard/lr_scale"] == 0.5 and _same(start, _params(student))


def test_grad_clip_counted(toy_batch):
    d = _exact_kl(tiny(7, hidden=16), tiny(0), _cfg(grad_clip=1e-3), pad_id=0)
    m = d.update(toy_batch(d.model, 1, 4, step=0), DistillMode.REVERSE)
    assert m["grad_norm"] > 1e-3 and m["guard/grad_clipped"] == 1.0


def test_resume_is_bit_exact(toy_batch):
    teacher = tiny(0)
    batches = [toy_batch(tiny(3), 1, 4, step=k) for k in range(4)]
    a = _exact_kl(tiny(7, hidden=16), teacher, _cfg(schedule="cosine", warmup_steps=1), pad_id=0, total_steps=4)
    for b in batches[:2]:
        a.update(b, DistillMode.REVERSE)
    tensors, skel = flatten_state(a.state_dict())   # only tensors, numbers, lists, dicts (no pickle)
    b_ = _exact_kl(tiny(11, hidden=16), teacher, _cfg(schedule="cosine", warmup_steps=1), pad_id=0, total_steps=4)
    b_.load_state_dict(unflatten_state(tensors, skel))
    for b in batches[2:]:
        ma, mb = a.update(b, DistillMode.FORWARD), b_.update(b, DistillMode.FORWARD)
        assert ma == mb
    assert _same(_params(a.model), _params(b_.model))


def test_refuses_different_vocab_sizes():
    with pytest.raises(ValueError, match="logits"):
        _exact_kl(tiny(1, vocab=20), tiny(0), _cfg())
    with pytest.raises(ValueError, match="lr"):
        _exact_kl(tiny(1), tiny(0), _cfg(lr=0.0))


def test_sampled_path_through_the_rl_learner_lowers_kl(toy_batch):
    """Large-vocabulary route: on-policy advantages -(log q - log p_T) through the policy-gradient trainer."""
    teacher, student = tiny(0), tiny(7, hidden=16)
    learner = rl_trainer(
        student, LearnerConfig(lr=1e-2, micro_batch=16, advantage="reinforce"), pad_id=0, total_steps=40
    )
    held = toy_batch(student, 2, 8, step=999)
    kl0 = reverse_kl_on(student, teacher, held, pad_id=0)
    for k in range(25):
        trajs = toy_batch(student, 2, 8, step=k)
        learner.update(trajs, token_advantages=token_advantages(student, teacher, trajs, pad_id=0))
    held = toy_batch(student, 2, 8, step=999)
    kl1 = reverse_kl_on(student, teacher, held, pad_id=0)
    assert kl1 < 0.6 * kl0, (kl0, kl1)


# ------------------------------------------------------------------------------------------- tokenizer
def test_check_same_tokenizer():
    a, b = build_char_tokenizer(), build_char_tokenizer()
    check_same_tokenizer(a, b)
    b.add_tokens(["<tool>"])
    with pytest.raises(ValueError, match=r"vocabulary \(101 vs 102 tokens; 0 only in the first.*1 only in the second"):
        check_same_tokenizer(a, b)
    c = build_char_tokenizer()
    c.chat_template = "{{ messages }}"
    with pytest.raises(ValueError, match="chat template"):
        check_same_tokenizer(a, c)
    d = build_char_tokenizer()
    d.add_special_tokens({"additional_special_tokens": ["<x>"]})
    with pytest.raises(ValueError, match="special tokens"):
        check_same_tokenizer(a, d)


def test_distill_trainer_routes_by_vocabulary_and_method(toy_batch):
    teacher = tiny(0)
    _, on, off = distill_trainer(tiny(7, hidden=16), teacher, _cfg(), method=DistillMethod.MIXED)
    assert (on, off) == (DistillMode.REVERSE, DistillMode.FORWARD)
    sampled, on, off = distill_trainer(tiny(7, hidden=16), teacher, _cfg(), full_vocab_max=VOCAB - 1,
                                       sampled_cfg=LearnerConfig(), method="on_policy")
    assert (on, off) == (DistillMode.SAMPLED, None)
    ce, on, off = distill_trainer(tiny(7, hidden=16), teacher, _cfg(), full_vocab_max=VOCAB - 1,
                                  method=DistillMethod.OFF_POLICY)
    assert (on, off) == (None, DistillMode.CE)
    with pytest.raises(ValueError, match="mixed needs a vocabulary of at most distill.full_vocab_max=15 tokens"):
        distill_trainer(tiny(7, hidden=16), teacher, _cfg(), full_vocab_max=VOCAB - 1, method=DistillMethod.MIXED)
    with pytest.raises(ValueError, match="sampled_cfg"):
        distill_trainer(tiny(7, hidden=16), teacher, _cfg(), full_vocab_max=VOCAB - 1)
    trajs = toy_batch(teacher, 1, 4, step=0)
    with pytest.raises(ValueError, match="only learns on-policy"):
        sampled.update(trajs, DistillMode.REVERSE)
    assert ce.update(trajs, DistillMode.CE)["tokens_trained"] == 8.0


def test_sampled_trainer_is_the_pg_trainer_with_teacher_advantages(toy_batch):
    """SAMPLED = rl_trainer(distill lr, no KL/entropy, one epoch) fed token_advantages, bit for bit."""
    teacher, s1, s2 = tiny(0), tiny(7, hidden=16), tiny(7, hidden=16)
    dcfg, base = _cfg(lr=1e-2, kl_coef=0.5, temperature=1.3), LearnerConfig(kl_coef=0.2, entropy_coef=0.1, epochs=3)
    tr, on, _ = distill_trainer(s1, teacher, dcfg, full_vocab_max=1, sampled_cfg=base, sample_temperature=0.7,
                                total_steps=3)
    ref = rl_trainer(s2, LearnerConfig(lr=1e-2), temperature=0.7, total_steps=3)
    for k in range(3):
        trajs = toy_batch(s1, 2, 4, step=k)
        m = tr.update(trajs, on)
        adv = token_advantages(s2, teacher, trajs, pad_id=0, temperature=1.3, kl_coef=0.5)
        assert m == ref.update(trajs, token_advantages=adv) and "guard/filtered_trajectories" in m
    assert _same(_params(s1), _params(s2)) and tr.state_dict().keys() == ref.state_dict().keys()
    assert tr.state_dict()["ref_model"] is None
