"""ToolTaskEnv: the episode loop shared by every text task (parse a turn, run a tool or score an answer).

A subclass only says what a task is (`make_task(rng)`), how an answer is scored
(`score`, default exact match after stripping whitespace) and how an expert solves it
(`expert_turns`). Rewards: `score` (1.0 correct, 0.0 otherwise) on the answer turn;
`-format_penalty` on each malformed turn; 0 on tool calls. `terminated` on an answer,
`truncated` when `max_turns` turns pass without one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from steprl.envs.protocol import Answer, Malformed, ToolCall, get_protocol
from steprl.envs.text import MAX_ACTION_CHARS, MAX_OBS_CHARS, fit, text_space
from steprl.envs.tools import Tool, get_tool, run_tool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One episode's task: the question, the gold answer, the tools it offers and their read-only context."""

    question: str
    answer: str
    tools: tuple[str, ...] = ()
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExpertStep:
    """One expert turn before rendering: a tool call or (when `call` is None) the final answer."""

    call: ToolCall | None = None
    answer: str = ""


def imperfect(seed: int, imperfect_rate: float) -> bool:
    """Whether the demonstration for `seed` is an imperfect one (deterministic in the seed)."""
    return bool(imperfect_rate > 0 and np.random.default_rng([int(seed), 7]).random() < imperfect_rate)


class ToolTaskEnv(gym.Env):
    """Base text env: one agent turn per step, parsed with the protocol named by `format`."""

    metadata = {"render_modes": ["ansi"]}
    task_hint: str = ""
    default_max_turns: int = 5

    def __init__(
        self,
        format: str = "hermes",
        max_turns: int | None = None,
        format_penalty: float = 0.0,
        render_mode: str | None = None,
        instructions: bool = True,
    ) -> None:
        self.protocol = get_protocol(format)
        self.instructions = bool(instructions)
        self.format = format
        self.max_turns = int(max_turns if max_turns is not None else self.default_max_turns)
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.format_penalty = float(format_penalty)
        if render_mode not in (None, "ansi"):
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = text_space(MAX_OBS_CHARS)
        self.action_space = text_space(MAX_ACTION_CHARS)
        self._task: Task | None = None
        self._done = True
        self._transcript: list[str] = []
        self._counts = self._zero_counts()

    # -- what a subclass provides ----------------------------------------------------------

    def make_task(self, rng: np.random.Generator) -> Task:
        """Draw a task from `rng` (the only source of randomness)."""
        raise NotImplementedError

    def score(self, answer: str, task: Task) -> float:
        """Reward of a final answer: 1.0 iff it equals the gold answer after stripping whitespace."""
        return 1.0 if answer.strip() == task.answer.strip() else 0.0

    def expert_turns(self, task: Task) -> list[ExpertStep]:
        """The expert's turns for `task` (tool calls computed by replaying the tools)."""
        raise NotImplementedError

    def guess_answer(self, task: Task, rng: np.random.Generator) -> str:
        """A plausible, usually wrong answer given without tools (imperfect demonstrations)."""
        return task.answer + "0"

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _zero_counts() -> dict[str, Any]:
        return {"tool_calls": 0, "tool_errors": 0, "malformed": 0, "success": False, "turn": 0}

    def task_for_seed(self, seed: int) -> Task:
        """The task `reset(seed=seed)` poses (pure function of the seed and the constructor kwargs)."""
        return self.make_task(np.random.default_rng(int(seed)))

    def tools(self, task: Task | None = None) -> list[Tool]:
        """The Tool objects offered by `task` (or by the current task)."""
        task = task or self._task
        names = task.tools if task is not None else ()
        return [t for t in (get_tool(n) for n in names) if t is not None]

    def system_prompt(self, task: Task) -> str:
        """Instructions and tool descriptions for this format ('' with instructions=False: a model
        trained from scratch learns the protocol from demonstrations and pays for every prompt token)."""
        if not self.instructions:
            return ""
        return self.protocol.system_prompt(self.task_hint, self.tools(task))

    def _info(self) -> dict[str, Any]:
        info = dict(self._counts)
        info["format"] = self.format
        return info

    # -- gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Pose the task for `seed`: obs is the question; info has `system`, `stop`, `format`, and for chat
        templates that render tools themselves `instructions` (system text without tools) and `tools` (specs)."""
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**63 - 1))
        self._task = self.task_for_seed(seed)
        self._done = False
        self._counts = self._zero_counts()
        obs = fit(self._task.question, MAX_OBS_CHARS)
        self._transcript = [obs]
        info = self._info()
        info["system"] = self.system_prompt(self._task)
        info["stop"] = list(self.protocol.stop_strings)
        # for chat templates that render tools themselves: the instructions alone, and the tool specs
        info["instructions"] = self.protocol.system_prompt(self.task_hint, []) if self.instructions else ""
        info["tools"] = [t.spec() for t in self.tools(self._task)]
        return obs, info

    def step(self, action: Any):
        """Play one agent turn; never raises on any action text."""
        if self._task is None or self._done:
            return "", 0.0, self._task is not None, False, self._info()
        c = self._counts
        c["turn"] += 1
        parsed = self.protocol.parse(action)
        reward, terminated = 0.0, False
        if isinstance(parsed, Answer):
            reward = float(np.clip(self.score(parsed.text, self._task), 0.0, 1.0))
            c["success"] = reward >= 1.0
            terminated, obs = True, ""
        elif isinstance(parsed, ToolCall):
            c["tool_calls"] += 1
            obs = self._run_call(parsed)
        else:
            assert isinstance(parsed, Malformed)
            c["malformed"] += 1
            reward = -self.format_penalty
            obs = self.protocol.render_result(f"error: {parsed.reason}")
        truncated = not terminated and c["turn"] >= self.max_turns
        self._done = terminated or truncated
        obs = fit(obs, MAX_OBS_CHARS)
        if self.render_mode == "ansi":
            self._transcript += [fit(str(action), MAX_ACTION_CHARS), obs]
        return obs, reward, terminated, truncated, self._info()

    def _run_call(self, call: ToolCall) -> str:
        task = self._task
        assert task is not None
        tool = get_tool(call.name) if call.name in task.tools else None
        if tool is None:
            self._counts["tool_errors"] += 1
            known = ", ".join(task.tools) or "none"
            return self.protocol.render_result(f"error: unknown tool {call.name}; use {known}")
        result = run_tool(tool, call.arguments, task.context)
        self._counts["tool_errors"] += int(result.error)
        return self.protocol.render_result(result.text)

    def render(self) -> str | None:
        """The episode so far as text (render_mode "ansi")."""
        if self.render_mode != "ansi":
            return None
        return "\n".join(self._transcript)

    # -- demonstrations --------------------------------------------------------------------

    def demonstration(self, seed: int, imperfect_rate: float = 0.0) -> list[str]:
        """Agent turns (each ending with a stop string) of an expert episode for `seed`.

        With probability `imperfect_rate` (decided by the seed) the demo answers at once,
        without tools, with a plausible but usually wrong answer.
        """
        task = self.task_for_seed(seed)
        if imperfect(seed, imperfect_rate):
            rng = np.random.default_rng([int(seed), 11])
            return [self.protocol.render_answer(self.guess_answer(task, rng))]
        turns = []
        for st in self.expert_turns(task):
            if st.call is not None:
                turns.append(self.protocol.render_call(st.call))
            else:
                turns.append(self.protocol.render_answer(st.answer))
        return turns

    def call_tool(self, task: Task, call: ToolCall) -> str:
        """Run `call` against `task` and return the raw result text (what an expert sees)."""
        tool = get_tool(call.name)
        assert tool is not None, call.name
        return run_tool(tool, call.arguments, task.context).text
