"""trackio: local by default (its SQLite store under TRACKIO_DIR, or ~/.cache/huggingface/trackio); `trackio show`
opens the dashboard. The trackio run is named after the steprl run and resumed by that name."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

from steprl.run.reporting.trackers.base import EpisodeRow, EvalPoint
from steprl.run.reporting.trackers.identity import read_identity, write_identity

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _chatter_to_log():
    """trackio prints its status lines; they go to the debug log instead of between our progress bars."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    for line in buf.getvalue().splitlines():
        log.debug("trackio: %s", line)


class TrackioTracker:
    """`trackio.init(project, name, resume=...)`, no dashboard launched, no system-metrics thread."""

    name = "trackio"

    def __init__(self, run_dir: Path, project: str, run_name: str, config: dict[str, Any]) -> None:
        import trackio

        self._trackio = trackio
        known = read_identity(run_dir, self.name)
        with _chatter_to_log():
            self.run = trackio.init(project=known.get("project", project), name=known.get("name", run_name),
                                    config=config, resume="must" if known else "never", embed=False,
                                    auto_log_cpu=False, auto_log_gpu=False)
        if not known:
            write_identity(run_dir, self.name, {"project": project, "name": self.run.name})

    def log_metrics(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        """One row at `step`, keys `<stage>/<metric>`."""
        self.run.log({**{f"{stage}/{k}": v for k, v in metrics.items()}, f"{stage}/step": step}, step=step)

    def log_eval(self, point: EvalPoint) -> None:
        """Success and its interval bounds at the point's step."""
        self.run.log({**point.values(), f"{point.stage}/step": point.step}, step=point.step)

    def log_episodes(self, stage: str, step: int, rows: list[EpisodeRow]) -> None:
        """A `trackio.Table` under `<stage>/episodes`."""
        table = self._trackio.Table(columns=list(EpisodeRow.COLUMNS), data=[r.cells() for r in rows])
        self.run.log({f"{stage}/episodes": table}, step=step)

    def close(self) -> None:
        """Finish the run (its rows are in the local store); `trackio.finish` also clears trackio's current run,
        which its exit hook would otherwise finish a second time."""
        with _chatter_to_log():
            self._trackio.finish()
