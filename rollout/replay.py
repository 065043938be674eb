"""Replay recorded episodes and prove them identical, token for token.

A step is re-planned from the config (pure), its micro-batches re-played with the weights
the step was played with, and each trajectory compared with the record by digest; a
difference is reported with the first differing token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steprl.rollout.plan import spec_micro_batches
from steprl.rollout.trajectory import DIGEST_VERSION, EpisodeSpec, Trajectory, compute_digest, digest_version_of


@dataclass(frozen=True)
class Mismatch:
    """One episode whose replay differs from its record."""

    index: int
    first_token: int | None
    detail: str
    env_changed: bool = False
    """The first difference is in what the env said (its prompt or an observation), not in a sampled token."""


ENV_CHANGED = ("the env gave other observations than when the run was recorded (first in episode {index}): it does "
               "not give the same episode for a seed, or its code, data or server changed; the replayed policy "
               "tokens up to there were identical")


def env_segment(t: Trajectory, pos: int) -> str | None:
    """Where token `pos` of `t` came from when the env wrote it: "the prompt" or "the observation after agent turn
    K"; None for an agent token (or past the end)."""
    if pos < t.prompt_len:
        return "the prompt (the env's reset observation)"
    if pos >= len(t.action_mask) or t.action_mask[pos]:
        return None
    mask = t.action_mask[t.prompt_len:pos]
    turns = sum(1 for i, m in enumerate(mask) if m and (i + 1 == len(mask) or not mask[i + 1]))
    return f"the observation after agent turn {turns}"


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first differing element (or the shorter length), None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(recorded: Sequence[Trajectory], replayed: Sequence[Trajectory]) -> list[Mismatch]:
    """Episodes whose replayed trajectory differs from the record (by digest), with the first bad token.

    A record of an older digest rule (a v1 rollout file) is compared by that rule: the replayed trajectory's
    digest is recomputed under it, so old runs still replay (without the log-prob check rule 2 adds).
    """
    by_index = {t.spec.index: t for t in replayed}
    out = []
    for r in sorted(recorded, key=lambda t: t.spec.index):
        p = by_index.get(r.spec.index)
        rule = digest_version_of(r) or DIGEST_VERSION
        if p is None:
            out.append(Mismatch(r.spec.index, None, "not replayed"))
        elif (p.digest if rule == DIGEST_VERSION else compute_digest(p, rule)) != r.digest:
            pos = first_difference(r.tokens, p.tokens)
            if pos is not None:
                got = p.tokens[pos] if pos < len(p.tokens) else "end"
                want = r.tokens[pos] if pos < len(r.tokens) else "end"
                detail = f"first differing token at position {pos}: recorded {want}, replayed {got}"
                seg = env_segment(r, pos) or env_segment(p, pos)
                if seg is not None:
                    out.append(Mismatch(r.spec.index, pos, f"{detail}, in {seg}: the env changed", True))
                    continue
            else:
                detail = f"same tokens, different outcome (reward {r.reward} vs {p.reward}, mask or turns differ)"
            out.append(Mismatch(r.spec.index, pos, detail))
    return out


def select_micro_batches(
    specs: Sequence[EpisodeSpec], micro_batch: int, episode: int | None
) -> list[list[EpisodeSpec]]:
    """All micro-batches of the step, or only the one holding `episode` (same membership as when recorded)."""
    mbs = spec_micro_batches(specs, micro_batch)
    if episode is None:
        return mbs
    hits = [mb for mb in mbs if any(s.index == episode for s in mb)]
    if not hits:
        raise ValueError(f"episode {episode} is not in this step (episodes 0-{len(specs) - 1})")
    return hits


def replay(
    worker: Any, specs: Sequence[EpisodeSpec], version: int, micro_batch: int, episode: int | None = None,
    max_retries: int = 0,
) -> list[Trajectory]:
    """Re-play the step's micro-batches (or the one holding `episode`) on an inline worker.

    Retried like the run's pool (`max_retries` = rollout.max_retries), so a tool timeout is a retry
    here too, and a micro-batch that timed out on every attempt replays as the same errored episodes.
    """
    from steprl.rollout.workers import play_retrying

    mbs = select_micro_batches(specs, micro_batch, episode)
    return [t for k in range(len(mbs)) for t in play_retrying(worker, mbs, k, version, max_retries)]


def transcript(t: Trajectory, decode: Any, color: bool = False) -> str:
    """A readable episode: environment text plain, the agent's own tokens marked (or coloured)."""
    parts, start = [], 0
    mask = t.action_mask
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            text = decode(list(t.tokens[start:i]))
            if mask[start]:
                parts.append(f"\x1b[1;32m{text}\x1b[0m" if color else f"[[agent: {text}]]")
            else:
                parts.append(text)
            start = i
    head = (f"episode {t.spec.index} (step {t.spec.step}, group {t.spec.group}, env seed {t.spec.env_seed}, "
            f"policy version {t.policy_version})")
    tail = (f"reward {t.reward}  success {t.success}  turns {t.num_turns}  tool calls {t.tool_calls}  "
            f"tool errors {t.tool_errors}  finished {t.finished}  truncated {t.truncated}"
            + (f"  error: {t.error}" if t.error else ""))
    return f"{head}\n{''.join(parts)}\n{tail}"
