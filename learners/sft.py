"""Warm-up supervised fine-tuning on expert demonstrations: cross-entropy on agent tokens only.

Usage::

    trainer = SFTTrainer(model, cfg.warmup, seed=cfg.seed, pad_id=tok.pad_token_id)
    losses = trainer.run(lambda k: demos_for_step(k))   # a pure function of the step

The data order belongs to the caller (`batch_for_step(k)` must be a pure function of k,
e.g. built from `derive(seed, "warmup", k)`), so `run` resumes exactly after
`load_state_dict`. AdamW, linear warm-up then cosine decay to 10% of the lr, global grad
clip 1.0, and the non-finite guard (a NaN step is skipped, not applied).
"""

from __future__ import annotations

import copy
import logging
from typing import Callable, Sequence

import torch

from .batch import token_logprobs
from .config import WarmupConfig
from .guards import clip_grad_norm, grad_norm, nonfinite_check
from .schedule import lr_multiplier

log = logging.getLogger(__name__)

Example = tuple[Sequence[int], Sequence[int]]
"""(tokens, action_mask): the loss covers tokens whose mask is 1 (the first token never)."""

GRAD_CLIP = 1.0
MIN_LR_RATIO = 0.1


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


class SFTTrainer:
    """Supervised warm-up trainer (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, cfg: WarmupConfig, seed: int, pad_id: int) -> None:
        """AdamW over the trainable parameters; `seed` is recorded (data order comes from the caller)."""
        problems = cfg.check()
        if problems:
            raise ValueError("WarmupConfig: " + "; ".join(f"{k}: {v}" for k, v in problems))
        self.model, self.cfg, self.seed, self.pad_id = model, cfg, int(seed), int(pad_id)
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                           weight_decay=0.0, foreach=False)
        self.step = 0
        self.skipped = 0

    def lr(self) -> float:
        """lr of the next step: linear warm-up, then cosine to 10% over cfg.steps."""
        return self.cfg.lr * lr_multiplier(self.step, warmup_steps=self.cfg.warmup_steps, total_steps=self.cfg.steps,
                                           schedule="cosine", min_ratio=MIN_LR_RATIO)

    def loss(self, examples: Sequence[Example]) -> torch.Tensor:
        """Token-mean cross-entropy on action-mask tokens (float32 log-softmax)."""
        tokens, attn, mask = sft_batch(examples, self.pad_id)
        logp, _ = token_logprobs(self.model, tokens, attn, 1.0)
        nll = torch.where(mask > 0, -logp, torch.zeros_like(logp))
        return nll.sum() / mask.sum().clamp(min=1.0)

    def train_step(self, examples: Sequence[Example]) -> float:
        """One optimizer step on `examples`; returns the loss before the step."""
        self.model.train()
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr()
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.loss(examples)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        value = float(loss.detach())
        if nonfinite_check(value, grad_norm(params), params):
            self.skipped += 1
        else:
            clip_grad_norm(params, GRAD_CLIP)
            self.optimizer.step()
        self.step += 1
        return value

    def run(self, batch_for_step: Callable[[int], list[tuple[list[int], list[int]]]],
            on_step: Callable[[int, float], None] | None = None) -> list[float]:
        """Train from the current step to cfg.steps; returns the losses of the steps run."""
        losses = []
        while self.step < self.cfg.steps:
            k = self.step
            loss = self.train_step(batch_for_step(k))
            losses.append(loss)
            if on_step is not None:
                on_step(k, loss)
        log.info("warm-up finished at step %d (%d skipped)", self.step, self.skipped)
        return losses

    def state_dict(self) -> dict:
        """Model, optimizer, step and skip count."""
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()), "step": self.step, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`."""
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(state["model"][k])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.step = int(state["step"])
        self.skipped = int(state["skipped"])
