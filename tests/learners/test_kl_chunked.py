"""Distillation KLs with the LM heads run in chunks of positions equal the whole-sequence computation.

The chunked path (`kl_token_terms` below `chunk_elements`) is what keeps a 49k-vocabulary distillation step
from holding [B, T, V] float32 tensors for both models; these tests pin that it computes the same terms and
the same student gradient, gives the teacher none, and takes the plain path (exact bits) when one chunk fits.
"""

from __future__ import annotations

import torch

from steprl.learners.kl import _terms_of_logits, kl_token_terms, logits_of

VOCAB = 16  # the conftest model's
EPS = torch.finfo(torch.float32).eps


def _batch():
    tokens = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [2, 9, 8, 7, 6, 0, 0, 0, 0, 0]])
    attn = (torch.arange(10)[None] < torch.tensor([[10], [5]])).long()
    return tokens, attn


def _tolerance(x: torch.Tensor) -> float:
    """Float32 rounding of a sum over the vocabulary, from re-blocked matmuls: a few ulps per term, V terms."""
    return 8 * VOCAB * EPS * max(1.0, float(x.detach().abs().max()))


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_chunked_terms_and_student_gradient_equal_the_whole_sequence(new_model):
    student, teacher = new_model(1), new_model(2)
    tokens, attn = _batch()
    mask = attn[:, 1:].bool()
    runs = []
    for chunk_elements in (1 << 24, 2 * VOCAB * 3):  # one chunk; 3 positions a chunk (4 chunks of 9 positions)
        student.zero_grad(set_to_none=True)
        terms = kl_token_terms(student, teacher, tokens, attn, temperature=0.7, chunk_elements=chunk_elements)
        loss = torch.where(mask, terms.reverse + terms.forward + terms.ce, 0.0).sum()
        loss.backward()
        runs.append((terms, _grads(student)))
    (whole, g_whole), (parts, g_parts) = runs
    for a, b in zip(whole, parts):
        assert a.shape == b.shape == (2, 9)
        assert torch.allclose(a[mask], b[mask], rtol=0, atol=_tolerance(a[mask]))
    for a, b in zip(g_whole, g_parts):
        assert torch.allclose(a, b, rtol=0, atol=_tolerance(a) * 10)  # backward adds a recomputed head per chunk
    assert all(p.grad is None for p in teacher.parameters())
    assert float(whole.reverse[mask].min()) > 0 and float(whole.forward[mask].min()) > 0  # different models: KL > 0


def test_one_chunk_is_the_plain_path_bit_for_bit(new_model):
    student, teacher = new_model(1), new_model(2)
    tokens, attn = _batch()
    with torch.no_grad():
        want = _terms_of_logits(logits_of(student, tokens, attn), logits_of(teacher, tokens, attn), tokens[:, 1:], 1.0)
        got = kl_token_terms(student, teacher, tokens, attn)
    for a, b in zip(want, got):
        assert torch.equal(a, b)
    with torch.no_grad():
        same = kl_token_terms(teacher, teacher, tokens, attn, chunk_elements=2 * VOCAB * 2)
    assert float(same.reverse.abs().max()) <= 64 * EPS and float(same.forward.abs().max()) <= 64 * EPS
