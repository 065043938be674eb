"""Episodes given up on after a fault (tool timeouts), and the step metrics that count them.

A tool call past its time limit raises `ToolTimeout` (envs/tools.py): whether it happens depends on
the machine's load, so it must never reach the model as text. The pool retries the micro-batch; when
every attempt timed out, each of its episodes is recorded as errored: no tokens, reward 0, `error`
set. That record is a pure function of the spec and the retry count (so a replay that also times
out gives the same bits), and the learner masks it out (`trajectory_is_valid`).
"""

from __future__ import annotations

from collections.abc import Sequence

from steprl.envs.tools import ToolTimeout
from steprl.rollout.episode import is_over_budget
from steprl.rollout.trajectory import EpisodeSpec, Trajectory

TOOL_TIMEOUT_ERROR = "tool timeout after {attempts} attempts"


def is_tool_timeout(err: BaseException) -> bool:
    """True for a ToolTimeout, raised here or inside a Ray actor (where RayTaskError carries it as `cause`)."""
    return isinstance(err, ToolTimeout) or isinstance(getattr(err, "cause", None), ToolTimeout)


def timed_out_episodes(specs: Sequence[EpisodeSpec], version: int, attempts: int) -> list[Trajectory]:
    """Errored trajectories for a micro-batch whose every attempt hit a tool time limit."""
    why = TOOL_TIMEOUT_ERROR.format(attempts=attempts)
    return [
        Trajectory.build(spec=s, policy_version=version, tokens=(), action_mask=(), behavior_logprobs=(), reward=0.0,
                         turn_rewards=(), num_turns=0, finished=False, truncated=True, tool_calls=0, tool_errors=0,
                         success=False, malformed_turns=0, prompt_len=0, error=why)
        for s in specs
    ]


def fault_fields(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """Step metrics: `rollout/errored_episodes` (any error), `rollout/tool_timeouts` (given up on timeouts) and
    `rollout/over_budget` (prompt over max_episode_tokens, never played)."""
    prefix = TOOL_TIMEOUT_ERROR.split("{", 1)[0]
    return {
        "rollout/errored_episodes": float(sum(1 for t in trajs if t.error)),
        "rollout/tool_timeouts": float(sum(1 for t in trajs if t.error.startswith(prefix))),
        "rollout/over_budget": float(sum(1 for t in trajs if is_over_budget(t))),
    }
