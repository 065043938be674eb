"""steprl/Calculator-v0: arithmetic with operands too long to multiply in your head; the `calc` tool is exact."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from steprl.envs.arithmetic import evaluate, format_number
from steprl.envs.base import ExpertStep, Task, ToolTaskEnv
from steprl.envs.protocol import ToolCall

_VARS = "abcdefghijklmnopqrstuvwxyz"


class CalculatorEnv(ToolTaskEnv):
    """Exact integer arithmetic (digits, ops, steps); the answer must be exact; tool: calc.

    Kwargs: `digits` (digits of every operand, default 4), `ops` (binary operations per
    expression, default 1), `steps` (expressions chained through named intermediate
    results, each the first operand of the next, default 1; the expert makes one call per
    step), `operators` (drawn from, default "+-*"; "/" gives fractions `a/b`), `format`,
    `max_turns` (default steps + 3), `format_penalty`.

    Rewards: 1.0 when the answer equals the exact value after stripping whitespace (an int,
    or a reduced fraction `a/b`), else 0.0; `-format_penalty` for each malformed turn.
    """

    task_hint = "Compute exactly."

    def __init__(
        self,
        digits: int = 4,
        ops: int = 1,
        steps: int = 1,
        operators: str = "+-*",
        format: str = "hermes",
        max_turns: int | None = None,
        format_penalty: float = 0.0,
        render_mode: str | None = None,
        instructions: bool = True,
    ) -> None:
        if not 1 <= int(digits) <= 12:
            raise ValueError(f"digits must be in 1..12, got {digits}")
        if not 1 <= int(ops) <= 6 or not 1 <= int(steps) <= 6:
            raise ValueError(f"ops and steps must be in 1..6, got ops={ops} steps={steps}")
        if int(digits) * (int(ops) * int(steps) + 1) > 300:
            raise ValueError("digits * (ops * steps + 1) must be <= 300 (results stay under calc's size limit)")
        bad = set(operators) - set("+-*/")
        if not operators or bad:
            raise ValueError(f"operators must be a non-empty subset of '+-*/', got {operators!r}")
        self.digits, self.ops, self.steps = int(digits), int(ops), int(steps)
        self.operators = "".join(dict.fromkeys(operators))
        super().__init__(
            format=format,
            max_turns=max_turns if max_turns is not None else self.steps + 3,
            format_penalty=format_penalty,
            render_mode=render_mode,
            instructions=instructions,
        )

    def _operand(self, rng: np.random.Generator) -> str:
        lo = 10 ** (self.digits - 1) if self.digits > 1 else 0
        return str(int(rng.integers(lo, 10**self.digits)))

    def _tail(self, rng: np.random.Generator) -> str:
        """`ops` operators each followed by a fresh operand, e.g. `*47+318`."""
        parts = []
        for _ in range(self.ops):
            op = self.operators[int(rng.integers(len(self.operators)))]
            operand = self._operand(rng)
            if op == "/" and operand.strip("0") == "":
                operand = "1"
            parts.append(op + operand)
        return "".join(parts)

    def make_task(self, rng: np.random.Generator) -> Task:
        """Step 1 is `operand + tail`; step k>1 is `<previous variable> + tail`."""
        exprs = [self._operand(rng) + self._tail(rng)]
        for _ in range(self.steps - 1):
            exprs.append(self._tail(rng))
        value: Fraction | None = None
        calls = []
        for i, e in enumerate(exprs):
            text = e if i == 0 else format_number(value) + e  # type: ignore[arg-type]
            if i > 0 and value is not None and (value < 0 or value.denominator != 1):
                text = f"({format_number(value)}){e}"
            value = evaluate(text)
            calls.append(text)
        assert value is not None
        if self.steps == 1:
            question = f"What is {exprs[0]}?"
        else:
            lines = [f"{_VARS[0]}={exprs[0]}"]
            for i, e in enumerate(exprs[1:-1], start=1):
                lines.append(f"{_VARS[i]}={_VARS[i - 1]}{e}")
            lines.append(f"What is {_VARS[len(exprs) - 2]}{exprs[-1]}?")
            question = "\n".join(lines)
        return Task(question, format_number(value), ("calc",), {"calls": tuple(calls)})

    def expert_turns(self, task: Task) -> list[ExpertStep]:
        """One calc call per step (intermediate results substituted), then the answer."""
        return [ExpertStep(ToolCall("calc", {"expression": c})) for c in task.context["calls"]] + [
            ExpertStep(answer=task.answer)
        ]

    def guess_answer(self, task: Task, rng: np.random.Generator) -> str:
        """Right leading digits, random trailing half: close in magnitude, almost never exact."""
        ans = task.answer
        sign = "-" if ans.startswith("-") else ""
        body = ans.lstrip("-").split("/")[0]
        keep = max(1, len(body) // 2) if len(body) > 1 else 0
        tail = "".join(str(int(d)) for d in rng.integers(0, 10, len(body) - keep))
        guess = sign + body[:keep] + tail
        if guess == ans.split("/")[0]:
            guess = sign + str(int(body) + 1)
        return guess
