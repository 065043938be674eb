"""filtered_logprobs and the Gumbel-max draw on fixed logits."""

from __future__ import annotations

import math

import pytest
import torch

from steprl.rollout.sampler import SamplingParams, filtered_logprobs, gumbel_from_mix, sample_next, token_mix
from steprl.rollout.seeding import gumbel_noise, position_keys


def test_temperature_only():
    z = torch.tensor([[1.0, 2.0, 3.0, -1.0]])
    lp = filtered_logprobs(z, SamplingParams(temperature=0.5))
    assert torch.equal(lp, torch.log_softmax(z / 0.5, dim=-1))


def test_top_k_exact_with_ties_to_lowest_id():
    z = torch.tensor([[0.0, 2.0, 1.0, 2.0, 1.0, 1.0]])
    lp = filtered_logprobs(z, SamplingParams(top_k=3))
    kept = torch.isfinite(lp)[0].nonzero().flatten().tolist()
    assert kept == [1, 2, 3]  # 2.0, 2.0 then the lowest id among the 1.0 ties
    assert torch.allclose(lp[0, kept], torch.log_softmax(z[0, kept], dim=-1))


def test_top_p_minimal_prefix():
    p = torch.tensor([[0.1, 0.4, 0.3, 0.2]])
    z = p.log()
    lp = filtered_logprobs(z, SamplingParams(top_p=0.7))
    assert torch.isfinite(lp).tolist() == [[False, True, True, False]]  # 0.4 + 0.3 reaches 0.7 (minimal)
    lp = filtered_logprobs(z, SamplingParams(top_p=0.71))
    assert torch.isfinite(lp).tolist() == [[False, True, True, True]]
    lp = filtered_logprobs(z, SamplingParams(top_p=0.05))
    assert torch.isfinite(lp).tolist() == [[False, True, False, False]]  # the top id always survives
    assert math.isclose(lp[0, 1].item(), 0.0, abs_tol=1e-7)


def test_top_k_then_top_p():
    z = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    # top-k 3 renormalises to (0.526, 0.316, 0.158); top-p 0.8 then keeps the first two
    lp = filtered_logprobs(z, SamplingParams(top_k=3, top_p=0.8))
    assert torch.isfinite(lp).tolist() == [[True, True, False, False]]


def test_bad_params():
    for kw in ({"temperature": 0.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            SamplingParams(**kw)


def test_noise_from_mix_equals_seeding():
    keys = torch.tensor([1, -5, 2**62, 77], dtype=torch.int64)
    pos = torch.tensor([0, 3, 100, 7], dtype=torch.int64)
    turns = torch.tensor([0, 1, 2, 3], dtype=torch.int64)
    ref = gumbel_noise(keys, turns, pos, 101)
    mine = gumbel_from_mix(position_keys(keys, turns, pos), token_mix(101))
    assert torch.equal(ref, mine)
    sub = torch.tensor([[5, 9], [0, 100], [50, 51], [3, 3]])
    assert torch.equal(gumbel_from_mix(position_keys(keys, turns, pos), token_mix(101)[sub]), ref.gather(1, sub))


def _draw(probs: torch.Tensor, params: SamplingParams, n: int) -> torch.Tensor:
    """n draws from fixed logits, one per sample key."""
    logits = probs.log().expand(n, -1).contiguous()
    keys = torch.arange(n, dtype=torch.int64) * 7919 + 13
    zeros = torch.zeros(n, dtype=torch.int64)
    y, lp = sample_next(logits, keys, zeros, zeros + 5, params)
    assert torch.equal(lp, filtered_logprobs(logits, params).gather(1, y[:, None])[:, 0])
    return y


def test_frequencies_match_tempered_softmax_chi_square():
    probs = torch.tensor([0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.03, 0.015, 0.005])
    n = 4000
    for T in (1.0, 0.7):
        y = _draw(probs, SamplingParams(temperature=T), n)
        expect = torch.softmax(probs.log() / T, dim=-1).double() * n
        counts = torch.bincount(y, minlength=10).double()
        chi2 = ((counts - expect) ** 2 / expect).sum().item()
        assert chi2 < 27.88, (T, chi2)  # df = 9, p = 0.001


def test_filtered_tokens_never_drawn_and_k_path_matches_full():
    probs = torch.tensor([0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.03, 0.015, 0.005])
    y = _draw(probs, SamplingParams(top_k=3), 3000)
    assert set(y.tolist()) == {0, 1, 2}
    y = _draw(probs, SamplingParams(top_p=0.6), 3000)
    assert set(y.tolist()) == {0, 1, 2}
    # the top-k fast path (noise on k ids only) equals the full-vocabulary draw
    n = 2000
    logits = torch.randn(n, 50, generator=torch.Generator().manual_seed(0))
    keys = torch.arange(n, dtype=torch.int64)
    zeros = torch.zeros(n, dtype=torch.int64)
    fast, _ = sample_next(logits, keys, zeros, zeros, SamplingParams(top_k=7))
    lp = filtered_logprobs(logits, SamplingParams(top_k=7))
    full = torch.argmax(lp.double() + gumbel_noise(keys, 0, zeros, 50), dim=-1)
    assert torch.equal(fast, full)


def test_greedy_is_argmax():
    logits = torch.randn(8, 30, generator=torch.Generator().manual_seed(1))
    z = torch.zeros(8, dtype=torch.int64)
    y, lp = sample_next(logits, z, z, z, SamplingParams(greedy=True, temperature=0.5))
    assert torch.equal(y, logits.argmax(-1))
    assert torch.equal(lp, torch.log_softmax(logits / 0.5, -1).gather(1, y[:, None])[:, 0])
