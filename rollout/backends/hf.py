"""The `hf` generation backend: transformers model, fused inference forward, one shared KV cache.

`HFGenerator` builds the worker's model from the spec's architecture (weights arrive with
`set_weights`) and decodes with `agents.fast_forward.FastCausalLM` when the architecture
allows (same numbers, fewer kernels). Each micro-batch is one `GenerationBatch`.

`GenerationBatch` holds B conversations in one padded KV cache. Every forward appends the
same number of columns to all rows; a row with fewer new tokens gets *holes* (pad tokens
masked out of every later attention), placed before its real tokens, so each row's last
real token is always the last column and `logits_to_keep=1` suffices. The 4-D additive
attention mask is built here (holes and causality), position ids count real tokens only,
so a row computes what it would compute alone, whatever the other rows hold. Tokens are
drawn by `rollout.sampler.sample_next` (step-seeded Gumbel-max, see docs/numerics.md#seeding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from steprl.agents.autocast_lm import AutocastLM
from steprl.agents.device import cuda_determinism
from steprl.agents.fast_forward import FastCausalLM
from steprl.agents.fast_forward import supports as fast_forward_supports
from steprl.agents.kv_cache import GrowingCache
from steprl.agents.lora import MergedLora
from steprl.rollout.backends.base import INACTIVE, LENGTH, STOP, TurnResult
from steprl.rollout.sampler import SamplingParams, sample_next, token_mix
from steprl.rollout.seeding import to_signed64


def stop_string_ends_in_last_token(tokens: list[int], stops: Sequence[str], decode: Callable[[list[int]], str]) -> bool:
    """True when a stop string ends inside the text of the last token of `tokens` (or exactly at its end).

    Byte-level BPE keeps punctuation with following newlines (`</answer>\n` is `</`, `answer`, `>\n`),
    so `endswith` on the decoded turn misses such a stop; this looks for an occurrence that ends after
    the text of the earlier tokens. Called after every token, the first such occurrence ends the turn.
    """
    text = decode(tokens)
    before = len(decode(tokens[:-1])) if len(tokens) > 1 else 0
    return any(text.find(s, max(0, before - len(s) + 1)) >= 0 for s in stops)


class HFGenerator:
    """`TurnGenerator` on a transformers causal LM (fp32 weights, on `spec.device`), decoded with the fused forward
    when supported; `spec.dtype` bfloat16 runs its matmuls in bf16 (agents/fast_forward.py, agents/autocast_lm.py)."""

    def __init__(self, spec: Any) -> None:
        """Build the model from `spec.model_config` (random init, replaced by set_weights; global RNG untouched)."""
        from transformers import AutoModelForCausalLM

        if spec.device == "cuda":  # before this process's first CUDA call (agents/device.py)
            cuda_determinism()
        with torch.random.fork_rng():  # random init is overwritten by set_weights; keep global RNG untouched
            self.model = AutoModelForCausalLM.from_config(spec.model_config, dtype=torch.float32)
        self.model.to(spec.device).eval()
        # a LoRA policy: adapters merged into the base for decoding (agents/lora.py says why merged)
        lora = getattr(spec, "lora", None)
        self.lora = MergedLora(self.model, lora) if lora is not None and lora.enabled else None
        # the sampler's forward: fused inference kernels when the architecture allows (same numbers, fewer kernels)
        fused = spec.fast_forward and fast_forward_supports(self.model)
        low = torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32
        if fused:
            self.decoder = FastCausalLM(self.model, low)
        else:
            self.decoder = AutocastLM(self.model, low) if low != torch.float32 else self.model
        self.pad_id = spec.tokenizer.pad_token_id
        self.batch: GenerationBatch | None = None

    def set_weights(self, version: int, weights: dict[str, torch.Tensor]) -> None:
        """Load the state dict into the model (and re-fuse the fused forward's weights); a LoRA worker takes its
        base, an adapter, or both, and decodes with the adapter merged."""
        if self.lora is not None:
            self.lora.load(weights)
        else:
            self.model.load_state_dict(weights)
        if isinstance(self.decoder, FastCausalLM):
            self.decoder.refresh()

    def prefill(self, prompts: list[list[int]], sample_keys: list[int], params: SamplingParams) -> None:
        """Start a micro-batch: a fresh GenerationBatch (prompts enter the cache at the first turn)."""
        self.batch = GenerationBatch(self.decoder, prompts, sample_keys, params, self.pad_id)

    def append(self, row: int, ids: list[int]) -> None:
        """Queue observation tokens for `row`."""
        self._current().append(row, ids)

    def generate_turn(
        self,
        active: list[bool],
        turn: list[int],
        max_new_tokens: list[int],
        stop_strings: list[Sequence[str]],
        decode: Callable[[list[int]], str],
    ) -> list[TurnResult]:
        """One agent turn for the active rows of the current micro-batch."""
        return self._current().generate_turn(active, turn, max_new_tokens, stop_strings, decode)

    def close(self) -> None:
        """Drop the current micro-batch (its KV cache); the model stays for the next one."""
        self.batch = None

    def _current(self) -> GenerationBatch:
        """The micro-batch started by `prefill`."""
        if self.batch is None:
            raise RuntimeError("HFGenerator: call prefill before append or generate_turn")
        return self.batch


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
        self._device = model.get_output_embeddings().weight.device  # inputs go there; logits come back to the CPU
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

        A row stops at the first of: a token in `params.stop_token_ids` (end-of-turn/EOS, kept as the
        turn's last token; "stop"), a stop string ending inside the last token of the decoded turn
        ("stop"; the turn ends with that token), or max_new_tokens ("length"). `turn[b]` is the noise
        coordinate of row b's turn.
        """
        B = self.batch
        args = (("active", active), ("turn", turn), ("max_new_tokens", max_new_tokens), ("stop_strings", stop_strings))
        for name, val in args:
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
        stop_ids = frozenset(self.params.stop_token_ids)
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
                if y in stop_ids:  # end-of-turn / EOS: kept as the turn's last (trained) token
                    res.stop_reason = STOP
                    running[b] = False
                elif stops[b] and self._may_end(y, last_chars[b], piece_cache, decode):
                    if stop_string_ends_in_last_token(res.tokens, stops[b], decode):
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

    def _sample(
        self, logits: torch.Tensor, keys: torch.Tensor, turns: torch.Tensor, positions: torch.Tensor
    ) -> tuple[list[int], list[float]]:
        """Draw one token per row; return ids and their log-probs as Python lists."""
        y, lp = sample_next(logits, keys, turns, positions, self.params, self._mix)
        return y.tolist(), lp.tolist()

    @staticmethod
    def _may_end(y: int, last_chars: frozenset, cache: dict[int, str], decode: Callable[[list[int]], str]) -> bool:
        """Cheap pre-check before decoding the whole turn: can a stop string end at token y?

        True unless y decodes alone to non-empty ASCII none of whose characters ends a stop string
        (ASCII text of the last token is then the end of the decoded turn, for any tokenizer).
        """
        piece = cache.get(y)
        if piece is None:
            piece = cache[y] = decode([y])
        if not piece or not piece.isascii():
            return True
        return any(c in last_chars for c in piece)  # a stop string may end inside the token

    # ----------------------------------------------------------------- model feeding

    def _feed_pending(self, need: list[int]) -> None:
        """Run the pending tokens of the rows in `need` (the rows about to generate) through the model in one chunk.

        Other rows keep theirs: a row that is not generating (finished, or never started because its prompt is
        over the episode budget) is never run through the model, so it costs no compute and no memory.
        """
        wanted = set(need)
        chunks = [self._pending[b] if b in wanted else [] for b in range(self.batch)]
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
        for b in wanted:
            self._pending[b] = []

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
            layers = self.model.config.get_text_config().num_hidden_layers
            self._cache = GrowingCache(layers, initial_capacity=width + 128)
        dev = self._device
        out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         cache=self._cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :].float().cpu()
        if self._next_logits is None:
            self._next_logits = logits
        else:
            self._next_logits = torch.where(got[:, None], logits, self._next_logits)
