"""TensorBoard: scalars per `<stage>/<metric>`, held-out points, episode tables as Markdown text, the config as
text. Written to `<run>/tensorboard/`; a resume appends to the same directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steprl.run.reporting.trackers.base import EpisodeRow, EvalPoint
from steprl.run.reporting.trackers.tables import markdown_table


class TensorBoardTracker:
    """A `torch.utils.tensorboard.SummaryWriter` on `<run>/tensorboard/` (needs the `tensorboard` extra)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, project: str, run_name: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = run_dir / "tensorboard"
        fresh = not self.dir.exists()
        self.writer = SummaryWriter(str(self.dir))
        if fresh:  # the config once: a resume's config.yaml differences are in the run directory
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=1, sort_keys=True) + "\n```", 0)

    def log_metrics(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        """One scalar per metric at `step`."""
        for k, v in metrics.items():
            self.writer.add_scalar(f"{stage}/{k}", v, step)

    def log_eval(self, point: EvalPoint) -> None:
        """Success and its interval bounds as scalars at the point's step."""
        for k, v in point.values().items():
            self.writer.add_scalar(k, v, point.step)

    def log_episodes(self, stage: str, step: int, rows: list[EpisodeRow]) -> None:
        """The rows as one Markdown table."""
        self.writer.add_text(f"{stage}/episodes", markdown_table(rows), step)

    def close(self) -> None:
        """Flush the event file."""
        self.writer.close()
