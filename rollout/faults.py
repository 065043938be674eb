"""A micro-batch that failed: counted and retried (`count_failure`), or given up on (tool timeouts), and the step
metrics that count them.

A tool call past its time limit raises `ToolTimeout` (envs/tools.py): whether it happens depends on
the machine's load, so it must never reach the model as text. The pool retries the micro-batch; when
every attempt timed out, each of its episodes is recorded as errored: no tokens, reward 0, `error`
set. That record is a pure function of the spec and the retry count (so a replay that also times
out gives the same bits), and the learner masks it out (`trajectory_is_valid`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from steprl.envs.tools import ToolTimeout
from steprl.rollout.episode import is_over_budget
from steprl.rollout.trajectory import EpisodeSpec, Trajectory

log = logging.getLogger(__name__)
TOOL_TIMEOUT_ERROR = "tool timeout after {attempts} attempts"


class RolloutError(RuntimeError):
    """A micro-batch could not be played within its retries; names the micro-batch and the cause."""


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


def count_failure(k: int, mbs: list[list[EpisodeSpec]], attempts: list[int], err: BaseException,
                  max_retries: int) -> bool:
    """Count a failed attempt of micro-batch k; False: play it again.

    Out of retries: True when the failure is a tool timeout (its episodes become errored, the step
    goes on), otherwise RolloutError naming the micro-batch and the cause.
    """
    attempts[k] += 1
    idx = (mbs[k][0].index, mbs[k][-1].index)
    why = describe_failure(err)
    log.warning("micro-batch %d (episodes %d-%d) failed (attempt %d): %s", k, *idx, attempts[k], why[:200])
    if attempts[k] <= max_retries:
        return False
    if is_tool_timeout(err):
        log.warning("micro-batch %d (episodes %d-%d): tool time limit hit on all %d attempts; its episodes are "
                    "recorded as errored and masked out of training", k, *idx, attempts[k])
        return True
    raise RolloutError(
        f"micro-batch {k} (episodes {idx[0]}-{idx[1]} of step {mbs[k][0].step}) failed {attempts[k]} times "
        f"(rollout.max_retries={max_retries}); last error: {why[:300]}"
    ) from None


def describe_failure(err: BaseException) -> str:
    """One line saying why a remote micro-batch failed: the worker's own exception, not Ray's task header."""
    cause = getattr(err, "cause", None)  # RayTaskError wraps the exception raised inside the actor
    if isinstance(cause, BaseException):
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[0] if text else ''}".rstrip(": ")
    name = type(err).__name__
    if name in ("ActorDiedError", "RayActorError", "WorkerCrashedError", "ActorUnavailableError"):
        return f"{name}: the worker process died (killed, out of memory or crashed)"
    text = str(err).strip().splitlines()
    return f"{name}: {text[0] if text else ''}".rstrip(": ")
