"""The banned-id mask is built on the logits' device (review finding 6).

A CUDA learner with a chat renderer (which bans pad/bos/turn-start ids) built the mask on the CPU and
applied it to CUDA logits: a device mismatch on the first step. A `meta` tensor stands in for any other
device here, so the check runs on every CPU machine: a CPU-built mask raises on meta logits exactly as
on CUDA ones.
"""

from __future__ import annotations

import torch

from steprl.learners.batch import _chunk_terms
from steprl.rollout.trajectory import LogitFilter, filtered_logprobs

CHAT_LIKE = LogitFilter(temperature=0.7, top_k=5, top_p=0.9, banned=(0, 3))


def test_filtered_logprobs_on_another_device_with_banned_ids():
    logits = torch.empty(2, 3, 11, device="meta")
    out = filtered_logprobs(logits, LogitFilter(banned=(0, 3)))
    assert out.device.type == "meta" and out.shape == (2, 3, 11)
    out = filtered_logprobs(logits, CHAT_LIKE)
    assert out.device.type == "meta" and out.shape == (2, 3, 11)


def test_learner_chunk_terms_on_another_device_with_banned_ids():
    logits = torch.empty(2, 4, 11, device="meta")
    targets = torch.zeros(2, 4, dtype=torch.int64, device="meta")
    logp, ent = _chunk_terms(logits, targets, CHAT_LIKE)[:2]
    assert logp.device.type == ent.device.type == "meta"
    assert logp.shape == ent.shape == (2, 4)
