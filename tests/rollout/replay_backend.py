"""TEST-ONLY generation backend: plays recorded trajectories back through the `TurnGenerator` protocol.

Built from a `WorkerSpec` whose `backend_options["trajectories"]` holds recorded trajectories.
Each row of a micro-batch is matched to its record by sample key; turn k returns the record's
k-th run of action tokens (mask 1) with their recorded log-probs. Prompts and appended
observations are checked against the record, so a replay through the normal episode and
worker code that returns identical trajectories proves the seam carries everything.
Name it in config as `rollout.backend=replay_backend:ReplayGenerator` (tests/rollout on sys.path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from steprl.rollout.backends.base import INACTIVE, LENGTH, STOP, TurnResult


def action_turns(t: Any) -> list[tuple[list[int], list[float]]]:
    """The record's agent turns: maximal runs of action-mask 1, as (tokens, log-probs)."""
    out: list[tuple[list[int], list[float]]] = []
    prev = 0
    for tok, m, lp in zip(t.tokens, t.action_mask, t.behavior_logprobs):
        if m and not prev:
            out.append(([], []))
        if m:
            out[-1][0].append(int(tok))
            out[-1][1].append(float(lp))
        prev = m
    return out


class ReplayGenerator:
    """Returns recorded turns instead of generating them (no model, no weights)."""

    def __init__(self, spec: Any) -> None:
        """Index the recorded trajectories of `spec.backend_options['trajectories']` by sample key."""
        self.records = {t.spec.sample_key: t for t in spec.backend_options["trajectories"]}
        self.version: int | None = None
        self.rows: list[Any] = []
        self.seen: list[list[int]] = []

    def set_weights(self, version: int, weights: dict[str, Any]) -> None:
        """Remember the version (the record's tokens do not depend on weights here)."""
        self.version = version

    def prefill(self, prompts: list[list[int]], sample_keys: list[int], params: Any) -> None:
        """Find each row's record and check that the prompt is the recorded one."""
        self.rows = [self.records[int(k)] for k in sample_keys]
        self.seen = [list(map(int, p)) for p in prompts]
        for t, p in zip(self.rows, self.seen):
            if list(t.tokens[: len(p)]) != p:
                raise AssertionError(f"episode {t.spec.index}: prompt differs from the record")
        self.turns = [action_turns(t) for t in self.rows]

    def append(self, row: int, ids: list[int]) -> None:
        """Check the observation against the record and extend the row."""
        seen, rec = self.seen[row], self.rows[row].tokens
        if list(rec[len(seen): len(seen) + len(ids)]) != list(ids):
            raise AssertionError(f"episode {self.rows[row].spec.index}: observation differs from the record")
        seen.extend(int(i) for i in ids)

    def generate_turn(
        self,
        active: list[bool],
        turn: list[int],
        max_new_tokens: list[int],
        stop_strings: list[Sequence[str]],
        decode: Callable[[list[int]], str],
    ) -> list[TurnResult]:
        """The recorded turn `turn[b]` of every active row."""
        out = []
        for b, on in enumerate(active):
            if not on:
                out.append(TurnResult([], [], INACTIVE))
                continue
            tokens, logprobs = self.turns[b][turn[b]]
            self.seen[b].extend(tokens)
            out.append(TurnResult(list(tokens), list(logprobs), LENGTH if len(tokens) >= max_new_tokens[b] else STOP))
        return out

    def close(self) -> None:
        """Nothing to release."""
