"""steprl/Guess-v0: find a hidden integer with higher/lower feedback from the `guess` tool (interactive)."""

from __future__ import annotations

import math

import numpy as np

from steprl.envs.base import ExpertStep, Task, ToolTaskEnv
from steprl.envs.protocol import ToolCall


class GuessEnv(ToolTaskEnv):
    """Guess a hidden number in 1..high using higher/lower replies, then answer it; tool: guess.

    Success depends on using earlier observations: the expert demonstration is a binary
    search (at most ceil(log2(high + 1)) guesses) that stops at "correct" and answers.
    Kwargs: `high` (default 100), `format`, `max_turns` (default ceil(log2(high + 1)) + 2),
    `format_penalty`.

    Rewards: 1.0 when the answer is the hidden number, else 0.0; `-format_penalty` for each
    malformed turn.
    """

    def __init__(
        self,
        high: int = 100,
        format: str = "hermes",
        max_turns: int | None = None,
        format_penalty: float = 0.0,
        render_mode: str | None = None,
        instructions: bool = True,
    ) -> None:
        if not 2 <= int(high) <= 10**9:
            raise ValueError(f"high must be in 2..1e9, got {high}")
        self.high = int(high)
        self.task_hint = f"Find the hidden number in 1..{self.high}; guess replies higher, lower or correct."
        default_turns = math.ceil(math.log2(self.high + 1)) + 2
        super().__init__(
            format=format,
            max_turns=max_turns if max_turns is not None else default_turns,
            format_penalty=format_penalty,
            render_mode=render_mode,
            instructions=instructions,
        )

    def make_task(self, rng: np.random.Generator) -> Task:
        """A uniformly drawn secret."""
        secret = int(rng.integers(1, self.high + 1))
        return Task(f"Find the number (1..{self.high}).", str(secret), ("guess",), {"secret": secret})

    def expert_turns(self, task: Task) -> list[ExpertStep]:
        """Binary search driven by the tool's replies, then the answer."""
        lo, hi, steps = 1, self.high, []
        while lo <= hi:
            mid = (lo + hi) // 2
            call = ToolCall("guess", {"number": mid})
            steps.append(ExpertStep(call))
            reply = self.call_tool(task, call)
            if reply == "correct":
                return steps + [ExpertStep(answer=str(mid))]
            lo, hi = (mid + 1, hi) if reply == "higher" else (lo, mid - 1)
        raise AssertionError("binary search failed")  # pragma: no cover - secret is in range

    def guess_answer(self, task: Task, rng: np.random.Generator) -> str:
        """A blind guess in range, never the secret itself."""
        g = int(rng.integers(1, self.high))
        return str(g if g < int(task.answer) else g + 1)
