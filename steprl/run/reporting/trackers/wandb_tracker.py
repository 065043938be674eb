"""Weights & Biases: one W&B run per steprl run, its id kept in `<run>/trackers.json` so a resume continues it.

Offline with WANDB_MODE=offline (then `wandb sync <run>/wandb/offline-run-*` uploads it later, as one run). Each
stage's metrics have their own x-axis (`<stage>/step`, via `define_metric`), so warm-up, RL and distillation steps
never collide on W&B's single monotonic `_step`.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from steprl.run.reporting.trackers.base import EpisodeRow, EvalPoint
from steprl.run.reporting.trackers.identity import read_identity, write_identity


class WandbTracker:
    """`wandb.init(id=..., resume="allow", dir=<run>)`; episode tables as `wandb.Table`."""

    name = "wandb"

    def __init__(self, run_dir: Path, project: str, run_name: str, config: dict[str, Any]) -> None:
        import wandb

        self._wandb = wandb
        known = read_identity(run_dir, self.name)
        run_id = known.get("id") or secrets.token_hex(4)  # W&B ids: 8 characters of [a-z0-9]
        if not known:
            write_identity(run_dir, self.name, {"id": run_id, "project": project})
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True)
        self.run = wandb.init(project=known.get("project", project), name=run_name, id=run_id, resume="allow",
                              dir=str(run_dir), config=None if known else config, settings=settings,
                              reinit="create_new")
        if known:  # a resume may have changed the config (rl.steps extended): W&B keeps the newest values
            self.run.config.update(config, allow_val_change=True)
        self._stages: set[str] = set()

    def _axis(self, stage: str) -> None:
        """`<stage>/*` plotted against `<stage>/step` (declared once per stage per session)."""
        if stage not in self._stages:
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
            self._stages.add(stage)

    def log_metrics(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        """One W&B history row: the stage's metrics and its step."""
        self._axis(stage)
        self.run.log({**{f"{stage}/{k}": v for k, v in metrics.items()}, f"{stage}/step": step})

    def log_eval(self, point: EvalPoint) -> None:
        """Success and its interval bounds, on the stage's axis."""
        self._axis(point.stage)
        self.run.log({**point.values(), f"{point.stage}/step": point.step})

    def log_episodes(self, stage: str, step: int, rows: list[EpisodeRow]) -> None:
        """A `wandb.Table` of the rows under `<stage>/episodes`."""
        self._axis(stage)
        table = self._wandb.Table(columns=list(EpisodeRow.COLUMNS), data=[r.cells() for r in rows])
        self.run.log({f"{stage}/episodes": table, f"{stage}/step": step})

    def close(self) -> None:
        """Finish the W&B run (offline: its files are complete under <run>/wandb/)."""
        self.run.finish()
