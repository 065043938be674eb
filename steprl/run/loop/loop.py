"""The one step loop of every training stage: play -> update -> record -> log -> checkpoint -> stop.

A stage describes its steps with a `Steps` object (what to play, how to update, what a checkpoint
holds); `run_steps` does the rest the same way for RL and distillation: timing, the rollout record
of each step, heap trimming, the step's metrics row and sampled episodes (to the trackers), the progress
bar, the checkpoint cadence and the clean stop after Ctrl-C.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from steprl.errors import Interrupted
from steprl.rollout.faults import fault_fields
from steprl.rollout.store import steps_digest, write_step
from steprl.rollout.trajectory import Trajectory
from steprl.run.machine.memory import release_free_memory
from steprl.run.reporting.metrics import MetricsLogger

TRIM_EVERY = 10
"""Steps between heap trims: trimming every step cost the RL stage 18% (page faults after each trim)."""


class Steps(Protocol):
    """What a training stage supplies to `run_steps`."""

    def play(self, step: int) -> list[Trajectory]:
        """Step `step`'s trajectories: a pure function of (config, seed, step, weights)."""

    def update(self, step: int, trajs: list[Trajectory]) -> dict[str, Any]:
        """Train on them; returns the step's learner metrics."""

    def step_fields(self, step: int, trajs: list[Trajectory]) -> dict[str, Any]:
        """Stage-specific metric fields, written over the common ones."""

    def postfix(self, stats: dict[str, Any]) -> dict[str, str]:
        """What the progress bar shows after a step."""

    def save(self, next_step: int) -> None:
        """Checkpoint the state from which step `next_step` starts."""


@dataclass
class Loop:
    """Where and how long a stage's step loop runs."""

    stage: str
    start: int
    total: int
    checkpoint_every: int
    rollouts: Path
    metrics: MetricsLogger
    stop_hint: str
    """Completes 'stopped after step N of M; ...': how to continue."""


def run_steps(loop: Loop, steps: Steps, stop_requested: Any) -> dict[str, Any]:
    """Run steps `loop.start` .. `loop.total - 1`; returns the last step's metrics.

    `stop_requested()` is asked after each step: once true, the loop checkpoints and raises
    `Interrupted` (unless that was the last step).
    """
    bar = tqdm(range(loop.start, loop.total), initial=loop.start, total=loop.total, desc=loop.stage, unit="step",
               dynamic_ncols=True)
    stats: dict[str, Any] = {}
    for step in bar:
        t0 = time.perf_counter()
        trajs = steps.play(step)
        t_play = time.perf_counter() - t0
        stats = steps.update(step, trajs)
        write_step(loop.rollouts, step, trajs)
        if step % TRIM_EVERY == TRIM_EVERY - 1:
            release_free_memory()
        step_time = time.perf_counter() - t0
        gen = sum(t.num_action_tokens for t in trajs)
        stats.update(step_time_s=step_time, play_time_s=t_play, play_wait_s=t_play, tokens_per_s=gen / step_time,
                     generated_tokens=gen, step_digest=steps_digest(trajs),
                     policy_version=trajs[0].policy_version if trajs else step)
        stats.update(fault_fields(trajs))
        stats.update(steps.step_fields(step, trajs))
        loop.metrics.log(step, loop.stage, stats)
        loop.metrics.log_episodes(loop.stage, step, trajs)
        bar.set_postfix(**steps.postfix(stats), s=f"{step_time:.1f}")
        nxt = step + 1
        if nxt % loop.checkpoint_every == 0 or nxt == loop.total or stop_requested():
            steps.save(nxt)
        if stop_requested() and nxt < loop.total:  # asked again: a Ctrl-C during the save stops after it
            raise Interrupted(f"stopped after {loop.stage} step {nxt} of {loop.total}; {loop.stop_hint}")
    bar.close()
    return stats
