"""Adapters that make foreign tasks playable as text envs.

- `DiscreteToText`: any Gymnasium env with a `Discrete` action space; actions by number or name.
- `QAEnv`: any iterable of (question, answer) pairs with a scoring function; single turn, or
  multi-turn with tools.
- `reasoning_gym_env`: a reasoning-gym dataset as a QAEnv (optional extra `steprl[reasoning]`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from steprl.envs.base import ExpertStep, Task, ToolTaskEnv
from steprl.envs.protocol import Answer, get_protocol
from steprl.envs.text import MAX_ACTION_CHARS, MAX_OBS_CHARS, fit, text_space

#: Action names of well-known Discrete envs (by env id without version), used when none are given.
KNOWN_ACTION_NAMES: dict[str, tuple[str, ...]] = {
    "FrozenLake": ("left", "down", "right", "up"),
    "CliffWalking": ("up", "right", "down", "left"),
    "Taxi": ("south", "north", "east", "west", "pickup", "dropoff"),
    "Blackjack": ("stick", "hit"),
    "CartPole": ("left", "right"),
    "MountainCar": ("left", "none", "right"),
    "Acrobot": ("minus", "zero", "plus"),
    "LunarLander": ("noop", "left", "main", "right"),
}


_HIGHLIGHT = re.compile(r"\x1b\[[0-9;]*m([^\x1b]+?)\x1b\[0m")


def render_value(obs: Any) -> str:
    """A readable, compact text form of a Gymnasium observation (ints, arrays, tuples, dicts)."""
    if isinstance(obs, np.ndarray):
        if obs.dtype.kind == "f":
            return np.array2string(obs, precision=4, separator=", ", max_line_width=10**6)
        return np.array2string(obs, separator=", ", max_line_width=10**6, threshold=10**6)
    if isinstance(obs, (np.floating, float)):
        return f"{float(obs):.4g}"
    if isinstance(obs, (np.integer, np.bool_)):
        return str(obs.item())
    if isinstance(obs, tuple):
        return "(" + ", ".join(render_value(x) for x in obs) + ")"
    if isinstance(obs, Mapping):
        return "{" + ", ".join(f"{k}: {render_value(v)}" for k, v in obs.items()) + "}"
    return str(obs)


def _base_name(env: gym.Env) -> str:
    spec = getattr(env, "spec", None) or getattr(env.unwrapped, "spec", None)
    return spec.name if spec is not None else ""


class DiscreteToText(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Play a Discrete-action env in text: `<answer>right</answer>`, `<answer>2</answer>` or bare `2`.

    Observations are the env's ansi render when its render_mode is "ansi", else a readable
    repr (`observation: 5`). Rewards, termination and seeds pass through. A turn naming no
    valid action returns an error plus the current observation, reward 0, and counts as
    `malformed`; after `max_turns` turns the episode is truncated.
    """

    def __init__(
        self,
        env: gym.Env,
        format: str = "hermes",
        action_names: Sequence[str] | None = None,
        max_turns: int = 200,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, format=format, action_names=action_names, max_turns=max_turns)
        gym.Wrapper.__init__(self, env)
        if not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(f"DiscreteToText needs a Discrete action space, got {env.action_space}")
        self.protocol = get_protocol(format)
        self.format = format
        self.max_turns = int(max_turns)
        n, start = int(env.action_space.n), int(env.action_space.start)
        names = action_names if action_names is not None else KNOWN_ACTION_NAMES.get(_base_name(env))
        if names is not None and len(names) != n:
            raise ValueError(f"need {n} action names, got {len(names)}")
        self.actions: list[tuple[int, str | None]] = [
            (start + i, names[i].lower() if names is not None else None) for i in range(n)
        ]
        self.observation_space = text_space(MAX_OBS_CHARS)
        self.action_space = text_space(MAX_ACTION_CHARS)
        inner_modes = env.metadata.get("render_modes", [])
        self.metadata = {**env.metadata, "render_modes": ["ansi"] if "ansi" in inner_modes else []}
        self._last = ""
        self._counts: dict[str, Any] = {}

    def system_prompt(self) -> str:
        """Which actions exist and how to give one."""
        listed = ", ".join(f"{a} {n}" if n else str(a) for a, n in self.actions)
        return f"Reply with one action as <answer>ACTION</answer>. Actions: {listed}."

    def _text(self, obs: Any) -> str:
        if getattr(self.env, "render_mode", None) == "ansi":
            frame = self.env.render()
            if isinstance(frame, str) and frame.strip():
                frame = _HIGHLIGHT.sub(r"[\1]", frame)  # keep where a coloured cell was
                return fit(frame.strip("\n"), MAX_OBS_CHARS)
        return fit(f"observation: {render_value(obs)}", MAX_OBS_CHARS)

    def to_action(self, text: Any) -> int | None:
        """The action a turn names (number or name, in an answer tag or bare), or None."""
        parsed = self.protocol.parse(text)
        raw = parsed.text if isinstance(parsed, Answer) else (text if isinstance(text, str) else "")
        token = re.sub(r"\s+", " ", raw[:200]).strip().lower()
        for value, name in self.actions:
            if token == str(value) or (name is not None and token == name):
                return value
        return None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the wrapped env (same seed, same start); info gains `system`, `stop`, `format`."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._counts = {"tool_calls": 0, "tool_errors": 0, "malformed": 0, "success": False, "turn": 0}
        self._last = self._text(obs)
        info = dict(info)
        info.update(
            self._counts, system=self.system_prompt(), stop=list(self.protocol.stop_strings), format=self.format
        )
        return self._last, info

    def step(self, action: Any):
        """Map the text to an action and step; an unreadable turn is an error observation."""
        c = self._counts
        c["turn"] += 1
        value = self.to_action(action)
        if value is None:
            c["malformed"] += 1
            obs = fit(self.protocol.render_result("error: no valid action") + "\n" + self._last, MAX_OBS_CHARS)
            reward, terminated, truncated, info = 0.0, False, False, {}
        else:
            raw, reward, terminated, truncated, info = self.env.step(value)
            self._last = obs = self._text(raw)
            c["success"] = bool(c["success"] or (terminated and float(reward) > 0))
        truncated = bool(truncated or (not terminated and c["turn"] >= self.max_turns))
        info = dict(info)
        info.update(c, format=self.format)
        return obs, float(reward), bool(terminated), truncated, info


def make_discrete(
    env_id: str = "FrozenLake-v1", format: str = "hermes", max_turns: int = 200, **kwargs: Any
) -> DiscreteToText:
    """Entry point of `steprl/Discrete-v0`: `gym.make(env_id, **kwargs)` (ansi render when offered), wrapped."""
    if "render_mode" not in kwargs:
        if "ansi" in _render_modes(env_id):
            kwargs["render_mode"] = "ansi"
    return DiscreteToText(gym.make(env_id, **kwargs), format=format, max_turns=max_turns)


def _render_modes(env_id: str) -> list[str]:
    entry = gym.spec(env_id).entry_point
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
    return list(getattr(entry, "metadata", {}).get("render_modes", []))


def exact_match(prediction: str, gold: Any) -> float:
    """1.0 iff the prediction equals str(gold) after stripping whitespace."""
    return 1.0 if prediction.strip() == str(gold).strip() else 0.0


class Items(tuple):
    """An immutable tuple of (question, answer) pairs whose questions are strings, checked once when made;
    QAEnv keeps one as it is instead of copying it (so env copies share one)."""

    __slots__ = ()

    def __new__(cls, pairs: Iterable[tuple[str, Any]]) -> Items:
        """Check each pair is a (str, answer) tuple; a TypeError names the first that is not."""
        out = super().__new__(cls, pairs)
        for i, it in enumerate(out):
            if type(it) is not tuple or len(it) != 2 or not isinstance(it[0], str):
                raise TypeError(f"Items: item {i} is not a (question: str, answer) tuple: {it!r:.80}")
        return out


class QAEnv(ToolTaskEnv):
    """Question/answer pairs as an env: one answer turn (a malformed turn may be retried once by
    default), or several turns when `tools` are offered (default max_turns 4).

    `reset(seed)` picks item `default_rng(seed).integers(len(items))` (or `options["index"]`).
    Rewards: `score_fn(answer_text, gold)` clipped to [0, 1] (default exact match after
    stripping whitespace); `-format_penalty` per malformed turn. `gold_text(gold)` is the
    string a demonstration answers (default `str`).
    """

    task_hint = "Answer the question."

    def __init__(
        self,
        items: Iterable[tuple[str, Any]],
        score_fn: Callable[[str, Any], float] = exact_match,
        tools: Sequence[str] = (),
        gold_text: Callable[[Any], str] = str,
        format: str = "hermes",
        max_turns: int | None = None,
        format_penalty: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        # Items are immutable and checked when made: env copies share them (a million-item file, 16 envs).
        self.items: Sequence[tuple[str, Any]] = items if isinstance(items, Items) else [(str(q), a) for q, a in items]
        if not self.items:
            raise ValueError("QAEnv needs at least one (question, answer) item")
        from steprl.envs.mcp_tools import resolve_tools

        self.score_fn, self.gold_text, self.tool_names = score_fn, gold_text, resolve_tools(tools)
        self._index: int | None = None
        super().__init__(
            format=format,
            max_turns=max_turns if max_turns is not None else (4 if tools else 2),
            format_penalty=format_penalty,
            render_mode=render_mode,
        )

    def make_task(self, rng: np.random.Generator) -> Task:
        """The item chosen by `rng` (or by `options["index"]` at reset)."""
        i = self._index if self._index is not None else int(rng.integers(len(self.items)))
        question, gold = self.items[i]
        return Task(question, self.gold_text(gold), self.tool_names, {"gold": gold, "index": i})

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """As ToolTaskEnv.reset; `options={"index": i}` picks item i directly."""
        self._index = None
        if options and "index" in options:
            self._index = int(options["index"]) % len(self.items)
        try:
            return super().reset(seed=seed, options=options)
        finally:
            self._index = None

    def score(self, answer: str, task: Task) -> float:
        """`score_fn(answer, gold)`, any failure scoring 0."""
        try:
            return float(self.score_fn(answer, task.context["gold"]))
        except Exception:  # noqa: BLE001 - a foreign scorer's bug is a wrong answer, not a crash
            return 0.0

    def expert_turns(self, task: Task) -> list[ExpertStep]:
        """Answer the gold text directly."""
        return [ExpertStep(answer=task.answer)]


def reasoning_gym_env(dataset: str, size: int = 500, seed: int = 0, **env_kwargs: Any) -> QAEnv:
    """A reasoning-gym dataset as a QAEnv scored by the dataset's own `score_answer`.

    Needs the optional extra: `pip install 'steprl[reasoning]'`.
    """
    try:
        rg = importlib.import_module("reasoning_gym")
    except ImportError as exc:
        raise ImportError(
            "reasoning_gym is not installed; install the optional extra with: pip install 'steprl[reasoning]'"
        ) from exc
    data = rg.create_dataset(dataset, size=size, seed=seed)
    items = [(entry["question"], entry) for entry in data]

    def score(prediction: str, entry: Any) -> float:
        return float(data.score_answer(answer=prediction, entry=entry))

    return QAEnv(items, score_fn=score, gold_text=lambda e: str(e["answer"]), **env_kwargs)
