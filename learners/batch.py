"""Learner batches: trajectories -> padded tensors aligned to targets, micro-batches, log-probs.

Layout (right padding). `tokens_BT` is [B, T]; every per-token tensor that describes a
*target* is [B, T-1]: column t refers to token t+1, predicted by the logit at position t.
So `action_mask_BT[b, t] = traj.action_mask[t+1]`; the first token of a sequence is never
trained (nothing predicts it). Rows are sorted by `spec.index`, never by arrival order
(so the result does not depend on which worker finished first; docs/numerics.md#seeding), and
micro-batches are fixed slices of that order.

Normalisers for loss aggregation (`n_tokens`, `n_seqs`, `norm_len`) are computed once over
the whole batch and copied into every micro-batch, so summing micro-batch losses gives the
whole-batch loss whatever the micro-batch size (docs/numerics.md#losses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from steprl.rollout.trajectory import LogitFilter, Trajectory, filter_logprobs


@dataclass(frozen=True)
class Batch:
    """Padded, index-sorted training tensors (see the module docstring for the alignment)."""

    tokens_BT: torch.Tensor
    """[B, T] int64 token ids, right padded with pad_id."""
    attention_mask_BT: torch.Tensor
    """[B, T] int64, 1 on real tokens."""
    action_mask_BT: torch.Tensor
    """[B, T-1] float32, 1 where target token t+1 is a trained action token of a valid trajectory."""
    behavior_logprobs_BT: torch.Tensor
    """[B, T-1] float32 sampler log-probs of the targets (0 where the mask is 0)."""
    advantages_BT: torch.Tensor
    """[B, T-1] float32 advantages of the targets (0 where the mask is 0)."""
    index_B: torch.Tensor
    """[B] int64 episode indices (ascending)."""
    n_tokens: float
    """Trained tokens in the whole batch (>= 1): the token-mean denominator."""
    n_seqs: float
    """Sequences with at least one trained token in the whole batch (>= 1)."""
    norm_len: float
    """L of the seq-mean-token-sum-norm denominator B x L (whole batch)."""
    n_rows: float
    """B of the whole batch (>= 1)."""

    @property
    def size(self) -> int:
        """Number of rows."""
        return int(self.tokens_BT.shape[0])


def collate(
    trajs: Sequence[Trajectory],
    pad_id: int,
    advantages: Sequence[float | torch.Tensor],
    valid: Sequence[bool] | None = None,
    norm_len: int = 0,
) -> Batch:
    """Pad `trajs` into a `Batch` sorted by `spec.index`.

    `advantages[i]` belongs to `trajs[i]`: a float (the whole sequence) or a 1-D tensor aligned
    with `trajs[i].tokens`. Rows with `valid[i]` False keep their tokens but get zero mask,
    zero behaviour log-probs and zero advantages, so a NaN in them cannot reach the loss.
    Raises ValueError on duplicate episode indices or mismatched lengths.
    """
    if len(advantages) != len(trajs):
        raise ValueError(f"collate: {len(trajs)} trajectories but {len(advantages)} advantages")
    valid = [True] * len(trajs) if valid is None else list(valid)
    order = sorted(range(len(trajs)), key=lambda i: trajs[i].spec.index)
    idx = [trajs[i].spec.index for i in order]
    if len(set(idx)) != len(idx):
        raise ValueError(f"collate: duplicate episode indices in batch: {sorted(idx)}")
    B = len(trajs)
    T = max([2] + [len(t.tokens) for t in trajs])
    tokens = torch.full((B, T), pad_id, dtype=torch.int64)
    attn = torch.zeros(B, T, dtype=torch.int64)
    mask = torch.zeros(B, T - 1, dtype=torch.float32)
    behav = torch.zeros(B, T - 1, dtype=torch.float32)
    adv = torch.zeros(B, T - 1, dtype=torch.float32)
    for row, i in enumerate(order):
        _fill_row(row, trajs[i], advantages[i], valid[i], tokens, attn, mask, behav, adv)
    per_seq = mask.sum(1)
    return Batch(
        tokens_BT=tokens,
        attention_mask_BT=attn,
        action_mask_BT=mask,
        behavior_logprobs_BT=behav,
        advantages_BT=adv,
        index_B=torch.tensor(idx, dtype=torch.int64),
        n_tokens=max(1.0, float(per_seq.sum())),
        n_seqs=max(1.0, float((per_seq > 0).sum())),
        norm_len=float(norm_len if norm_len > 0 else T - 1),
        n_rows=float(max(1, B)),
    )


def _fill_row(row: int, t: Trajectory, a: float | torch.Tensor, valid: bool, tokens: torch.Tensor, attn: torch.Tensor,
              mask: torch.Tensor, behav: torch.Tensor, adv: torch.Tensor) -> None:
    """Write one trajectory into row `row` of the batch tensors (an invalid one keeps only its tokens)."""
    L = len(t.tokens)
    if L == 0:
        return
    tokens[row, :L] = torch.tensor(t.tokens, dtype=torch.int64)
    attn[row, :L] = 1
    if not valid or L < 2:
        return
    m = torch.tensor(t.action_mask[1:], dtype=torch.float32)
    mask[row, : L - 1] = m
    behav[row, : L - 1] = torch.where(m > 0, torch.tensor(t.behavior_logprobs[1:], dtype=torch.float32), 0.0)
    if isinstance(a, torch.Tensor):
        if a.dim() != 1 or a.shape[0] != L:
            raise ValueError(f"collate: token advantages of episode {t.spec.index} have shape {tuple(a.shape)}, "
                             f"expected ({L},)")
        adv[row, : L - 1] = torch.where(m > 0, a[1:].to(torch.float32), 0.0)
    else:
        adv[row, : L - 1] = torch.where(m > 0, float(a), 0.0)  # a where, never a multiply by the mask


def micro_batches(batch: Batch, size: int) -> list[Batch]:
    """Consecutive slices of `size` rows (the last may be shorter), trailing all-pad columns trimmed.

    Whole-batch normalisers are kept, so the micro-batch losses sum to the batch loss.
    """
    if size <= 0:
        raise ValueError(f"micro_batches: size must be positive, got {size}")
    out = []
    for s in range(0, batch.size, size):
        attn = batch.attention_mask_BT[s : s + size]
        T = max(2, int(attn.sum(1).max())) if attn.numel() else 2
        out.append(
            replace(
                batch,
                tokens_BT=batch.tokens_BT[s : s + size, :T],
                attention_mask_BT=attn[:, :T],
                action_mask_BT=batch.action_mask_BT[s : s + size, : T - 1],
                behavior_logprobs_BT=batch.behavior_logprobs_BT[s : s + size, : T - 1],
                advantages_BT=batch.advantages_BT[s : s + size, : T - 1],
                index_B=batch.index_B[s : s + size],
            )
        )
    return out


CHUNK_ELEMENTS = 1 << 24
"""Logit elements (B x chunk x V) per log-prob chunk: 64 MiB in fp32, whatever the vocabulary."""

_HEAD_SPLIT_TYPES = ("llama", "qwen2", "qwen3", "mistral")
"""Model types whose logits are exactly lm_head(decoder(x)) (no logit scaling or soft-capping)."""


def splits_head(model: torch.nn.Module) -> bool:
    """Whether the model's logits are exactly lm_head(decoder(x)), so the head may run on chunks of positions."""
    return getattr(getattr(model, "config", None), "model_type", "") in _HEAD_SPLIT_TYPES


def chunk_positions(batch: int, vocab: int, chunk_elements: int = CHUNK_ELEMENTS) -> int:
    """Sequence positions per LM-head chunk so that one chunk holds at most `chunk_elements` logits."""
    return max(1, chunk_elements // max(1, batch * vocab))


class TokenTerms(NamedTuple):
    """Per-target terms [B, T-1] of `token_terms`."""

    logprobs: torch.Tensor
    """float32 log-probs of the targets under the filter (the target itself always kept)."""
    entropy: torch.Tensor
    """float32 entropy of the same filtered distribution."""
    outside: torch.Tensor
    """bool: the learner's own top-k/top-p set would have dropped the target (a sampler/learner disagreement)."""


def token_logprobs(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
    logit_filter: LogitFilter | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, entropies) of `token_terms`, both [B, T-1] float32 (docs/numerics.md#losses)."""
    terms = token_terms(model, tokens, attention_mask, temperature, logit_filter, chunk_elements)
    return terms.logprobs, terms.entropy


def token_terms(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
    logit_filter: LogitFilter | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> TokenTerms:
    """Per-target log-probs, entropies and filter disagreements, all [B, T-1] (docs/numerics.md#losses).

    `logprobs[b, t] = log softmax(filter(z_t))[tokens[b, t+1]]` with the logits upcast to float32
    before filtering and reducing, whatever the model dtype; explicit position ids (right padding).
    `logit_filter` (default: `temperature` alone) is the sampler's filter (temperature, top-k, top-p,
    banned ids), so the learner's log-probs are those of the distribution the tokens were drawn from.
    The target is never dropped by top-k/top-p: the learner's logits are not the sampler's bits, and a
    sampled token just outside the learner's set would get -inf (a NaN loss); `outside` marks those.
    Entropy is that of the same filtered distribution. For Llama/Qwen2-type models the LM head runs
    in chunks of the sequence holding at most `chunk_elements` logits each (re-computed in backward),
    so no [B, T, V] float32 tensor is ever held; a batch that fits one chunk takes the plain path.
    Under bf16 autocast (learners/precision.py) those models always take the split path, so the LM head
    runs in float32 on the final norm's output cast to float32; other model types upcast bf16-head logits.
    """
    filt = logit_filter if logit_filter is not None else LogitFilter(temperature)
    if not (filt.temperature > 0 and math.isfinite(filt.temperature)):
        raise ValueError(f"token_logprobs: temperature must be a positive finite number, got {filt.temperature}")
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    B, T = tokens.shape
    vocab = model.get_output_embeddings().weight.shape[0] if hasattr(model, "get_output_embeddings") else 0
    chunk = chunk_positions(B, vocab, chunk_elements)
    split = splits_head(model)
    amp = torch.is_autocast_enabled(tokens.device.type)
    if not split or (chunk >= T - 1 and not amp):
        out = model(input_ids=tokens, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        return TokenTerms(*_chunk_terms(out.logits[:, :-1], tokens[:, 1:], filt))
    hidden = model.get_decoder()(input_ids=tokens, attention_mask=attention_mask, position_ids=position_ids,
                                 use_cache=False).last_hidden_state
    head = model.get_output_embeddings()
    parts = []
    for s in range(0, T - 1, chunk):
        e = min(T - 1, s + chunk)

        def terms(h: torch.Tensor, s: int = s, e: int = e) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return _chunk_terms(head_logits(head, h, amp), tokens[:, s + 1 : e + 1], filt)

        h = hidden[:, s:e]
        if torch.is_grad_enabled():
            parts.append(checkpoint(terms, h, use_reentrant=False, preserve_rng_state=False))
        else:
            parts.append(terms(h))
    return TokenTerms(*(torch.cat([p[i] for p in parts], dim=1) for i in range(3)))


def head_logits(head: torch.nn.Module, h: torch.Tensor, amp: bool) -> torch.Tensor:
    """Logits of hidden states `h`; under autocast in float32 (h cast up, autocast off for the head)."""
    if not amp:
        return head(h)
    with torch.autocast(h.device.type, enabled=False):
        return head(h.float())


def _chunk_terms(logits: torch.Tensor, targets: torch.Tensor, filt: LogitFilter
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-prob of `targets`, entropy, target outside the learner's set) [B, c] for logits [B, c, V] under `filt`.

    Each target is kept by top-k/top-p (`filter_logprobs(..., keep=targets)`), so an action token the sampler
    emitted always has a finite log-prob here (banned ids are never sampled and stay -inf).
    """
    logp_all, outside = filter_logprobs(logits, filt, keep=targets)
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    if not filt.truncates:
        return logp, -(logp_all.exp() * logp_all).sum(-1), outside
    # filtered ids: exp(-inf) * -inf is NaN (in the gradient too); their share of the entropy is 0. masked_fill
    # before the product (not a where after it), so no NaN reaches the backward either.
    safe = logp_all.masked_fill(~torch.isfinite(logp_all), 0.0)
    return logp, -(logp_all.exp() * safe).sum(-1), outside
