"""Play a micro-batch of episodes to the end, one agent turn for all live episodes at a time.

Each env is reset with its spec's `env_seed`; the agent's turns are generated together by the
worker's `TurnGenerator` (rollout/backends/base.py: one fixed micro-batch at a time); each
turn's text goes to its env, and the observation is appended to that row. An episode ends when its env terminates
or truncates, when it runs out of token budget, or when its env raises (then it is truncated
with the error recorded: one broken env never kills the micro-batch). An episode whose prompt alone
exceeds the budget is truncated before any compute: its prompt never reaches the generator, and it is
recorded without tokens (`OVER_BUDGET_ERROR`, counted as `rollout/over_budget`), so neither the
sampler nor the learner ever holds it at full length. A `ToolTimeout` is the
exception: it is a fault of the machine, not of the episode, so it leaves the micro-batch (the
pool retries it) instead of becoming an observation or an errored episode.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from steprl.envs.tools import ToolTimeout
from steprl.rollout.backends.base import TurnGenerator
from steprl.rollout.config import SamplingConfig
from steprl.rollout.sampler import SamplingParams
from steprl.rollout.trajectory import EpisodeSpec, Trajectory

log = logging.getLogger(__name__)

OVER_BUDGET_ERROR = "prompt ({tokens} tokens) exceeds max_episode_tokens ({budget})"
"""The error of an episode whose prompt alone is over the budget (never played; `is_over_budget`)."""

_OVER_BUDGET = re.compile(re.escape(OVER_BUDGET_ERROR).replace(r"\{tokens\}", r"\d+").replace(r"\{budget\}", r"\d+"))


def is_over_budget(t: Trajectory) -> bool:
    """True for an episode given up on because its prompt exceeded `max_episode_tokens`."""
    return bool(_OVER_BUDGET.fullmatch(t.error))


@dataclass
class _Row:
    """Bookkeeping of one episode while it is played."""

    spec: EpisodeSpec
    tokens: list[int]
    mask: list[int]
    logprobs: list[float]
    stop: list[str]
    prompt_len: int
    turn_rewards: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    live: bool = True
    finished: bool = False
    truncated: bool = False
    error: str = ""
    turns: int = 0


def sampling_params(cfg: SamplingConfig, greedy: bool = False, turn_format: Any = None) -> SamplingParams:
    """SamplingParams from the config section, with the renderer's banned and end-of-turn ids."""
    banned = tuple(getattr(turn_format, "banned_ids", ()))
    stop_ids = tuple(getattr(turn_format, "stop_token_ids", ()))
    return SamplingParams(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, greedy=greedy,
                          banned=banned, stop_token_ids=stop_ids)


def prompt_args(info: dict[str, Any], turn_format: Any) -> tuple[str, list[dict] | None]:
    """(system text, tool specs) for `turn_format.prompt_ids` from an env's reset info.

    A renderer that renders tools through its chat template gets the instructions without tool
    descriptions plus the tool specs; the compact renderer gets the env's full system text."""
    if getattr(turn_format, "template_tools", False) and "tools" in info:
        return str(info.get("instructions", "")), list(info["tools"])
    return str(info.get("system", "")), None


def play_micro_batch(
    generator: TurnGenerator,
    turn_format: Any,
    envs: Sequence[Any],
    specs: Sequence[EpisodeSpec],
    sampling: SamplingConfig,
    policy_version: int,
    greedy: bool = False,
) -> list[Trajectory]:
    """Play `specs` (one env instance each, reused across calls) to the end; returns trajectories in spec order.

    `generator` must hold the weights of `policy_version`; it is prefilled with this micro-batch.
    """
    rows = [_reset(env, spec, turn_format) for env, spec in zip(envs, specs)]
    budget = sampling.max_episode_tokens
    prompts = [r.tokens for r in rows]
    for i, r in enumerate(rows):
        if len(r.tokens) >= budget:  # before any compute: never prefilled, never recorded at full length
            why = OVER_BUDGET_ERROR.format(tokens=len(r.tokens), budget=budget)
            r.live, r.truncated, r.error = False, True, r.error or why
            prompts[i] = r.tokens[:1]  # a placeholder row (never active, so never run by the hf backend)
            r.tokens, r.mask, r.logprobs, r.prompt_len = [], [], [], 0
    params = sampling_params(sampling, greedy, turn_format)
    generator.prefill(prompts, [s.sample_key for s in specs], params)
    turn = 0
    while any(r.live for r in rows):
        active = [r.live for r in rows]
        max_new = [max(1, min(sampling.max_new_tokens, budget - len(r.tokens))) for r in rows]
        stops = [r.stop for r in rows]
        results = generator.generate_turn(active, [turn] * len(rows), max_new, stops, turn_format.decode)
        for i, (r, env, res) in enumerate(zip(rows, envs, results)):
            if not r.live:
                continue
            r.tokens += res.tokens
            r.mask += [1] * len(res.tokens)
            r.logprobs += res.logprobs
            r.turns += 1
            obs = _step(env, r, turn_format.decode(res.tokens))
            if not r.live:
                continue
            obs_ids = turn_format.observation_ids(obs, res.tokens)
            if len(r.tokens) + len(obs_ids) >= budget:
                r.live, r.truncated = False, True
                r.info["budget_exhausted"] = True
                continue
            r.tokens += obs_ids
            r.mask += [0] * len(obs_ids)
            r.logprobs += [0.0] * len(obs_ids)
            generator.append(i, obs_ids)
        turn += 1
    return [_trajectory(r, policy_version) for r in rows]


def _reset(env: Any, spec: EpisodeSpec, turn_format: Any) -> _Row:
    """Reset the env with the spec's seed and render the prompt."""
    try:
        obs, info = env.reset(seed=spec.env_seed)
        system, tools = prompt_args(info, turn_format)
        ids = turn_format.prompt_ids(system, obs, tools)
        return _Row(spec, list(ids), [0] * len(ids), [0.0] * len(ids), list(info.get("stop", ())), len(ids))
    except ToolTimeout:
        raise  # a fault (a tool or a remote env past its time limit): the pool retries the whole micro-batch
    except Exception as e:  # an env that cannot reset: the episode is failed, not the micro-batch
        log.warning("env reset failed for episode %d: %r", spec.index, e)
        ids = turn_format.prompt_ids("", "")
        row = _Row(spec, list(ids), [0] * len(ids), [0.0] * len(ids), [], len(ids))
        row.live, row.truncated, row.error = False, True, f"reset raised {type(e).__name__}: {e}"
        return row


def _step(env: Any, r: _Row, text: str) -> str:
    """Hand one turn's text to the env; updates the row; returns the observation."""
    try:
        obs, reward, terminated, truncated, info = env.step(text)
    except ToolTimeout:
        raise  # a fault: the pool retries the whole micro-batch (see the module docstring)
    except Exception as e:
        log.warning("env step raised in episode %d: %r", r.spec.index, e)
        r.live, r.truncated, r.error = False, True, f"step raised {type(e).__name__}: {e}"
        r.turn_rewards.append(0.0)
        return ""
    r.turn_rewards.append(float(reward))
    r.info = dict(info)
    if terminated or truncated:
        r.live, r.finished, r.truncated = False, bool(terminated), bool(truncated and not terminated)
    return obs if isinstance(obs, str) else str(obs)


def _trajectory(r: _Row, version: int) -> Trajectory:
    """The record of a finished row."""
    reward = math.fsum(r.turn_rewards)
    info = r.info
    return Trajectory.build(
        spec=r.spec, policy_version=version, tokens=r.tokens, action_mask=r.mask, behavior_logprobs=r.logprobs,
        reward=reward, turn_rewards=r.turn_rewards, num_turns=r.turns, finished=r.finished, truncated=r.truncated,
        tool_calls=int(info.get("tool_calls", 0)), tool_errors=int(info.get("tool_errors", 0)),
        success=bool(info.get("success", False)) and not r.error, malformed_turns=int(info.get("malformed", 0)),
        prompt_len=r.prompt_len, error=r.error,
    )
