"""Step-seeded token sampling: the numbers every generation backend must reproduce.

Sampling is Gumbel-max: logits in fp32 -> `filtered_logprobs` (temperature, then top-k,
then top-p) -> y = argmax(logp + G), G = -log(-log(u)) with u a pure function of
(sample_key, turn, position, token id) from `rollout.seeding` (docs/numerics.md#seeding).
The recorded behaviour log-prob is logp[y] in fp32. Nothing here draws from a global RNG.
The `hf` backend (rollout/backends/hf.py) calls `sample_next` after each forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steprl.rollout.seeding import _TOKEN_SALT, _shr, mix64, position_keys


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

    def __post_init__(self) -> None:
        """Reject impossible values early, naming the field."""
        if not self.temperature > 0:
            raise ValueError(f"SamplingParams.temperature: expected > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k: expected >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p: expected in (0, 1], got {self.top_p}")


def _filter_sorted(z: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(ids sorted by (-z, id), keep mask over that order) for top-k/top-p, or None when neither is on."""
    vocab = z.shape[-1]
    use_k = 0 < params.top_k < vocab
    use_p = params.top_p < 1.0
    if not (use_k or use_p):
        return None
    if use_k and not use_p:
        # topk is not specified to break ties by id: take a stable full sort only when needed.
        sorted_z, order = torch.sort(z, dim=-1, descending=True, stable=True)
        return order[:, : params.top_k], None
    sorted_z, order = torch.sort(z, dim=-1, descending=True, stable=True)
    keep = torch.ones_like(sorted_z, dtype=torch.bool)
    if use_k:
        keep[:, params.top_k:] = False
        sorted_z = sorted_z.masked_fill(~keep, float("-inf"))
    probs = torch.softmax(sorted_z, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # mass strictly before each id
    keep &= before < params.top_p
    keep[:, 0] = True
    return order, keep


def filtered_logprobs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Log-probs [B, V] (fp32) of softmax(logits / T) after top-k then top-p; -inf on filtered ids."""
    z = logits.float()
    if params.temperature != 1.0:
        z = z / params.temperature
    sel = _filter_sorted(z, params)
    if sel is not None:
        order, keep = sel
        mask = torch.ones_like(z, dtype=torch.bool)
        if keep is None:
            mask.scatter_(1, order, False)
        else:
            mask.scatter_(1, order, ~keep)
        z = z.masked_fill(mask, float("-inf"))
    return torch.log_softmax(z, dim=-1)


def token_mix(vocab: int) -> torch.Tensor:
    """Per-token-id mixed salts [V] (int64): the token half of `seeding.uniform_from_keys`, computed once."""
    return mix64(torch.arange(vocab, dtype=torch.int64) * _TOKEN_SALT)


def gumbel_from_mix(row_keys: torch.Tensor, mixed_ids: torch.Tensor) -> torch.Tensor:
    """Gumbel noise float64 for row keys [B] and pre-mixed ids [V] or [B, K]; equals `seeding.gumbel_noise`."""
    ids = mixed_ids if mixed_ids.dim() == 2 else mixed_ids[None, :]
    bits = mix64(row_keys[:, None] ^ ids)
    u = (_shr(bits, 11).to(torch.float64) + 0.5) * (1.0 / (1 << 53))
    return -torch.log(-torch.log(u))


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
