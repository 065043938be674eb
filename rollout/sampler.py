"""Step-seeded token sampling: the numbers every generation backend must reproduce.

Sampling is Gumbel-max: logits in fp32 -> `filtered_logprobs` (temperature, banned ids, then
top-k, then top-p; the learner applies the same `LogitFilter`) -> y = argmax(logp + G),
G = -log(-log(u)) with u a pure function of (sample_key, turn, position, token id) from
`rollout.seeding` (docs/numerics.md#seeding).
The recorded behaviour log-prob is logp[y] in fp32. Nothing here draws from a global RNG.
The `hf` backend (rollout/backends/hf.py) calls `sample_next` after each forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steprl.rollout.seeding import _TOKEN_SALT, bits_to_uniform, mix64, position_keys
from steprl.rollout.trajectory import LogitFilter
from steprl.rollout.trajectory import filtered_logprobs as _filtered


@dataclass(frozen=True)
class SamplingParams:
    """How one token is drawn from the logits."""

    temperature: float = 1.0
    """Divides the logits (> 0). Greedy decoding also records log-probs of the tempered distribution."""
    top_k: int = 0
    """Keep the k most likely ids (ties to the lowest id); 0 disables."""
    top_p: float = 1.0
    """Keep the minimal prefix, sorted by (-p, id), whose probability reaches top_p; 1.0 disables."""
    greedy: bool = False
    """Take the argmax of the filtered log-probs instead of sampling."""
    banned: tuple[int, ...] = ()
    """Ids never sampled (pad, bos, turn-start markup of a chat template): -inf before top-k/top-p."""
    stop_token_ids: tuple[int, ...] = ()
    """Ids that end a turn when sampled (end-of-turn, EOS); kept as the turn's last, trained, token."""

    def __post_init__(self) -> None:
        """Reject impossible values early, naming the field."""
        if not self.temperature > 0:
            raise ValueError(f"SamplingParams.temperature: expected > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k: expected >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p: expected in (0, 1], got {self.top_p}")

    @property
    def logit_filter(self) -> LogitFilter:
        """The filter part (temperature, top-k, top-p, banned ids), the record the learner re-applies."""
        return LogitFilter(self.temperature, self.top_k, self.top_p, tuple(self.banned))


def filtered_logprobs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Log-probs [B, V] (fp32) of softmax(logits / T) without banned ids, after top-k then top-p; -inf on
    filtered ids. The one definition is `rollout.trajectory.filtered_logprobs`, which the learner re-applies."""
    return _filtered(logits, params.logit_filter)


def token_mix(vocab: int) -> torch.Tensor:
    """Per-token-id mixed salts [V] (int64): the token half of `seeding.uniform_from_keys`, computed once."""
    return mix64(torch.arange(vocab, dtype=torch.int64) * _TOKEN_SALT)


def gumbel_from_mix(row_keys: torch.Tensor, mixed_ids: torch.Tensor) -> torch.Tensor:
    """Gumbel noise float64 for row keys [B] and pre-mixed ids [V] or [B, K]; equals `seeding.gumbel_noise`."""
    ids = mixed_ids if mixed_ids.dim() == 2 else mixed_ids[None, :]
    bits = mix64(row_keys[:, None] ^ ids)
    return -torch.log(-torch.log(bits_to_uniform(bits)))


def sample_next(
    logits: torch.Tensor,
    sample_keys: torch.Tensor,
    turns: torch.Tensor,
    positions: torch.Tensor,
    params: SamplingParams,
    mixed_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row by Gumbel-max over `filtered_logprobs` (or argmax when greedy).

    logits [B, V]; sample_keys, turns, positions int64 [B]. Returns (ids int64 [B],
    log-probs fp32 [B] under the filtered distribution). Ties go to the lowest id.
    `mixed_ids` = `token_mix(V)` may be passed to avoid recomputing it.
    """
    vocab = logits.shape[-1]
    logp = filtered_logprobs(logits, params)
    if params.greedy:
        y = torch.argmax(logp, dim=-1)
    else:
        mix = token_mix(vocab) if mixed_ids is None else mixed_ids
        row_keys = position_keys(sample_keys, turns, positions)
        k = params.top_k
        if 0 < k < vocab and params.top_p >= 1.0:
            # Only k ids survive: draw noise for those alone (ties broken to the lowest id).
            cand = torch.topk(logp, k, dim=-1, sorted=False).indices
            score = logp.gather(1, cand).double() + gumbel_from_mix(row_keys, mix[cand])
            best = score.max(dim=-1, keepdim=True).values
            y = torch.where(score == best, cand, torch.full_like(cand, vocab)).min(dim=-1).values
        else:
            y = torch.argmax(logp.double() + gumbel_from_mix(row_keys, mix), dim=-1)
    return y, logp.gather(1, y[:, None])[:, 0]
