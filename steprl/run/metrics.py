"""Per-step metrics: one JSON line per step in metrics.jsonl, optional TensorBoard, PNG plots.

Plots (matplotlib, Agg backend) are regenerated from metrics.jsonl at every checkpoint:
reward and success, KL and entropy, grad norm and guard events, throughput.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from steprl.errors import SteprlError

log = logging.getLogger(__name__)

PLOTS = {
    "reward.png": ("reward and success", ["reward_mean", "success_rate", "eval/success"]),
    "kl_entropy.png": ("KL and entropy", ["kl", "entropy", "logprob_gap"]),
    "grad_guards.png": (
        "grad norm and guard events",
        ["grad_norm", "guard/nonfinite", "guard/spike_loss", "guard/spike_grad", "guard/rollbacks"],
    ),
    "throughput.png": ("throughput", ["tokens_per_s", "step_time_s"]),
}


class MetricsError(SteprlError):
    """metrics.jsonl could not be written (disk full, read-only file system); names the file and the cause."""


class MetricsLogger:
    """Appends metrics to `<run>/metrics.jsonl` (and TensorBoard when installed); draws plots on demand.

    Opening cuts the file back to its last complete line (a crash mid-write leaves a torn one), so a
    new row never lands on a fragment. Only writers (train, resume, distill, under the run's lock) open one.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        cut_torn_tail(self.path)
        self.plot_dir = Path(run_dir) / "plots"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:
                self._tb = None

    def log(self, step: int, stage: str, metrics: dict[str, Any]) -> None:
        """Append one line {"step", "stage", ...metrics}; flushed and fsynced so a crash loses nothing logged."""
        row = {"step": step, "stage": stage, **{k: _clean(v) for k, v in metrics.items()}}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a torn last line is ignored by read_metrics; the step's checkpoint was not written
            raise MetricsError(f"could not write {self.path} ({e.strerror or e}); the newest complete checkpoint is "
                               f"intact: free space, then `steprl resume {self.path.parent}`") from None
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(f"{stage}/{k}", v, step)

    def truncate_after(self, step: int, stage: str) -> None:
        """Drop rows of `stage` beyond `step` (resume after a crash re-logs those steps)."""
        rows = read_metrics(self.path)
        keep = [r for r in rows if not (r.get("stage") == stage and r.get("step", -1) > step)]
        if len(keep) != len(rows):
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
            os.replace(tmp, self.path)

    def plot(self) -> list[Path]:
        """Redraw plots/*.png from metrics.jsonl; returns the files written."""
        return plot_metrics(read_metrics(self.path), self.plot_dir)

    def close(self) -> None:
        """Flush TensorBoard."""
        if self._tb is not None:
            self._tb.close()


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


def plot_metrics(rows: Iterable[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per panel of PLOTS, x = RL step; metrics missing from the rows are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("stage") in ("rl", "distill")]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (title, keys) in PLOTS.items():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        drawn = False
        for stage in ("rl", "distill"):
            for k in keys:
                pts = [
                    (r["step"], r[k]) for r in rows if r.get("stage") == stage and isinstance(r.get(k), (int, float))
                ]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, marker="." if len(pts) < 50 else None, label=f"{stage}:{k}" if stage != "rl" else k)
                    drawn = True
        ax.set_title(title)
        ax.set_xlabel("step")
        if drawn:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written
