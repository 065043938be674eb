"""Warm-up supervised fine-tuning on expert demonstrations: cross-entropy on agent tokens only.

Usage::

    trainer = sft_trainer(model, cfg.warmup, seed=cfg.seed, pad_id=tok.pad_token_id)   # trainer.py
    losses = trainer.run(lambda k: demos_for_step(k))   # a pure function of the step

The data order belongs to the caller (`batch_for_step(k)` must be a pure function of k,
e.g. built from `derive(seed, "warmup", k)`), so `run` resumes exactly after
`load_state_dict`. The trainer's `GuardedOptimizer` gives AdamW, linear warm-up then cosine
decay to MIN_LR_RATIO of the lr, the global grad clip `WarmupConfig.grad_clip` and the
non-finite guard (a NaN step is skipped, not applied); no spike checks, no rollback.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .batch import token_logprobs
from .guarded_optimizer import GuardedOptimizer
from .precision import model_device

Example = tuple[Sequence[int], Sequence[int]]
"""(tokens, action_mask): the loss covers tokens whose mask is 1 (the first token never)."""

MIN_LR_RATIO = 0.1
"""The cosine schedule ends at this fraction of the warm-up lr."""


def sft_batch(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded tokens [B, T], attention mask [B, T] and target mask [B, T-1] (in the given order)."""
    if not examples:
        raise ValueError("sft_batch: no examples")
    T = max(2, max(len(t) for t, _ in examples))
    tokens = torch.full((len(examples), T), pad_id, dtype=torch.int64)
    attn = torch.zeros(len(examples), T, dtype=torch.int64)
    mask = torch.zeros(len(examples), T - 1, dtype=torch.float32)
    for i, (toks, m) in enumerate(examples):
        if len(toks) != len(m):
            raise ValueError(f"sft_batch: example {i} has {len(toks)} tokens but {len(m)} mask entries")
        L = len(toks)
        tokens[i, :L] = torch.tensor(list(toks), dtype=torch.int64)
        attn[i, :L] = 1
        if L > 1:
            mask[i, : L - 1] = torch.tensor(list(m)[1:], dtype=torch.float32)
    return tokens, attn, mask


def length_buckets(examples: Sequence[Example], n: int) -> list[list[Example]]:
    """`examples` sorted by length (ties keep their order) and cut into `n` contiguous parts of near-equal size:
    each part is padded to its own longest, so far fewer pad tokens reach the model than in one batch."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i][0]), i))
    n = max(1, min(n, len(examples)))
    cuts = [round(k * len(order) / n) for k in range(n + 1)]
    return [[examples[i] for i in order[a:b]] for a, b in zip(cuts, cuts[1:]) if b > a]


class SFTObjective:
    """Token-mean cross-entropy on action-mask tokens; update(examples) returns loss (before the step), lr,
    grad_norm (pre-clip) and skipped."""

    counters: tuple[str, ...] = ()

    def __init__(self, model: torch.nn.Module, pad_id: int, length_buckets: int = 1) -> None:
        """The model trained, the padding token id and how many length-sorted micro-batches a batch becomes."""
        self.model, self.pad_id, self.length_buckets = model, int(pad_id), int(length_buckets)

    def loss(self, examples: Sequence[Example], denominator: float | None = None) -> torch.Tensor:
        """Cross-entropy on action-mask tokens (float32 log-softmax), summed and divided by `denominator`
        (default: these examples' target-token count, i.e. the token mean)."""
        device = model_device(self.model)
        tokens, attn, mask = (t.to(device) for t in sft_batch(examples, self.pad_id))
        logp, _ = token_logprobs(self.model, tokens, attn, 1.0)
        nll = torch.where(mask > 0, -logp, torch.zeros_like(logp))
        return nll.sum() / (mask.sum().clamp(min=1.0) if denominator is None else denominator)

    def update(self, opt: GuardedOptimizer, step: int, examples: Sequence[Example]) -> dict[str, float]:
        """One guarded step on `examples` (always stepped unless non-finite, as before the guard existed).

        With length_buckets > 1 the gradient is accumulated over length-sorted micro-batches, each divided by
        the whole batch's target-token count: the same token-mean loss with less padding computed."""
        self.model.train()
        lr = opt.begin(step)
        if self.length_buckets == 1:
            loss = self.loss(examples)
            loss.backward()
            value = float(loss.detach())
        else:
            total = float(max(1, sum(sum(m[1:]) for _, m in examples)))
            value = 0.0
            for bucket in length_buckets(examples, self.length_buckets):
                part = self.loss(bucket, total)
                part.backward()
                value += float(part.detach())
        skipped, gnorm = opt.step(value, has_targets=True, feeds_windows=False)
        return {"loss": value, "lr": lr, "grad_norm": gnorm, "skipped": float(skipped)}

    def state_dict(self) -> dict:
        """Nothing beyond the trainer's state."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""
