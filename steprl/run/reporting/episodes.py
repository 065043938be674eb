"""Episodes as a person reads them: a trajectory cut into task, agent turns and environment replies, and which
episodes of a step to show (a seeded sample for the loggers; best, median and worst for the report)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from steprl.rollout.seeding import derive
from steprl.rollout.trajectory import Trajectory
from steprl.run.reporting.trackers.base import EpisodeRow

Decode = Callable[[list[int]], str]


@dataclass(frozen=True)
class Segment:
    """A run of tokens of one side: `agent` (the policy's own tokens: tool calls and answers) or `env` (the task
    prompt first, then tool results and other observations)."""

    role: str
    text: str


def segments(t: Trajectory, decode: Decode) -> list[Segment]:
    """The trajectory's tokens split where `action_mask` changes, each run decoded."""
    out, start, mask = [], 0, t.action_mask
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            out.append(Segment("agent" if mask[start] else "env", decode(list(t.tokens[start:i]))))
            start = i
    return out


def episode_row(t: Trajectory, decode: Decode) -> EpisodeRow:
    """The table row of one episode: its first env segment is the task, the rest the transcript."""
    segs = segments(t, decode)
    task = segs[0].text.strip() if segs and segs[0].role == "env" else ""
    body = segs[1:] if task else segs
    transcript = "\n".join(f"{s.role}: {s.text.strip()}" for s in body)
    if t.error:
        transcript += f"\nerror: {t.error}"
    return EpisodeRow(t.spec.index, task, transcript, float(t.reward), bool(t.success), t.tool_calls, t.digest)


def sample_indices(n: int, k: int, seed: int, stage: str, step: int) -> list[int]:
    """k of n positions, chosen by derive(seed, 'log-episodes/<stage>', step, i): the same on every resume."""
    ranked = sorted(range(n), key=lambda i: derive(seed, f"log-episodes/{stage}", step, i))
    return sorted(ranked[:k])


def sampled_rows(trajs: Sequence[Trajectory], k: int, seed: int, stage: str, step: int,
                 decode: Decode) -> list[EpisodeRow]:
    """The rows of the step's seeded sample, in episode-index order."""
    ordered = sorted(trajs, key=lambda t: t.spec.index)
    return [episode_row(ordered[i], decode) for i in sample_indices(len(ordered), k, seed, stage, step)]


def best_median_worst(trajs: Sequence[Trajectory]) -> list[tuple[str, Trajectory]]:
    """('best', ...), ('median', ...), ('worst', ...) by reward (ties: the lower episode index), distinct episodes."""
    ordered = sorted(trajs, key=lambda t: (-t.reward, t.spec.index))
    if not ordered:
        return []
    picks = [("best", 0), ("median", len(ordered) // 2), ("worst", len(ordered) - 1)]
    seen, out = set(), []
    for label, i in picks:
        if i not in seen:
            seen.add(i)
            out.append((label, ordered[i]))
    return out
