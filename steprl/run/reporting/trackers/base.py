"""What every tracker receives: the records and the `Tracker` protocol."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class EvalPoint:
    """One held-out evaluation: a policy's greedy success on the run's eval seeds with its 95% Wilson interval.

    `stage` and `step` place it on a training stage's x-axis: the warm-up policy is RL step 0, the RL policy
    RL step `rl.steps`, the student before and after distillation distill steps 0 and `distill.steps`.
    """

    policy: str
    stage: str
    step: int
    success: float
    ci_low: float
    ci_high: float
    reward_mean: float
    episodes: int

    @property
    def series(self) -> str:
        """The policy's name as a metric-key part (letters, digits, '_', '-', '.')."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.policy).strip("_") or "policy"

    def values(self) -> dict[str, float]:
        """The point as metric keys under `<stage>/heldout/<series>/`."""
        head = f"{self.stage}/heldout/{self.series}"
        return {f"{head}/success": self.success, f"{head}/success_ci_low": self.ci_low,
                f"{head}/success_ci_high": self.ci_high, f"{head}/reward_mean": self.reward_mean}


@dataclass(frozen=True)
class EpisodeRow:
    """One sampled episode of a training step, as a table row: the task, the transcript, what it earned."""

    index: int
    task: str
    transcript: str
    """Every segment on its own line, marked `agent:` (the policy's tokens, tool calls included) or `env:`
    (tool results and other observations)."""
    reward: float
    success: bool
    tool_calls: int
    digest: str

    COLUMNS = ("index", "task", "transcript", "reward", "success", "tool_calls", "digest")

    def cells(self) -> list[Any]:
        """The row in COLUMNS order."""
        return [self.index, self.task, self.transcript, self.reward, self.success, self.tool_calls, self.digest]


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row (booleans as 0/1); strings such as step_digest are left out."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = float(v)
    return out


class Tracker(Protocol):
    """One experiment-tracking backend. Built with the run's config (logged once); then fed in order."""

    name: str

    def log_metrics(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        """One step's numbers of `stage`, keyed `<stage>/<metric>` with `<stage>/step` as their x-axis."""

    def log_eval(self, point: EvalPoint) -> None:
        """One held-out evaluation as its own series (success and its interval)."""

    def log_episodes(self, stage: str, step: int, rows: list[EpisodeRow]) -> None:
        """A table of the step's sampled episodes."""

    def close(self) -> None:
        """Flush and finish the backend's run (a later resume continues it)."""
