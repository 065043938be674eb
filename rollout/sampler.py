"""Batched, step-seeded token sampling with one shared KV cache per fixed micro-batch.

`GenerationBatch` holds B conversations in one padded KV cache. Every forward appends the
same number of columns to all rows; a row with fewer new tokens gets *holes* (pad tokens
masked out of every later attention), placed before its real tokens, so each row's last
real token is always the last column and `logits_to_keep=1` suffices. The 4-D additive
attention mask is built here (holes and causality), position ids count real tokens only,
so a row computes what it would compute alone, whatever the other rows hold.

Sampling is Gumbel-max (NUMERICS A3): logits in fp32 -> `filtered_logprobs` (temperature,
then top-k, then top-p) -> y = argmax(logp + G), G a pure function of
(sample_key, turn, position, token id) from `rollout.seeding`. The recorded behaviour
log-prob is logp[y] in fp32. Nothing here draws from a global RNG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from steprl.agents.kv_cache import GrowingCache
from steprl.rollout.seeding import _TOKEN_SALT, _shr, mix64, position_keys, to_signed64

log = logging.getLogger(__name__)

STOP, LENGTH, INACTIVE = "stop", "length", "inactive"


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


@dataclass
class TurnResult:
    """One row's agent turn."""

    tokens: list[int]
    """Generated ids (empty when inactive)."""
    logprobs: list[float]
    """Behaviour log-prob of each generated id under the tempered, filtered distribution (fp32)."""
    stop_reason: str
    """`stop` (text ended with a stop string), `length` (max_new_tokens) or `inactive`."""


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


class GenerationBatch:
    """A fixed micro-batch of B conversations sharing one KV cache.

    Rows never interact: holes are masked, positions count real tokens, noise is per row.
    Use: `append(row, ids)` to queue observation tokens, `generate_turn(...)` to play one
    agent turn for the active rows, `row_tokens(row)` for a row's real tokens.
    """

    def __init__(self, model, prompts: list[list[int]], sample_keys: list[int], params: SamplingParams, pad_id: int):
        """Queue the prompts (fed at the first generate_turn); `sample_keys` are 64-bit ints, one per row."""
        if len(prompts) != len(sample_keys):
            raise ValueError(f"GenerationBatch: {len(prompts)} prompts but {len(sample_keys)} sample keys")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("GenerationBatch: every prompt needs at least one token")
        self.model = model
        self.params = params
        self.pad_id = int(pad_id)
        self.batch = len(prompts)
        self._tokens = [list(map(int, p)) for p in prompts]
        self._pending = [list(map(int, p)) for p in prompts]  # real tokens not yet in the cache
        self._keys = torch.tensor([to_signed64(int(k)) for k in sample_keys], dtype=torch.int64)
        self._cached = torch.zeros(self.batch, dtype=torch.int64)  # real tokens in the cache, per row
        self._valid = torch.zeros(self.batch, 0, dtype=torch.bool)  # [B, columns]: real (True) or hole
        self._cache = None
        self._next_logits: torch.Tensor | None = None  # [B, V] fp32, logits after each row's last cached token
        self._vocab = int(model.get_output_embeddings().weight.shape[0])
        self._mix = token_mix(self._vocab)
        self._neg = torch.finfo(torch.float32).min

    # ----------------------------------------------------------------- public API

    def append(self, row: int, ids: list[int]) -> None:
        """Queue tokens (an observation) for `row`; they enter the cache at the next generate_turn."""
        ids = [int(i) for i in ids]
        self._tokens[row].extend(ids)
        self._pending[row].extend(ids)

    def row_tokens(self, row: int) -> list[int]:
        """The row's real tokens so far: prompt, turns and appended observations (never padding)."""
        return list(self._tokens[row])

    @torch.no_grad()
    def generate_turn(
        self,
        active: list[bool],
        turn: list[int],
        max_new_tokens: list[int],
        stop_strings: list[Sequence[str]],
        decode: Callable[[list[int]], str],
    ) -> list[TurnResult]:
        """Generate one agent turn for every active row at once; inactive rows produce nothing.

        A row stops when `decode(its turn tokens)` ends with one of its stop strings ("stop"),
        or after max_new_tokens ("length"). `turn[b]` is the noise coordinate of row b's turn.
        """
        B = self.batch
        for name, val in (("active", active), ("turn", turn), ("max_new_tokens", max_new_tokens), ("stop_strings", stop_strings)):
            if len(val) != B:
                raise ValueError(f"generate_turn: {name} has {len(val)} entries for {B} rows")
        results = [TurnResult([], [], INACTIVE if not active[b] else LENGTH) for b in range(B)]
        running = [bool(active[b]) and max_new_tokens[b] > 0 for b in range(B)]
        if not any(running):
            return results
        self._feed_pending([b for b in range(B) if running[b]])
        turn_t = torch.tensor([int(t) for t in turn], dtype=torch.int64)
        stops = [tuple(s for s in stop_strings[b] if s) for b in range(B)]
        last_chars = [frozenset(s[-1] for s in st) for st in stops]
        piece_cache: dict[int, str] = {}
        while True:
            rows = [b for b in range(B) if running[b]]
            idx = torch.tensor(rows, dtype=torch.int64)
            positions = torch.tensor([len(self._tokens[b]) for b in rows], dtype=torch.int64)
            logits = self._next_logits.index_select(0, idx)
            ys, lps = self._sample(logits, self._keys.index_select(0, idx), turn_t.index_select(0, idx), positions)
            fed = []
            for b, y, lp in zip(rows, ys, lps):
                res = results[b]
                res.tokens.append(y)
                res.logprobs.append(lp)
                self._tokens[b].append(y)
                if stops[b] and self._may_end(y, last_chars[b], piece_cache, decode):
                    text = decode(res.tokens)
                    if any(text.endswith(s) for s in stops[b]):
                        res.stop_reason = STOP
                        running[b] = False
                if running[b] and len(res.tokens) >= max_new_tokens[b]:
                    res.stop_reason = LENGTH
                    running[b] = False
                if running[b]:
                    fed.append((b, y))
                else:
                    self._pending[b].append(y)
            if not fed:
                return results
            self._feed_step(fed)

    # ----------------------------------------------------------------- sampling

    def _sample(self, logits: torch.Tensor, keys: torch.Tensor, turns: torch.Tensor, positions: torch.Tensor) -> tuple[list[int], list[float]]:
        """Draw one token per row; return ids and their log-probs as Python lists."""
        y, lp = sample_next(logits, keys, turns, positions, self.params, self._mix)
        return y.tolist(), lp.tolist()

    @staticmethod
    def _may_end(y: int, last_chars: frozenset, cache: dict[int, str], decode: Callable[[list[int]], str]) -> bool:
        """Cheap pre-check before decoding the whole turn: can a stop string end at token y?

        True unless y decodes alone to non-empty ASCII whose last character ends no stop string
        (ASCII text of the last token is then the end of the decoded turn, for any tokenizer).
        """
        piece = cache.get(y)
        if piece is None:
            piece = cache[y] = decode([y])
        if not piece or not piece.isascii():
            return True
        return piece[-1] in last_chars

    # ----------------------------------------------------------------- model feeding

    def _feed_pending(self, need: list[int]) -> None:
        """Run every row's pending tokens through the model in one chunk (rows in `need` must get logits)."""
        chunks = [self._pending[b] for b in range(self.batch)]
        if not any(chunks):
            return
        width = max(len(c) for c in chunks)
        ids = torch.full((self.batch, width), self.pad_id, dtype=torch.int64)
        pos = torch.zeros((self.batch, width), dtype=torch.int64)
        new_valid = torch.zeros((self.batch, width), dtype=torch.bool)
        for b, c in enumerate(chunks):
            if c:
                n = len(c)
                ids[b, width - n:] = torch.tensor(c, dtype=torch.int64)
                pos[b, width - n:] = torch.arange(int(self._cached[b]), int(self._cached[b]) + n)
                new_valid[b, width - n:] = True
                self._cached[b] += n
        got = new_valid[:, -1]
        self._forward(ids, pos, new_valid, got)
        self._pending = [[] for _ in range(self.batch)]

    def _feed_step(self, fed: list[tuple[int, int]]) -> None:
        """One decode step: feed each running row's new token; other rows get a hole."""
        rows = torch.tensor([b for b, _ in fed], dtype=torch.int64)
        ids = torch.full((self.batch, 1), self.pad_id, dtype=torch.int64)
        ids[rows, 0] = torch.tensor([y for _, y in fed], dtype=torch.int64)
        got = torch.zeros(self.batch, dtype=torch.bool)
        got[rows] = True
        pos = self._cached.clone()[:, None]
        self._cached[rows] += 1
        self._forward(ids, pos, got[:, None], got)

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, new_valid: torch.Tensor, got: torch.Tensor) -> None:
        """Append `ids` [B, L] to the cache and refresh next-token logits of rows in `got`."""
        past = self._valid.shape[1]
        width = ids.shape[1]
        self._valid = torch.cat([self._valid, new_valid], dim=1)
        allowed = self._valid[:, None, :].expand(self.batch, width, past + width)
        if width > 1:
            causal = torch.arange(past + width)[None, :] <= (past + torch.arange(width))[:, None]
            allowed = allowed & causal[None]
        mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill_(~allowed, self._neg)[:, None]
        if self._cache is None:
            self._cache = GrowingCache(self.model.config.get_text_config().num_hidden_layers, initial_capacity=width + 128)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=self._cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        if self._next_logits is None:
            self._next_logits = logits
        else:
            self._next_logits = torch.where(got[:, None], logits, self._next_logits)
