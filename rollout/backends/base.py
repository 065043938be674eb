"""The one seam between episode play and token generation: the `TurnGenerator` protocol.

`rollout/episode.py` drives a micro-batch of conversations turn by turn and needs exactly
four things from whatever generates the agent's tokens: start the micro-batch from its
prompts, take observation tokens, generate one agent turn for the live rows, and report the
generated ids with their behaviour log-probs. A backend (`hf` today: transformers, the fused
forward and a KV cache) implements this protocol; the episode and worker code never see a
model. The executor axis (inline | Ray actors) is separate: any backend runs under either.

What makes a backend correct is the step-seeded sampling contract, the same for all of them:
log-probs in fp32 of softmax(logits / temperature) after top-k then top-p; the token is
argmax(logp + G) with Gumbel noise G a pure function of (sample_key, turn, position, token id)
(`rollout.sampler.sample_next`; see docs/numerics.md#seeding), or argmax(logp) when greedy;
the recorded behaviour log-prob is logp[token]. Rows never influence each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from steprl.rollout.sampler import SamplingParams

STOP, LENGTH, INACTIVE = "stop", "length", "inactive"


@dataclass
class TurnResult:
    """One row's agent turn."""

    tokens: list[int]
    """Generated ids (empty when inactive)."""
    logprobs: list[float]
    """Behaviour log-prob of each generated id under the tempered, filtered distribution (fp32)."""
    stop_reason: str
    """`stop` (text ended with a stop string), `length` (max_new_tokens) or `inactive`."""


@runtime_checkable
class TurnGenerator(Protocol):
    """Generates agent turns for one micro-batch of conversations at a time, with one policy version.

    Life cycle: built once per worker from the `WorkerSpec` (by `backends.make_generator`);
    `set_weights` before playing and at every new policy version; per micro-batch, `prefill`
    once, then alternately `generate_turn` and `append`; `close` when the worker goes away.
    """

    def set_weights(self, version: int, weights: dict[str, torch.Tensor]) -> None:
        """Load policy `version` (a full state dict); every later turn uses these weights."""
        ...

    def prefill(self, prompts: list[list[int]], sample_keys: list[int], params: SamplingParams) -> None:
        """Start a micro-batch: row b is the conversation `prompts[b]` with noise key `sample_keys[b]` (64-bit).

        Drops any previous micro-batch. The prompts may be run through the model now or at the
        first `generate_turn` (the hf backend does the latter); results are the same.
        """
        ...

    def append(self, row: int, ids: list[int]) -> None:
        """Queue observation tokens for `row`; they precede the row's next turn."""
        ...

    def generate_turn(
        self,
        active: list[bool],
        turn: list[int],
        max_new_tokens: list[int],
        stop_strings: list[Sequence[str]],
        decode: Callable[[list[int]], str],
    ) -> list[TurnResult]:
        """One agent turn for every active row; one `TurnResult` per row (inactive rows: empty).

        `turn[b]` is the noise coordinate of row b's turn. A row stops when `decode(its turn
        tokens)` ends with one of its stop strings (`stop`), or after max_new_tokens (`length`).
        """
        ...

    def close(self) -> None:
        """Release what the backend holds (device memory, engine processes). Idempotent."""
        ...


BackendFactory = Callable[[Any], TurnGenerator]
"""What a registry entry or a `module:attr` path names: called with the `WorkerSpec`, returns a generator."""
