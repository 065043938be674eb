"""Distillation math: per-token KLs between a student and a frozen teacher sharing one tokenizer.

Usage::

    check_same_tokenizer(teacher_tok, student_tok)            # refuse a mismatch
    kl = reverse_kl_on(student, teacher, held_out_trajs, pad_id=tok.pad_token_id)
    adv = token_advantages(student, teacher, trajs, pad_id=tok.pad_token_id)

The objectives built on these (exact reverse/forward KL, ce, sampled KL) are in
`kl_objectives.py`; see docs/numerics.md#distillation. KLs are over the full vocabulary,
in float32, at the positions that predict action tokens (env and tool tokens masked), the LM heads
run on chunks of positions (`kl_token_terms`). For vocabularies above `FULL_VOCAB_MAX` the full
distributions still cost too much compute and memory: on-policy
distillation then uses the sampled per-token advantage A_t = -clamp(log q(y_t) - log p_T(y_t))
through the policy-gradient objective, whose expected gradient is the reverse-KL gradient
(Agarwal et al. 2024, https://arxiv.org/abs/2306.13649; Thinking Machines, "On-Policy
Distillation", 2025, https://thinkingmachines.ai/blog/on-policy-distillation/).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from steprl.rollout.trajectory import Trajectory

from .batch import (
    CHUNK_ELEMENTS,
    Batch,
    chunk_positions,
    collate,
    head_logits,
    micro_batches,
    splits_head,
    token_logprobs,
)
from .policy_gradient import trajectory_is_valid
from .precision import model_device, to_device

FULL_VOCAB_MAX = 65536
"""Largest vocabulary for which the exact full-vocabulary KL is used (above: sampled advantages)."""


# ---------------------------------------------------------------------------------------------- math
def _kl_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 tempered log-softmaxes (log q, log p) of the two logit tensors [..., V]."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return log_q, log_p


def reverse_kl_per_token(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    """KL(q || p) = sum_v q(v) (log q(v) - log p(v)) per position, float32, shape [...]."""
    log_q, log_p = _kl_terms(student_logits, teacher_logits, temperature)
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def forward_kl_per_token(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    """KL(p || q) = sum_v p(v) (log p(v) - log q(v)) per position, float32, shape [...]."""
    log_q, log_p = _kl_terms(student_logits, teacher_logits, temperature)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


class KLTerms(NamedTuple):
    """Per-target distillation terms [B, T-1], float32 (column t: the logit at t predicting token t+1)."""

    reverse: torch.Tensor
    """KL(q || p_T) of the student q to the teacher p_T."""
    forward: torch.Tensor
    """KL(p_T || q)."""
    ce: torch.Tensor
    """-log q(token t+1): the student's cross-entropy on the sequence's own tokens."""


def _terms_of_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                     temperature: float) -> KLTerms:
    """`KLTerms` of logits [B, c, V] for targets [B, c]: one pair of log-softmaxes for all three."""
    log_q, log_p = _kl_terms(student_logits, teacher_logits, temperature)
    return KLTerms((log_q.exp() * (log_q - log_p)).sum(-1), (log_p.exp() * (log_p - log_q)).sum(-1),
                   -log_q.gather(-1, targets[..., None]).squeeze(-1))


def kl_token_terms(student: torch.nn.Module, teacher: torch.nn.Module, tokens: torch.Tensor,
                   attention_mask: torch.Tensor, temperature: float = 1.0,
                   chunk_elements: int = CHUNK_ELEMENTS) -> KLTerms:
    """Reverse KL, forward KL and cross-entropy per target position, gradients to the student only.

    Two [B, T, V] float32 logit tensors (and their log-softmaxes) would be most of a distillation step's
    memory at a 49k vocabulary. For Llama/Qwen2-type models (`splits_head`) both LM heads therefore run on
    chunks of positions holding at most `chunk_elements` logits each, re-computed in backward (activation
    checkpointing), on the decoders' hidden states; a batch that fits one chunk takes the plain path, so small
    models keep their exact bits. The teacher never gets gradients.
    """
    dev = model_device(student)  # batches are built on the CPU; the model may live on cuda
    tokens, attention_mask = tokens.to(dev), attention_mask.to(dev)
    B, T = tokens.shape
    chunk = chunk_positions(B, vocab_size_of(student), chunk_elements)
    if not (splits_head(student) and splits_head(teacher)) or chunk >= T - 1:
        s_logits = logits_of(student, tokens, attention_mask)
        with torch.no_grad():
            t_logits = logits_of(teacher, tokens, attention_mask)
        return _terms_of_logits(s_logits, t_logits, tokens[:, 1:], temperature)
    amp = torch.is_autocast_enabled(dev.type)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    kw = {"input_ids": tokens, "attention_mask": attention_mask, "position_ids": position_ids, "use_cache": False}
    hs = student.get_decoder()(**kw).last_hidden_state
    with torch.no_grad():
        ht = teacher.get_decoder()(**kw).last_hidden_state
    s_head, t_head = student.get_output_embeddings(), teacher.get_output_embeddings()
    parts = []
    for s in range(0, T - 1, chunk):
        e = min(T - 1, s + chunk)

        def terms(h: torch.Tensor, s: int = s, e: int = e) -> KLTerms:
            with torch.no_grad():
                t_logits = head_logits(t_head, ht[:, s:e], amp).float()
            return _terms_of_logits(head_logits(s_head, h, amp).float(), t_logits, tokens[:, s + 1 : e + 1],
                                    temperature)

        h = hs[:, s:e]
        use_ckpt = torch.is_grad_enabled() and h.requires_grad
        parts.append(checkpoint(terms, h, use_reentrant=False, preserve_rng_state=False) if use_ckpt else terms(h))
    return KLTerms(*(torch.cat([p[i] for p in parts], dim=1) for i in range(3)))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, denom: float | None = None) -> torch.Tensor:
    """sum of x where mask is 1, / (denom or max(1, sum(mask))); masked-out entries are selected away with
    `where`, never multiplied by 0 (NaN-safe in value and gradient). `mask` holds 0/1."""
    m = mask.to(torch.float32)
    total = torch.where(m > 0, x, torch.zeros_like(x)).sum()
    return total / (denom if denom is not None else m.sum().clamp(min=1.0))


def reverse_kl_full(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                    temperature: float = 1.0) -> torch.Tensor:
    """Token-mean exact reverse KL(q || p_T) over the positions where `mask` is 1 (scalar, float32).

    `student_logits`, `teacher_logits`: [..., V]; `mask`: [...] (1 on positions predicting an action token).
    Its gradient with respect to the student logits is 0 when q == p_T.
    """
    return masked_mean(reverse_kl_per_token(student_logits, teacher_logits, temperature), mask)


def forward_kl_full(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                    temperature: float = 1.0) -> torch.Tensor:
    """Token-mean exact forward KL(p_T || q) over the positions where `mask` is 1 (scalar, float32)."""
    return masked_mean(forward_kl_per_token(student_logits, teacher_logits, temperature), mask)


def sampled_advantages(student_lp: torch.Tensor, teacher_lp: torch.Tensor, clamp: float = 20.0) -> torch.Tensor:
    """Per-token on-policy distillation advantage A_t = -clamp(log q(y_t) - log p_T(y_t), -c, c).

    Zero when student == teacher; its policy-gradient expectation is the reverse-KL gradient.
    """
    return -(student_lp.float() - teacher_lp.float()).clamp(-clamp, clamp)


def use_full_vocab(vocab_size: int, limit: int = FULL_VOCAB_MAX) -> bool:
    """True when the exact full-vocabulary KL is affordable (vocab_size <= limit)."""
    return int(vocab_size) <= int(limit)


# ------------------------------------------------------------------------------------------- helpers
def logits_of(model: torch.nn.Module, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T-1, V] float32 logits at the positions predicting tokens 1..T-1 (explicit position ids, right padding)."""
    dev = model_device(model)  # batches are built on the CPU; the model may live on cuda
    tokens, attention_mask = tokens.to(dev), attention_mask.to(dev)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=tokens, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.logits[:, :-1].float()


def vocab_size_of(model: torch.nn.Module) -> int:
    """Number of logits the model emits (output embedding rows)."""
    return int(model.get_output_embeddings().weight.shape[0])


def collate_valid(trajs: Sequence[Trajectory], pad_id: int) -> tuple[Batch, int]:
    """Collate with zero advantages, masking invalid trajectories; returns (batch, number of bad ones)."""
    valid = [trajectory_is_valid(t) for t in trajs]
    return collate(list(trajs), pad_id, [0.0] * len(trajs), valid), len(valid) - sum(valid)


@torch.no_grad()
def reverse_kl_on(model_s: torch.nn.Module, model_t: torch.nn.Module, trajs: Sequence[Trajectory], *, pad_id: int,
                  temperature: float = 1.0, micro_batch: int = 16) -> float:
    """Mean per-token exact reverse KL(student || teacher) over the action tokens of `trajs` (nats/token).

    Meaningful on trajectories the student sampled (the expectation is under q); 0.0 when there is no action token.
    """
    if not trajs:
        return 0.0
    batch, _ = collate_valid(trajs, pad_id)
    was = (model_s.training, model_t.training)
    model_s.eval(), model_t.eval()
    total = 0.0
    try:
        for mb in micro_batches(batch, micro_batch):
            mb = to_device(mb, model_device(model_s))
            kl = kl_token_terms(model_s, model_t, mb.tokens_BT, mb.attention_mask_BT, temperature).reverse
            total += float(masked_mean(kl, mb.action_mask_BT, denom=1.0))
    finally:
        model_s.train(was[0]), model_t.train(was[1])
    return total / max(1.0, float(batch.action_mask_BT.sum()))


@torch.no_grad()
def token_advantages(student: torch.nn.Module, teacher: torch.nn.Module, trajs: Sequence[Trajectory], *, pad_id: int,
                     temperature: float = 1.0, clamp: float = 20.0, kl_coef: float = 1.0,
                     micro_batch: int = 16) -> list[torch.Tensor]:
    """One 1-D tensor per trajectory, aligned with its tokens: kl_coef x `sampled_advantages` on tokens 1..
    (0 at token 0).

    For the policy-gradient objective's `token_advantages` (large vocabularies). Log-probs are recomputed for both
    models in float32 at `temperature`; non-action entries are zeroed by `collate`.
    """
    out: list[torch.Tensor] = []
    for k in range(0, len(trajs), micro_batch):
        chunk = list(trajs[k:k + micro_batch])
        T = max(2, max(len(t.tokens) for t in chunk))
        tokens = torch.full((len(chunk), T), pad_id, dtype=torch.int64)
        attn = torch.zeros(len(chunk), T, dtype=torch.int64)
        for i, t in enumerate(chunk):
            tokens[i, :len(t.tokens)] = torch.tensor(t.tokens, dtype=torch.int64)
            attn[i, :len(t.tokens)] = 1
        dev = model_device(student)
        tokens, attn = tokens.to(dev), attn.to(dev)
        lq, _ = token_logprobs(student, tokens, attn, temperature)
        lp, _ = token_logprobs(teacher, tokens, attn, temperature)
        adv = (kl_coef * sampled_advantages(lq, lp, clamp)).cpu()
        for i, t in enumerate(chunk):
            a = torch.zeros(len(t.tokens), dtype=torch.float32)
            a[1:] = adv[i, :len(t.tokens) - 1]
            out.append(a)
    return out


def check_same_tokenizer(tok_a: Any, tok_b: Any) -> None:
    """Raise ValueError naming what differs between two tokenizers: vocabulary, special tokens or chat template."""
    problems = []
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    if va != vb:
        only_a = sorted(set(va) - set(vb))
        only_b = sorted(set(vb) - set(va))
        moved = sorted(k for k in set(va) & set(vb) if va[k] != vb[k])
        problems.append(f"vocabulary ({len(va)} vs {len(vb)} tokens; {len(only_a)} only in the first e.g. "
                        f"{only_a[:3]}, {len(only_b)} only in the second e.g. {only_b[:3]}, "
                        f"{len(moved)} with different ids e.g. {moved[:3]})")
    for name in ("pad_token", "bos_token", "eos_token", "unk_token"):
        a, b = getattr(tok_a, name, None), getattr(tok_b, name, None)
        ia, ib = getattr(tok_a, f"{name}_id", None), getattr(tok_b, f"{name}_id", None)
        if (str(a), ia) != (str(b), ib):
            problems.append(f"{name} ({a!r} id {ia} vs {b!r} id {ib})")
    sa, sb = sorted(map(str, tok_a.all_special_tokens)), sorted(map(str, tok_b.all_special_tokens))
    if sa != sb:
        problems.append(f"special tokens ({sa} vs {sb})")
    ca, cb = getattr(tok_a, "chat_template", None), getattr(tok_b, "chat_template", None)
    if ca != cb:
        problems.append("chat template (" + ("absent" if ca is None else f"{len(str(ca))} chars") + " vs "
                        + ("absent" if cb is None else f"{len(str(cb))} chars") + ")")
    if problems:
        raise ValueError("teacher and student tokenizers differ: " + "; ".join(problems))
