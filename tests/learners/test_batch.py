"""Batch layout, micro-batching and fp32 log-probs (docs/numerics.md#guards, #losses)."""

from __future__ import annotations

import pytest
import torch

from steprl.learners.batch import collate, micro_batches, token_logprobs


def test_collate_sorts_by_index_and_aligns_to_targets(traj):
    a = traj(7, [1, 2, 3], [0, 1, 1], [0.0, -0.5, -0.25])
    b = traj(2, [4, 5, 6, 7], [0, 0, 1, 0], [9.0, 9.0, -1.5, 9.0])
    batch = collate([a, b], pad_id=0, advantages=[2.0, -1.0])
    assert batch.index_B.tolist() == [2, 7]
    assert batch.tokens_BT.tolist() == [[4, 5, 6, 7], [1, 2, 3, 0]]
    assert batch.attention_mask_BT.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch.action_mask_BT.tolist() == [[0, 1, 0], [1, 1, 0]]
    # behaviour log-probs are zero off the action mask (the 9.0s never reach the batch)
    assert batch.behavior_logprobs_BT.tolist() == [[0.0, -1.5, 0.0], [-0.5, -0.25, 0.0]]
    assert batch.advantages_BT.tolist() == [[0.0, -1.0, 0.0], [2.0, 2.0, 0.0]]
    assert (batch.n_tokens, batch.n_seqs, batch.norm_len, batch.n_rows) == (3.0, 2.0, 3.0, 2.0)


def test_collate_invalid_rows_and_nan_observations_are_zeroed(traj):
    a = traj(0, [1, 2, 3], [0, 1, 0], [0.0, -0.5, float("nan")])
    b = traj(1, [1, 2, 3], [0, 1, 1], [0.0, float("nan"), -1.0])
    batch = collate([a, b], 0, [1.0, float("nan")], valid=[True, False])
    assert torch.isfinite(batch.behavior_logprobs_BT).all() and torch.isfinite(batch.advantages_BT).all()
    assert batch.action_mask_BT.tolist() == [[1, 0], [0, 0]]
    assert batch.n_tokens == 1.0 and batch.n_seqs == 1.0


def test_collate_token_advantages_and_errors(traj):
    a = traj(0, [1, 2, 3], [0, 1, 1])
    batch = collate([a], 0, [torch.tensor([5.0, 0.5, -0.5])])
    assert batch.advantages_BT.tolist() == [[0.5, -0.5]]
    with pytest.raises(ValueError, match="duplicate"):
        collate([a, a], 0, [0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        collate([a], 0, [torch.zeros(2)])


def test_micro_batches_trim_and_keep_whole_batch_normalisers(traj):
    trajs = [traj(i, [1] * (2 + i), [0] + [1] * (1 + i)) for i in range(5)]
    batch = collate(trajs, 0, [1.0] * 5)
    mbs = micro_batches(batch, 2)
    assert [mb.size for mb in mbs] == [2, 2, 1]
    assert [mb.tokens_BT.shape[1] for mb in mbs] == [3, 5, 6]
    assert all(mb.n_tokens == batch.n_tokens == 15.0 for mb in mbs)
    assert sum(float(mb.action_mask_BT.sum()) for mb in mbs) == 15.0
    with pytest.raises(ValueError):
        micro_batches(batch, 0)


def test_token_logprobs_fp32_matches_fp64_reference_with_temperature(new_model):
    model = new_model(1)
    tokens = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, 0, 0]])
    attn = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    logp, ent = token_logprobs(model, tokens, attn, temperature=0.7)
    assert logp.dtype == torch.float32 and logp.shape == (2, 4)
    with torch.no_grad():
        for b, L in ((0, 5), (1, 3)):
            z = model(input_ids=tokens[b : b + 1, :L]).logits[0, :-1].double() / 0.7
            ref = torch.log_softmax(z, -1)
            assert torch.allclose(
                logp[b, : L - 1].double(), ref.gather(-1, tokens[b, 1:L, None]).squeeze(-1), atol=1e-5
            )
            ref_ent = torch.logsumexp(z, -1) - (torch.softmax(z, -1) * z).sum(-1)
            assert torch.allclose(ent[b, : L - 1].double(), ref_ent, atol=1e-5)
    with pytest.raises(ValueError):
        token_logprobs(model, tokens, attn, temperature=0.0)


def test_token_logprobs_upcasts_a_bf16_model(new_model):
    model = new_model(1).to(torch.bfloat16)
    tokens = torch.tensor([[3, 4, 5]])
    logp, ent = token_logprobs(model, tokens, torch.ones_like(tokens))
    assert logp.dtype == torch.float32 and ent.dtype == torch.float32
