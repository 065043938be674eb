"""What `steprl report` shows of one run directory, read from its files (nothing is recomputed or replayed):
metrics.jsonl, evals.jsonl, summary.json, the rollout records, machine.json, topology.json, config.yaml."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steprl.errors import SteprlError
from steprl.rollout.store import RecordError, read_file
from steprl.run.files.checkpoint import list_checkpoints
from steprl.run.reporting.episodes import Decode, Segment, best_median_worst, segments
from steprl.run.reporting.metrics import EVALS, read_evals, read_metrics

MAX_STEPS_SHOWN = 100
"""The episode browser shows at most this many steps (evenly spaced, the last one always)."""


@dataclass(frozen=True)
class Episode:
    """One episode of the browser: which one, why shown (best, median, worst), its segments and outcome."""

    label: str
    index: int
    reward: float
    success: bool
    tool_calls: int
    digest: str
    segments: tuple[Segment, ...]
    error: str


@dataclass(frozen=True)
class StepEpisodes:
    """The shown episodes of one training step, with the step's mean reward."""

    step: int
    reward_mean: float
    episodes: tuple[Episode, ...]


@dataclass(frozen=True)
class RunRecord:
    """One run directory as the report reads it; `distill` is its distill/ sub-run when there is one."""

    name: str
    path: Path
    rows: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    summary: dict[str, Any]
    steps: list[StepEpisodes]
    machine: dict[str, Any]
    topology: dict[str, Any]
    config_text: str
    distill: RunRecord | None = None


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_decoder(path: Path) -> Decode | None:
    """The run's turn-format decoder, from the tokenizer in its newest checkpoint (None without checkpoints)."""
    from steprl.agents.chat import make_turn_format
    from steprl.agents.tokenizer import load_tokenizer

    for _, ckpt in reversed(list_checkpoints(path / "checkpoints")):
        if (ckpt / "model").is_dir():
            return make_turn_format(load_tokenizer(str(ckpt / "model"))).decode
    return None


def shown_steps(steps: list[int], limit: int = MAX_STEPS_SHOWN) -> list[int]:
    """At most `limit` of the recorded steps, evenly spaced, always the first and the last."""
    if len(steps) <= limit:
        return steps
    picks = {steps[round(i * (len(steps) - 1) / (limit - 1))] for i in range(limit)}
    return sorted(picks)


def step_episodes(path: Path, decode: Decode | None) -> list[StepEpisodes]:
    """Best, median and worst episode of each shown step from rollouts/ (a damaged record is skipped)."""
    files = {int(f.name[5:11]): f for f in sorted((path / "rollouts").glob("step_*.jsonl.gz"))}
    if decode is None:
        return []
    out = []
    for step in shown_steps(sorted(files)):
        try:
            trajs = read_file(files[step])
        except RecordError:
            continue
        eps = tuple(Episode(label, t.spec.index, float(t.reward), bool(t.success), t.tool_calls, t.digest,
                            tuple(segments(t, decode)), t.error) for label, t in best_median_worst(trajs))
        out.append(StepEpisodes(step, sum(t.reward for t in trajs) / max(1, len(trajs)), eps))
    return out


def read_run(path: str | Path, with_distill: bool = True) -> RunRecord:
    """Everything the report shows of the run at `path` (SteprlError when it is not a run directory)."""
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise SteprlError(f"{path}: not a steprl run directory (no config.yaml); expected runs/<name>")
    path = path.resolve()
    sub = path / "distill"
    distill = read_run(sub, with_distill=False) if with_distill and (sub / "metrics.jsonl").is_file() else None
    return RunRecord(
        name=path.name if path.name != "distill" else f"{path.parent.name}/distill", path=path,
        rows=read_metrics(path / "metrics.jsonl"), evals=read_evals(path / EVALS), summary=_json(path / "summary.json"),
        steps=step_episodes(path, run_decoder(path)), machine=_json(path / "machine.json"),
        topology=_json(path / "topology.json"), config_text=(path / "config.yaml").read_text(), distill=distill)
