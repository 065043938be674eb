"""Per-step metrics: one JSON line per step in metrics.jsonl, held-out points in evals.jsonl, the trackers of
`run.loggers` (steprl/run/reporting/trackers/) fed the same rows, and the PNG plots (steprl/run/reporting/plots.py).

Plots are regenerated from metrics.jsonl and evals.jsonl at the end of the run (or when it stops on an error),
and at a checkpoint or the end of a stage when PLOT_EVERY_S have passed since the last drawing: drawing four PNGs
costs ~2 s on 2 cores, which at every checkpoint was most of a short run's time (80% of the smoke preset's), while
a long run still sees its plots refreshed about once a minute.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from steprl.errors import SteprlError
from steprl.rollout.trajectory import Trajectory
from steprl.run.reporting.episodes import Decode, sampled_rows
from steprl.run.reporting.trackers.base import EvalPoint, Tracker, numeric

log = logging.getLogger(__name__)

PLOT_EVERY_S = 60.0
"""Seconds between plot redraws at checkpoints and stage ends (the end of a run always redraws)."""

EVALS = "evals.jsonl"
"""Held-out evaluations of a run directory, one JSON line each (an EvalPoint)."""


class MetricsError(SteprlError):
    """metrics.jsonl could not be written (disk full, read-only file system); names the file and the cause."""


@dataclass(frozen=True)
class EpisodeSampling:
    """Which episodes of each step the trackers get as a table: `count` of them, chosen by `seed`, decoded by
    `decode` (the policy's turn format)."""

    count: int
    seed: int
    decode: Decode


class MetricsLogger:
    """Appends metrics to `<run>/metrics.jsonl` and hands them to the run's trackers; draws plots on demand.

    Opening cuts the file back to its last complete line (a crash mid-write leaves a torn one), so a
    new row never lands on a fragment. Only writers (train, resume, distill, under the run's lock) open one.
    The trackers receive a step only when it is past the last one of its stage in metrics.jsonl at opening: the
    steps a resume plays again (those after the checkpoint) are the same data, already sent, so no backend
    sees a step twice. A tracker that fails is reported once and dropped; training goes on.
    """

    def __init__(self, run_dir: Path, trackers: Sequence[Tracker] = (), episodes: EpisodeSampling | None = None,
                 owns_trackers: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        cut_torn_tail(self.path)
        self.evals_path = Path(run_dir) / EVALS
        cut_torn_tail(self.evals_path)
        self.plot_dir = Path(run_dir) / "plots"
        self.trackers = list(trackers)
        self.episodes = episodes
        self._owns = owns_trackers
        self._sent: dict[str, int] = {}
        self._plotted_at = time.monotonic()  # a run's first plots wait PLOT_EVERY_S or its first stage's end
        for r in read_metrics(self.path):
            self._sent[r.get("stage", "")] = max(self._sent.get(r.get("stage", ""), -1), int(r.get("step", -1)))

    def child(self, run_dir: Path, decode: Decode | None = None) -> MetricsLogger:
        """A logger for a sub-run directory (distill/) feeding the same trackers, which it does not close."""
        sampling = None
        if self.episodes is not None:
            sampling = EpisodeSampling(self.episodes.count, self.episodes.seed, decode or self.episodes.decode)
        return MetricsLogger(run_dir, self.trackers, sampling, owns_trackers=False)

    def _is_new(self, stage: str, step: int) -> bool:
        return step > self._sent.get(stage, -1)

    def _fan_out(self, what: str, call: Any) -> None:
        """`call(tracker)` on every tracker; one that raises is logged with the cause and dropped."""
        for t in list(self.trackers):
            try:
                call(t)
            except Exception as e:  # noqa: BLE001 - a tracking backend's failure must not end a training run
                log.warning("logger %s failed to log %s (%s: %s); it is turned off for the rest of this run",
                            t.name, what, type(e).__name__, e)
                self.trackers.remove(t)

    def log(self, step: int, stage: str, metrics: dict[str, Any]) -> None:
        """Append one line {"step", "stage", ...metrics}; flushed and fsynced so a crash loses nothing logged."""
        row = {"step": step, "stage": stage, **{k: _clean(v) for k, v in metrics.items()}}
        _append(self.path, row)
        if self.trackers and self._is_new(stage, step):
            values = numeric({k: v for k, v in metrics.items()})
            self._fan_out(f"{stage} step {step}", lambda t: t.log_metrics(stage, step, values))

    def log_eval(self, point: EvalPoint) -> None:
        """Record a held-out evaluation in evals.jsonl and send it to the trackers, once per (policy, stage, step):
        a resume that measures the same weights again adds nothing."""
        key = (point.policy, point.stage, point.step)
        if any((e.get("policy"), e.get("stage"), e.get("step")) == key for e in read_evals(self.evals_path)):
            return
        _append(self.evals_path, asdict(point))
        self._fan_out(f"held-out {point.policy}", lambda t: t.log_eval(point))

    def log_episodes(self, stage: str, step: int, trajs: Sequence[Trajectory]) -> None:
        """The step's seeded sample of episodes as a table, to every tracker (nothing without trackers)."""
        sampling = self.episodes
        if not self.trackers or sampling is None or sampling.count <= 0 or not self._is_new(stage, step):
            return
        rows = sampled_rows(trajs, sampling.count, sampling.seed, stage, step, sampling.decode)
        self._fan_out(f"{stage} step {step}'s episodes", lambda t: t.log_episodes(stage, step, rows))

    def truncate_after(self, step: int, stage: str, same_data: bool = True) -> None:
        """Drop rows of `stage` beyond `step` (resume after a crash re-logs those steps).

        `same_data=False` when the steps after `step` will be other data (distillation restarted for a new
        teacher): the trackers then receive them again."""
        if not same_data:
            self._sent[stage] = min(self._sent.get(stage, -1), step)
        rows = read_metrics(self.path)
        keep = [r for r in rows if not (r.get("stage") == stage and r.get("step", -1) > step)]
        if len(keep) != len(rows):
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
            os.replace(tmp, self.path)

    def plot(self) -> list[Path]:
        """Redraw plots/*.png from metrics.jsonl and evals.jsonl; returns the files written."""
        from steprl.run.reporting.plots import write_pngs

        self._plotted_at = time.monotonic()
        return write_pngs(read_metrics(self.path), read_evals(self.evals_path), self.plot_dir)

    def plot_if_due(self) -> list[Path]:
        """Redraw the plots if PLOT_EVERY_S have passed since the last drawing (checkpoints, stage ends); the files
        written, none when not due. Plots are views of metrics.jsonl, not run data: when they refresh does not
        touch determinism."""
        if time.monotonic() - self._plotted_at < PLOT_EVERY_S:
            return []
        return self.plot()

    def close(self) -> None:
        """Finish the trackers this logger owns (each backend flushes; a resume continues the same runs)."""
        if self._owns:
            self._fan_out("the end of the run", lambda t: t.close())
            self.trackers = []


def _append(path: Path, row: dict[str, Any]) -> None:
    """One JSON line, flushed and fsynced; a write failure is a MetricsError naming the file."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # a torn last line is ignored by read_metrics; the step's checkpoint was not written
        raise MetricsError(f"could not write {path} ({e.strerror or e}); the newest complete checkpoint is "
                           f"intact: free space, then `steprl resume {path.parent}`") from None


def read_evals(path: Path) -> list[dict[str, Any]]:
    """All held-out points of an evals.jsonl (none when the run has no such file)."""
    return read_metrics(path)


def cut_torn_tail(path: Path) -> int:
    """Truncate `path` after its last newline; returns the bytes dropped (0 when the file is whole or absent)."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            pos, tail = size, b""
            while pos > 0 and b"\n" not in tail:
                step = min(pos, 1 << 16)
                pos -= step
                f.seek(pos)
                tail = f.read(step) + tail
            keep = pos + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
            if keep == size:
                return 0
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    except FileNotFoundError:
        return 0
    log.warning("%s: cut a torn last line (%d bytes) left by an interrupted write", path, size - keep)
    return size - keep


def _clean(v: Any) -> Any:
    """JSON-safe value: non-finite floats become strings ('nan', 'inf')."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl (a torn last line from a crash is ignored)."""
    if not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: ignoring a torn line", path)
    return rows


MOSTLY_SKIPPED = 0.5
"""A stage whose guards skipped more than this fraction of its steps is reported as mostly skipped."""


def skip_fields(path: Path, stage: str, steps: int) -> dict[str, Any]:
    """`skipped_steps` (steps of `stage` in 0..steps-1 whose update the guards skipped, from metrics.jsonl) and
    `mostly_skipped` (more than MOSTLY_SKIPPED of `steps`), for the stage's summary.

    Read from the file, not counted in the loop, so a resumed run counts the steps of its earlier sessions
    too (resume cuts the rows it re-runs; the last row of a step wins).
    """
    last = {r["step"]: r for r in read_metrics(path) if r.get("stage") == stage and 0 <= r.get("step", -1) < steps}
    n = sum(1 for r in last.values() if _as_float(r.get("skipped")) > 0)
    return {"skipped_steps": n, "mostly_skipped": steps > 0 and n > MOSTLY_SKIPPED * steps}


def skip_warnings(stages: dict[str, dict[str, Any]]) -> tuple[list[str], bool]:
    """(one warning line per stage that skipped most of its steps, whether a stage skipped every one of them).

    `stages` is summary.json's "stages"; a stage without `skipped_steps` (warmup, eval) is not a step loop.
    """
    lines, failed = [], False
    for name, res in stages.items():
        n, total = res.get("skipped_steps"), res.get("steps")
        if not res.get("mostly_skipped") or not isinstance(n, int) or not isinstance(total, int) or total <= 0:
            continue
        every = n >= total
        failed |= every
        lines.append(f"{'error' if every else 'warning'}: {name}: {n} of {total} steps skipped by the guards "
                     f"(non-finite or spiking loss/gradients; see guard/* in metrics.jsonl): "
                     + ("nothing was trained" if every else "most of the run did not train"))
    return lines, failed


def _as_float(v: Any) -> float:
    """A metrics value as a float (0.0 when absent or not a number)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0
